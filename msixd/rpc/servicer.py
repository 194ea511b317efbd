"""msix.v1.MsixService: converts, delegates, and maps errors; nothing else."""

from __future__ import annotations

import functools
import itertools
from collections.abc import Callable
from typing import Any, TypeVar

import grpc
import structlog

from msixd.api.msix.v1 import msix_pb2 as pb
from msixd.api.msix.v1 import msix_pb2_grpc
from msixd.errors import MsixdError
from msixd.rpc import convert
from msixd.rpc.errors import status_code
from msixd.service.inventory import Inventory

log = structlog.get_logger(__name__)
_request_ids = itertools.count(1)

Handler = TypeVar("Handler", bound=Callable[..., Any])


def rpc(handler: Handler) -> Handler:
    """Bind request fields to the log context and turn errors into gRPC statuses, once.

    Expected errors (MsixdError) are logged as warnings with their code; anything
    else is a bug, logged with its traceback and reported as INTERNAL without it.
    """

    @functools.wraps(handler)
    def wrapper(self: Any, request: Any, context: grpc.ServicerContext) -> Any:
        fields = {"rpc": handler.__name__, "peer": context.peer(), "request_id": next(_request_ids)}
        if getattr(request, "bdf", ""):
            fields["bdf"] = request.bdf
        with structlog.contextvars.bound_contextvars(**fields):
            try:
                return handler(self, request, context)
            except MsixdError as err:
                code = status_code(err)
                log.warning("request failed", code=code.name, error=str(err))
                message = str(err)
            except Exception as err:  # noqa: BLE001 - the daemon must outlive any request
                code = grpc.StatusCode.INTERNAL
                log.exception("request crashed")
                message = f"internal error ({type(err).__name__}); see the msixd log"
            context.abort(code, message)

    return wrapper  # type: ignore[return-value]


class MsixServicer(msix_pb2_grpc.MsixServiceServicer):
    def __init__(self, inventory: Inventory) -> None:
        self._inventory = inventory

    @rpc
    def GetStatus(self, request: pb.GetStatusRequest, context: grpc.ServicerContext) -> pb.Status:
        return convert.status(self._inventory.status())

    @rpc
    def ListDevices(self, request: pb.ListDevicesRequest, context: grpc.ServicerContext) -> pb.ListDevicesResponse:
        devices = self._inventory.list_devices(request.all_devices, request.include_vectors)
        return pb.ListDevicesResponse(devices=[convert.device(d) for d in devices])

    @rpc
    def GetDevice(self, request: pb.GetDeviceRequest, context: grpc.ServicerContext) -> pb.Device:
        return convert.device(self._inventory.get_device(request.bdf))

    @rpc
    def ListDomains(self, request: pb.ListDomainsRequest, context: grpc.ServicerContext) -> pb.ListDomainsResponse:
        return pb.ListDomainsResponse(domains=[convert.domain(d) for d in self._inventory.list_domains()])
