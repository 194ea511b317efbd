"""msix.v1.MsixService: converts, delegates, and maps errors; nothing else.

Who may call what was decided before a handler runs (msixd/rpc/guard.py);
the caller is current_peer().
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import grpc
import structlog
from google.protobuf.message import Message

from msixd.api.msix.v1 import msix_pb2 as pb
from msixd.api.msix.v1 import msix_pb2_grpc
from msixd.errors import InvalidArgument, InvalidBdf, MsixdError
from msixd.kernel import pci
from msixd.rpc import convert
from msixd.rpc import policy as convert_policy
from msixd.rpc.errors import status_code
from msixd.rpc.guard import current_peer
from msixd.rpc.limits import StreamLimiter
from msixd.rpc.logbudget import LogBudget
from msixd.rpc.metrics import Metrics
from msixd.service.services import Services

log = structlog.get_logger(__name__)
audit = structlog.get_logger("msixd.audit")

Request = TypeVar("Request")
Response = TypeVar("Response")
_SHOWN_TEXT = 40  # a request's text shown in the log at most, before it is known to be valid


def _log_bdf(text: str) -> dict[str, str]:
    """The request's BDF for the log: canonical when it is one, else a short, marked excerpt."""
    if not text:
        return {}
    try:
        return {"bdf": pci.parse_bdf(text)}
    except InvalidBdf:
        return {"bad_bdf": text[:_SHOWN_TEXT] + ("..." if len(text) > _SHOWN_TEXT else "")}


def required(request: Message, field: str) -> None:
    """A field declared optional only for its presence must be sent: proto3 sends no 0, so without
    presence a field left out (or misspelled by the client) would be taken as 0."""
    if not request.HasField(field):
        name = request.DESCRIPTOR.name
        raise InvalidArgument(f"{name}.{field} is required (a field left out or misspelled is never taken as 0)")


def rpc(
    handler: Callable[[MsixServicer, Request, grpc.ServicerContext], Response],
) -> Callable[[MsixServicer, Request, grpc.ServicerContext], Response]:
    @functools.wraps(handler)
    def unary(self: MsixServicer, request: Request, context: grpc.ServicerContext) -> Response:
        with self._tracked(handler.__name__), self._request(handler.__name__, request, context):
            return handler(self, request, context)

    return unary


def rpc_stream(
    handler: Callable[[MsixServicer, Request, grpc.ServicerContext], Iterator[Response]],
) -> Callable[[MsixServicer, Request, grpc.ServicerContext], Iterator[Response]]:
    @functools.wraps(handler)
    def streaming(self: MsixServicer, request: Request, context: grpc.ServicerContext) -> Iterator[Response]:
        with self._request(handler.__name__, request, context):
            yield from handler(self, request, context)

    return streaming


