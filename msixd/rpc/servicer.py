"""msix.v1.MsixService: converts, delegates, and maps errors; nothing else."""

from __future__ import annotations

import functools
import itertools
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import grpc
import structlog
from google.protobuf.message import Message

from msixd.api.msix.v1 import msix_pb2 as pb
from msixd.api.msix.v1 import msix_pb2_grpc
from msixd.errors import InvalidArgument, MsixdError
from msixd.rpc import convert
from msixd.rpc.access import Access, PermissionDenied
from msixd.rpc.errors import status_code
from msixd.rpc.metrics import Metrics
from msixd.service.services import Services

log = structlog.get_logger(__name__)
audit = structlog.get_logger("msixd.audit")
_request_ids = itertools.count(1)

Handler = TypeVar("Handler", bound=Callable[..., Any])


def required(request: Message, field: str) -> None:
    """A field declared optional only for its presence must be sent: proto3 sends no 0, so without
    presence a field left out (or misspelled by the client) would be taken as 0."""
    if not request.HasField(field):
        name = request.DESCRIPTOR.name
        raise InvalidArgument(f"{name}.{field} is required (a field left out or misspelled is never taken as 0)")


def rpc(handler: Handler) -> Handler:
    @functools.wraps(handler)
    def unary(self: MsixServicer, request: Any, context: grpc.ServicerContext) -> Any:
        with self._request(handler.__name__, request, context):
            return handler(self, request, context)

    return unary  # type: ignore[return-value]


def rpc_stream(handler: Handler) -> Handler:
    @functools.wraps(handler)
    def streaming(self: MsixServicer, request: Any, context: grpc.ServicerContext) -> Any:
        with self._request(handler.__name__, request, context):
            yield from handler(self, request, context)

    return streaming  # type: ignore[return-value]


