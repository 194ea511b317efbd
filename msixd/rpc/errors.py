"""The one table from domain errors to gRPC status codes.

No domain error is UNAVAILABLE: that is what gRPC itself reports when msixd
cannot be reached, and msixctl tells the user so. A VFIO group another process
holds is the system's state, not msixd's: FAILED_PRECONDITION, naming the holder.
"""

from __future__ import annotations

import grpc

from msixd.errors import (
    DeviceNotFound,
    FailedPrecondition,
    GroupHeld,
    InvalidArgument,
    KernelFormatError,
    LeaseNotFound,
    LeaseNotPermitted,
    MsixdError,
    ResourceExhausted,
    VectorNotFound,
)
from msixd.kernel.irq import AffinityRefused, AffinityRejected
from msixd.kernel.pcibind import BindError
from msixd.kernel.vfio import PartialAllocation, VfioBusy, VfioError, VfioNoDevice
from msixd.rpc.access import PermissionDenied
from msixd.rpc.limits import TooManyStreams

STATUS_CODES: dict[type[MsixdError], grpc.StatusCode] = {
    InvalidArgument: grpc.StatusCode.INVALID_ARGUMENT,
    DeviceNotFound: grpc.StatusCode.NOT_FOUND,
    VectorNotFound: grpc.StatusCode.NOT_FOUND,
    FailedPrecondition: grpc.StatusCode.FAILED_PRECONDITION,
    ResourceExhausted: grpc.StatusCode.RESOURCE_EXHAUSTED,
    GroupHeld: grpc.StatusCode.FAILED_PRECONDITION,
    AffinityRefused: grpc.StatusCode.FAILED_PRECONDITION,
    AffinityRejected: grpc.StatusCode.FAILED_PRECONDITION,
    BindError: grpc.StatusCode.FAILED_PRECONDITION,
    PartialAllocation: grpc.StatusCode.RESOURCE_EXHAUSTED,
    VfioBusy: grpc.StatusCode.FAILED_PRECONDITION,
    VfioNoDevice: grpc.StatusCode.NOT_FOUND,
    VfioError: grpc.StatusCode.FAILED_PRECONDITION,
    KernelFormatError: grpc.StatusCode.INTERNAL,
    PermissionDenied: grpc.StatusCode.PERMISSION_DENIED,
    LeaseNotPermitted: grpc.StatusCode.PERMISSION_DENIED,
    LeaseNotFound: grpc.StatusCode.NOT_FOUND,
    TooManyStreams: grpc.StatusCode.RESOURCE_EXHAUSTED,
}


def status_code(err: MsixdError) -> grpc.StatusCode:
    """The code of the nearest class in err's MRO that the table names."""
    for cls in type(err).__mro__:
        if cls in STATUS_CODES:
            return STATUS_CODES[cls]
    return grpc.StatusCode.INTERNAL