class MsixServicer(msix_pb2_grpc.MsixServiceServicer):
    def __init__(self, services: Services, metrics: Metrics | None = None,
                 streams: StreamLimiter | None = None) -> None:
        self._s = services
        self._metrics = metrics
        self._streams = streams or StreamLimiter(per_caller=4)
        # Set when msixd stops: endless streams end at once, finite ones may finish within the grace.
        self.stopping = threading.Event()
        self._endless: set[threading.Event] = set()
        # A caller can provoke failures at will: at most so many warning lines each.
        self._failures = LogBudget(lines=20, seconds=10.0)
        self._in_flight: dict[int, tuple[str, float]] = {}  # unary calls running: id -> (rpc, since)
        self._in_flight_lock = threading.Lock()

    def end_streams(self) -> None:
        """msixd is stopping: end every endless stream now (a finite one may finish)."""
        self.stopping.set()
        with self._in_flight_lock:
            for ended in self._endless:
                ended.set()

    def longest_call(self) -> tuple[str, float]:
        """The unary call that has run longest now, and for how many seconds ("", 0 when none)."""
        now = time.monotonic()
        with self._in_flight_lock:
            calls = list(self._in_flight.values())
        if not calls:
            return "", 0.0
        name, since = min(calls, key=lambda call: call[1])
        return name, now - since

    @contextmanager
    def _tracked(self, name: str) -> Iterator[None]:
        key = threading.get_ident()
        with self._in_flight_lock:
            self._in_flight[key] = (name, time.monotonic())
        try:
            yield
        finally:
            with self._in_flight_lock:
                self._in_flight.pop(key, None)

    @contextmanager
    def _request(self, name: str, request: Any, context: grpc.ServicerContext) -> Iterator[None]:
        """Bind the request's fields to the log context and turn errors into gRPC statuses, once.

        Expected errors (MsixdError) are logged as warnings with their code; anything
        else is a bug, logged with its traceback and reported as INTERNAL without it.
        """
        started = time.perf_counter()
        code = grpc.StatusCode.OK
        with structlog.contextvars.bound_contextvars(**_log_bdf(getattr(request, "bdf", ""))):
            try:
                yield
                return
            except MsixdError as err:
                code = status_code(err)
                suppressed = self._failures.take(current_peer().key)
                if suppressed is not None:
                    log.warning("request failed", code=code.name, error=str(err), suppressed_before=suppressed or None)
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
        return convert.devices(self._s.inventory.list_devices(request.all_devices, request.include_vectors))

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
        ended = threading.Event()
        context.add_callback(ended.set)  # cancelled, or the server is stopping: stop waiting at once
        if request.count == 0:  # endless: msixd's stop ends it at once (end_streams)
            with self._in_flight_lock:
                self._endless.add(ended)
            if self.stopping.is_set():
                ended.set()

        def wait(seconds: float) -> bool:
            return not ended.wait(seconds)

        try:
            with self._streams.hold(current_peer()):
                for sample in self._s.watcher.stream(request.bdf, interval, request.count, wait):
                    yield convert.sample(sample)
        finally:
            with self._in_flight_lock:
                self._endless.discard(ended)

    # Changing (each change leaves one audit line)

    @rpc
    def Bind(self, request: pb.BindRequest, context: grpc.ServicerContext) -> pb.BindResponse:
        result = self._s.binding.bind(request.bdf)
        audit.info("bind", previous_driver=result.previous_driver, driver=result.driver, unchanged=result.unchanged)
        return convert.bound(result)

    @rpc
    def Release(self, request: pb.ReleaseRequest, context: grpc.ServicerContext) -> pb.ReleaseResponse:
        result = self._s.binding.release(request.bdf, request.force)
        audit.info("release", driver=result.driver, vectors_released=result.vectors_released)
        return convert.released(result)

    @rpc
    def Enable(self, request: pb.EnableRequest, context: grpc.ServicerContext) -> pb.EnableResponse:
        bdf = request.bdf
        path, before = self._s.owner.enable(bdf, request.vectors, request.force)
        audit.info("enable", vectors=request.vectors, vectors_before=before, path=path.value, force=request.force)
        return convert.enabled(path, before, self._s.inventory.get_device(bdf))

    @rpc
    def Disable(self, request: pb.DisableRequest, context: grpc.ServicerContext) -> pb.DisableResponse:
        bdf = request.bdf
        vector = request.vector if request.HasField("vector") else None
        released = self._s.owner.disable(bdf, vector, request.force)
        audit.info("disable", vector=vector, released=released, force=request.force)
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
        return convert.placed(placed.bdf, placed)

    @rpc
    def Spread(self, request: pb.SpreadRequest, context: grpc.ServicerContext) -> pb.SpreadResponse:
        cpus, plan = self._s.placement.spread(request.bdf, request.cpus, request.dry_run, request.force)
        if not request.dry_run:
            if self._metrics is not None:
                self._metrics.affinity_changes.inc(sum(1 for p in plan if not p.error))
            audit.info("spread", cpus=sorted(cpus), placements={p.vector: p.cpu for p in plan if not p.error})
        return convert.spread(cpus, plan, request.dry_run)

    @rpc
    def ListLeases(self, request: pb.ListLeasesRequest, context: grpc.ServicerContext) -> pb.ListLeasesResponse:
        bdf = pci.parse_bdf(request.bdf) if request.bdf else None
        return pb.ListLeasesResponse(leases=[convert.lease(lease) for lease in self._s.leases.list(bdf)])

    @rpc
    def RevokeLease(self, request: pb.RevokeLeaseRequest, context: grpc.ServicerContext) -> pb.RevokeLeaseResponse:
        reason = request.reason[:200] or "revoked by an admin"
        lease = self._s.leases.revoke(request.lease[:64], reason, by=current_peer().describe())
        return pb.RevokeLeaseResponse(lease=convert.lease(lease))

    @rpc
    def Trigger(self, request: pb.TriggerRequest, context: grpc.ServicerContext) -> pb.TriggerResponse:
        required(request, "vector")
        bdf, count = self._s.owner.trigger(request.bdf, request.vector)
        audit.info("trigger", vector=request.vector)
        return pb.TriggerResponse(eventfd_count=count, bdf=bdf)

    # Placement policy

    @rpc
    def GetPolicy(self, request: pb.GetPolicyRequest, context: grpc.ServicerContext) -> pb.PolicyReport:
        return convert_policy.report(self._s.reconciler.report(request.bdf))

    @rpc
    def DiffPolicy(self, request: pb.DiffPolicyRequest, context: grpc.ServicerContext) -> pb.DiffPolicyResponse:
        return pb.DiffPolicyResponse(changes=[convert_policy.vector(d) for d in self._s.reconciler.diff()])

    @rpc
    def ApplyPolicy(self, request: pb.ApplyPolicyRequest,
                    context: grpc.ServicerContext) -> pb.ApplyPolicyResponse:
        trial = (request.file_name, request.file_content) if request.file_name else None
        result = self._s.reconciler.apply(trial, request.dry_run)
        if not request.dry_run:
            if self._metrics is not None:
                self._metrics.affinity_changes.inc(sum(1 for c in result.corrections if not c.error))
            audit.info("apply policy", files=list(result.policy.files), trial=result.policy.trial or None,
                       rules=len(result.policy.rules), placements=len(result.corrections))
        return convert_policy.applied(result)