class MsixServicer(msix_pb2_grpc.MsixServiceServicer):
    def __init__(self, services: Services, access: Access, metrics: Metrics | None = None) -> None:
        self._s = services
        self._access = access
        self._metrics = metrics

    @contextmanager
    def _request(self, name: str, request: Any, context: grpc.ServicerContext) -> Iterator[None]:
        """Identify and authorize the caller, bind request fields to the log context, and
        turn errors into gRPC statuses, once.

        Expected errors (MsixdError) are logged as warnings with their code; anything
        else is a bug, logged with its traceback and reported as INTERNAL without it.
        """
        fields: dict[str, object] = {"rpc": name, "request_id": next(_request_ids)}
        if getattr(request, "bdf", ""):
            fields["bdf"] = request.bdf
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        with structlog.contextvars.bound_contextvars(**fields):
            try:
                peer = self._access.identify(context)
                structlog.contextvars.bind_contextvars(peer=peer.describe())
                self._access.check(peer, name, request)
                yield
                return
            except PermissionDenied as err:
                code = status_code(err)
                log.warning("permission denied", uid=err.uid, pid=err.pid, error=str(err))
                message = str(err)
            except MsixdError as err:
                code = status_code(err)
                log.warning("request failed", code=code.name, error=str(err))
                message = str(err)
            except Exception as err:  # noqa: BLE001 - the daemon must outlive any request
                code = grpc.StatusCode.INTERNAL
                log.exception("request crashed")
                message = f"internal error ({type(err).__name__}); see the msixd log"
            finally:
                if self._metrics is not None:
                    self._metrics.observe(name, code.name, time.perf_counter() - started)
            context.abort(code, message)

    # Reading

    @rpc
    def GetStatus(self, request: pb.GetStatusRequest, context: grpc.ServicerContext) -> pb.Status:
        return convert.status(self._s.inventory.status())

    @rpc
    def Echo(self, request: pb.EchoRequest, context: grpc.ServicerContext) -> pb.EchoResponse:
        return pb.EchoResponse(payload=request.payload)

    @rpc
    def ListDevices(self, request: pb.ListDevicesRequest, context: grpc.ServicerContext) -> pb.ListDevicesResponse:
        devices = self._s.inventory.list_devices(request.all_devices, request.include_vectors)
        return pb.ListDevicesResponse(devices=[convert.device(d) for d in devices])

    @rpc
    def GetDevice(self, request: pb.GetDeviceRequest, context: grpc.ServicerContext) -> pb.Device:
        return convert.device(self._s.inventory.get_device(request.bdf))

    @rpc
    def ListDomains(self, request: pb.ListDomainsRequest, context: grpc.ServicerContext) -> pb.ListDomainsResponse:
        return pb.ListDomainsResponse(domains=[convert.domain(d) for d in self._s.inventory.list_domains()])

    @rpc_stream
    def Watch(self, request: pb.WatchRequest, context: grpc.ServicerContext) -> Iterator[pb.WatchSample]:
        required(request, "interval_ms")
        interval = request.interval_ms / 1000
        for sample in self._s.watcher.stream(request.bdf, interval, request.count, context.is_active):
            yield convert.sample(sample)

    # Changing (each change leaves one audit line)

    @rpc
    def Bind(self, request: pb.BindRequest, context: grpc.ServicerContext) -> pb.BindResponse:
        result = self._s.binding.bind(request.bdf)
        audit.info("bind", previous_driver=result.previous_driver, driver=result.driver, unchanged=result.unchanged)
        return convert.bound(result)

    @rpc
    def Release(self, request: pb.ReleaseRequest, context: grpc.ServicerContext) -> pb.ReleaseResponse:
        result = self._s.binding.release(request.bdf)
        audit.info("release", driver=result.driver, vectors_released=result.vectors_released)
        return convert.released(result)

    @rpc
    def Enable(self, request: pb.EnableRequest, context: grpc.ServicerContext) -> pb.EnableResponse:
        bdf = request.bdf
        path, before = self._s.owner.enable(bdf, request.vectors)
        audit.info("enable", vectors=request.vectors, vectors_before=before, path=path.value)
        return convert.enabled(path, before, self._s.inventory.get_device(bdf))

    @rpc
    def Disable(self, request: pb.DisableRequest, context: grpc.ServicerContext) -> pb.DisableResponse:
        bdf = request.bdf
        vector = request.vector if request.HasField("vector") else None
        released = self._s.owner.disable(bdf, vector)
        audit.info("disable", vector=vector, released=released)
        return pb.DisableResponse(released=released, device=convert.device(self._s.inventory.get_device(bdf)))

    @rpc
    def SetAffinity(self, request: pb.SetAffinityRequest, context: grpc.ServicerContext) -> pb.SetAffinityResponse:
        required(request, "vector")
        bdf = request.bdf
        placed = self._s.placement.set_affinity(bdf, request.vector, request.cpus, request.force, request.dry_run)
        if not request.dry_run:
            if self._metrics is not None:
                self._metrics.affinity_changes.inc()
            audit.info("affinity", vector=request.vector, irq=placed.irq, cpus=request.cpus, force=request.force,
                       effective=sorted(placed.effective_affinity), previous=sorted(placed.previous_affinity))
        return convert.placed(bdf, placed)

    @rpc
    def Spread(self, request: pb.SpreadRequest, context: grpc.ServicerContext) -> pb.SpreadResponse:
        cpus, plan = self._s.placement.spread(request.bdf, request.cpus, request.dry_run, request.force)
        if not request.dry_run:
            if self._metrics is not None:
                self._metrics.affinity_changes.inc(sum(1 for p in plan if not p.error))
            audit.info("spread", cpus=sorted(cpus), placements={p.vector: p.cpu for p in plan if not p.error})
        return convert.spread(cpus, plan, request.dry_run)

    @rpc
    def Trigger(self, request: pb.TriggerRequest, context: grpc.ServicerContext) -> pb.TriggerResponse:
        required(request, "vector")
        count = self._s.owner.trigger(request.bdf, request.vector)
        audit.info("trigger", vector=request.vector)
        return pb.TriggerResponse(eventfd_count=count)
