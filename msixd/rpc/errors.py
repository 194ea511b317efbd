"""The one table from domain errors to gRPC status codes."""

from __future__ import annotations

import grpc

from msixd.errors import DeviceNotFound, InvalidArgument, KernelFormatError, MsixdError

STATUS_CODES: dict[type[MsixdError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    DeviceNotFound: grpc.StatusCode.NOT_FOUND,
    KernelFormatError: grpc.StatusCode.INTERNAL,
}


def status_code(err: MsixdError) -> grpc.StatusCode:
    """The code of the nearest class in err's MRO that the table names."""
    for cls in type(err).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return grpc.StatusCode.INTERNAL
