"""Service-layer values to msix.v1 messages. One function per message, no logic.

Devices and their vectors are put together from wire bytes: setting a
repeated field from Python costs a conversion per value (tens of microseconds
per thousand per-CPU counts), and a message set into another's field is copied
whole, while the protobuf runtime parses bytes in C. So each Vector is its
scalar fields serialized by its own class, followed by its long per-CPU fields
written as packed varints (tag = field number << 3 | 2, the payload's length,
each value as a varint: https://protobuf.dev/programming-guides/encoding/;
most counts are zero, one byte each); a Device is its own fields followed by
its vectors, each a length-delimited field; and the whole is parsed once.
Serialized messages and fields may be concatenated: the parser merges them.
"""

from __future__ import annotations

import functools

from msixd.api.msix.v1 import msix_pb2 as pb
from msixd.kernel.irq import CpuCounts, IndexSource
from msixd.kernel.pci import MsixProbe
from msixd.kernel.system import Cpus, Feature, State
from msixd.service.binding import Bound, Released
from msixd.service.leases import Lease, Return
from msixd.service.model import Device, Domain, DomainRef, DomainScheme, DomainSource, IrqMode, Status, Vector
from msixd.service.owner import ResizePath
from msixd.service.placement import Placed, PlannedPlacement
from msixd.service.session import LeaseTag
from msixd.service.watch import Sample, VectorSample

FEATURE_STATE = {
    State.PRESENT: pb.FEATURE_STATE_PRESENT,
    State.ABSENT: pb.FEATURE_STATE_ABSENT,
    State.UNKNOWN: pb.FEATURE_STATE_UNKNOWN,
}
MSIX_PROBE = {
    MsixProbe.PRESENT: pb.MSIX_PROBE_PRESENT,
    MsixProbe.ABSENT: pb.MSIX_PROBE_ABSENT,
    MsixProbe.UNREADABLE: pb.MSIX_PROBE_UNREADABLE,
}
IRQ_MODE = {IrqMode.NONE: pb.IRQ_MODE_NONE, IrqMode.MSI: pb.IRQ_MODE_MSI, IrqMode.MSIX: pb.IRQ_MODE_MSIX}
DOMAIN_SCHEME = {DomainScheme.PER_DEVICE: pb.DOMAIN_SCHEME_PER_DEVICE, DomainScheme.GLOBAL: pb.DOMAIN_SCHEME_GLOBAL}
DOMAIN_SOURCE = {DomainSource.DEBUGFS: pb.DOMAIN_SOURCE_DEBUGFS, DomainSource.INFERRED: pb.DOMAIN_SOURCE_INFERRED}
RESIZE_PATH = {
    ResizePath.ENABLE: pb.RESIZE_PATH_ENABLE,
    ResizePath.DYNAMIC: pb.RESIZE_PATH_DYNAMIC,
    ResizePath.REENABLE: pb.RESIZE_PATH_REENABLE,
    ResizePath.SHRINK: pb.RESIZE_PATH_SHRINK,
    ResizePath.UNCHANGED: pb.RESIZE_PATH_UNCHANGED,
}
LEASE_RETURN = {Return.OWN: pb.LEASE_RETURN_OWN, Return.RELEASE: pb.LEASE_RETURN_RELEASE}
INDEX_SOURCE = {
    IndexSource.ACTION: pb.INDEX_SOURCE_ACTION,
    IndexSource.HWIRQ: pb.INDEX_SOURCE_HWIRQ,
    IndexSource.GLOBAL_HWIRQ: pb.INDEX_SOURCE_GLOBAL_HWIRQ,
    IndexSource.ORDER: pb.INDEX_SOURCE_ORDER,
}


_SHORT = 16  # CPU lists this long or shorter are set as lists: fewer steps than the bytes


_BYTES = [bytes((value,)) for value in range(0x80)]
_ZERO_BYTES = memoryview(bytes(8192))  # zero counts, as many as kernels have CPUs


def _varint(value: int) -> bytes:
    if value < 0x80:
        return _BYTES[value]
    if value < 0x4000:  # lengths of vectors and of their counts
        return bytes((value & 0x7F | 0x80, value >> 7))
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _packed(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload if payload else b""


def _message(number: int, wire: bytes) -> bytes:
    """A message as field `number` of another: its tag (wire type 2), its length, its bytes."""
    return _varint(number << 3 | 2) + _varint(len(wire)) + wire


def _field(message: type[pb.Vector] | type[pb.VectorSample] | type[pb.Device] | type[pb.ListDevicesResponse],
           name: str) -> int:
    return message.DESCRIPTOR.fields_by_name[name].number


VECTOR_COUNTS = _field(pb.Vector, "per_cpu_count")
VECTOR_AFFINITY = _field(pb.Vector, "affinity")
VECTOR_EFFECTIVE = _field(pb.Vector, "effective_affinity")
VECTOR_LEASE = _field(pb.Vector, "lease")
SAMPLE_COUNTS = _field(pb.VectorSample, "per_cpu_count")
DEVICE_LOCAL_CPUS = _field(pb.Device, "local_cpus")
DEVICE_VECTORS = _field(pb.Device, "vectors")
LIST_DEVICES = _field(pb.ListDevicesResponse, "devices")


def packed_counts(number: int, counts: CpuCounts) -> bytes:
    """Field `number` holding counts, as wire bytes (b"" for none, or when they are kept dense:
    set those as a list)."""
    if counts.dense is not None:
        return b""
    parts: list[bytes | memoryview] = []
    cpu = 0
    for at, count in counts.nonzero:
        parts.append(_ZERO_BYTES[: at - cpu])  # the zeros before it: one byte each
        parts.append(_varint(count))
        cpu = at + 1
    parts.append(_ZERO_BYTES[: len(counts) - cpu])
    return _packed(number, b"".join(parts))


@functools.lru_cache(maxsize=256)
def packed_cpus(number: int, cpus: frozenset[int]) -> bytes:
    """Field `number` holding a long CPU list, in order, as wire bytes. Remembered: a host's
    vectors name the same few CPU sets again and again."""
    return _packed(number, b"".join(map(_varint, sorted(cpus))))


def _cpus(number: int, cpus: frozenset[int]) -> tuple[list[int], bytes]:
    """A CPU list as a field value when short, else as wire bytes to merge."""
    if len(cpus) <= _SHORT:
        return sorted(cpus), b""
    return [], packed_cpus(number, cpus)


def feature(value: Feature) -> pb.Feature:
    return pb.Feature(state=FEATURE_STATE[value.state], detail=value.detail)


def cpus(value: Cpus) -> pb.Cpus:
    return pb.Cpus(
        online=sorted(value.online),
        possible=sorted(value.possible),
        isolated=sorted(value.isolated),
        nohz_full=sorted(value.nohz_full),
    )


def status(value: Status) -> pb.Status:
    features = value.features
    return pb.Status(
        daemon_version=value.daemon_version,
        kernel_release=value.kernel_release,
        features=pb.KernelFeatures(
            **{name: feature(getattr(features, name)) for name in features.__dataclass_fields__}
        ),
        cpus=cpus(value.cpus),
        uptime_seconds=value.uptime_seconds,
    )


def domain_ref(value: DomainRef) -> pb.DomainRef:
    return pb.DomainRef(
        name=value.name,
        scheme=DOMAIN_SCHEME[value.scheme],
        remapped=value.remapped,
        source=DOMAIN_SOURCE[value.source],
    )


def lease_holder(value: LeaseTag) -> pb.LeaseHolder:
    return pb.LeaseHolder(lease=value.lease, uid=value.uid, pid=value.pid, since=value.since)


def lease(value: Lease) -> pb.Lease:
    return pb.Lease(
        id=value.id,
        bdf=value.bdf,
        vectors=value.vectors,
        irqs=value.irqs,
        holder_uid=value.holder.uid,
        holder_gid=value.holder.gid,
        holder_pid=value.holder.pid,
        since=value.since,
        device_fd=value.device_fd,
        on_return=LEASE_RETURN[value.on_return],
    )


# A vector's fields but its counts, as wire bytes, by the values they encode: between two
# answers nearly every vector is the same but for its counts. Cleared when full.
_STEADY: dict[tuple[object, ...], bytes] = {}
_STEADY_MOST = 1 << 16
VECTOR_TOTAL = _field(pb.Vector, "total_count") << 3  # varint fields: wire type 0
VECTOR_EVENTFD = _field(pb.Vector, "eventfd_count") << 3


def _steady_wire(value: Vector) -> bytes:
    key = (value.index, value.index_source, value.irq, value.chip, value.hwirq, value.actions, value.type,
           value.affinity, value.effective_affinity, value.affinity_settable, value.affinity_reason, value.node)
    wire = _STEADY.get(key)
    if wire is None:
        affinity, affinity_wire = _cpus(VECTOR_AFFINITY, value.affinity)
        effective, effective_wire = _cpus(VECTOR_EFFECTIVE, value.effective_affinity)
        wire = pb.Vector(
            index=value.index,
            index_source=INDEX_SOURCE[value.index_source],
            irq=value.irq,
            chip=value.chip,
            hwirq=value.hwirq or 0,
            actions=value.actions,
            type=value.type,
            affinity=affinity,
            effective_affinity=effective,
            affinity_settable=value.affinity_settable,
            affinity_reason=value.affinity_reason,
            node=value.node,
        ).SerializeToString() + affinity_wire + effective_wire
        if len(_STEADY) >= _STEADY_MOST:
            _STEADY.clear()
        _STEADY[key] = wire
    return wire


def _vector_wire(value: Vector) -> bytes:
    counts = value.per_cpu_count
    wire = _steady_wire(value)
    if counts.total:
        wire += _varint(VECTOR_TOTAL) + _varint(counts.total)
    if counts.dense is not None:
        wire += pb.Vector(per_cpu_count=counts.dense).SerializeToString()
    else:
        wire += packed_counts(VECTOR_COUNTS, counts)
    if value.eventfd_count:
        wire += _varint(VECTOR_EVENTFD) + _varint(value.eventfd_count)
    if value.lease is not None:
        wire += _message(VECTOR_LEASE, lease_holder(value.lease).SerializeToString())
    return wire


def vector(value: Vector) -> pb.Vector:
    return pb.Vector.FromString(_vector_wire(value))


def _device_wire(value: Device) -> bytes:
    dev = value.pci
    local_cpus, wire = _cpus(DEVICE_LOCAL_CPUS, dev.local_cpus)
    message = pb.Device(
        bdf=dev.bdf,
        vendor_id=dev.vendor_id,
        device_id=dev.device_id,
        class_code=dev.class_code,
        subsystem_vendor_id=dev.subsystem_vendor_id,
        subsystem_device_id=dev.subsystem_device_id,
        driver=dev.driver or "",
        iommu_group=-1 if dev.iommu_group is None else dev.iommu_group,
        numa_node=dev.numa_node,
        local_cpus=local_cpus,
        msix_probe=MSIX_PROBE[dev.msix_probe],
        irq_mode=IRQ_MODE[value.irq_mode],
        vectors_allocated=value.vectors_allocated,
    )
    if dev.msix is not None:
        message.msix.CopyFrom(pb.MsixCapability(**dev.msix.__dict__))
    if value.domain is not None:
        message.domain.CopyFrom(domain_ref(value.domain))
    if value.ownership is not None:
        message.ownership.CopyFrom(
            pb.Ownership(
                owned=True,
                dynamic_msix=value.ownership.dynamic_msix,
                vectors_enabled=value.ownership.vectors_enabled,
                iommu_group=value.ownership.iommu_group,
            )
        )
    vectors = b"".join(_message(DEVICE_VECTORS, _vector_wire(v)) for v in value.vectors)
    return message.SerializeToString() + wire + vectors


def device(value: Device) -> pb.Device:
    return pb.Device.FromString(_device_wire(value))


def devices_wire(values: list[Device]) -> bytes:
    """A ListDevicesResponse of values as wire bytes: each device a length-delimited field."""
    return b"".join(_message(LIST_DEVICES, _device_wire(d)) for d in values)


def devices(values: list[Device]) -> pb.ListDevicesResponse:
    return pb.ListDevicesResponse.FromString(devices_wire(values))


def domain(value: Domain) -> pb.Domain:
    return pb.Domain(
        name=value.name,
        scheme=DOMAIN_SCHEME[value.scheme],
        source=DOMAIN_SOURCE[value.source],
        remapped=value.remapped,
        bdfs=value.bdfs,
        size=value.size,
        mapped=value.mapped,
        parents=value.parents,
    )


def bound(value: Bound) -> pb.BindResponse:
    return pb.BindResponse(
        bdf=value.bdf,
        previous_driver=value.previous_driver or "",
        driver=value.driver or "",
        iommu_group=value.iommu_group,
        unchanged=value.unchanged,
    )


def released(value: Released) -> pb.ReleaseResponse:
    return pb.ReleaseResponse(bdf=value.bdf, driver=value.driver or "", vectors_released=value.vectors_released)


def enabled(path: ResizePath, before: int, value: Device) -> pb.EnableResponse:
    return pb.EnableResponse(path=RESIZE_PATH[path], vectors_before=before, device=device(value))


def placed(bdf: str, value: Placed) -> pb.SetAffinityResponse:
    return pb.SetAffinityResponse(
        bdf=bdf,
        vector=value.vector,
        irq=value.irq,
        affinity=sorted(value.affinity),
        effective_affinity=sorted(value.effective_affinity),
        previous_affinity=sorted(value.previous_affinity),
        dry_run=value.dry_run,
    )


def spread(cpus: frozenset[int], plan: list[PlannedPlacement], dry_run: bool) -> pb.SpreadResponse:
    return pb.SpreadResponse(
        cpus=sorted(cpus),
        dry_run=dry_run,
        placements=[
            pb.Placement(
                vector=p.vector, irq=p.irq, cpu=p.cpu, effective_affinity=sorted(p.effective_affinity), error=p.error
            )
            for p in plan
        ],
    )


def _vector_sample(value: VectorSample) -> pb.VectorSample:
    counts = value.per_cpu_count
    message = pb.VectorSample(
        vector=value.vector,
        irq=value.irq,
        total=value.total,
        rate=value.rate,
        source=pb.COUNT_SOURCE_EVENTFD if value.from_eventfd else pb.COUNT_SOURCE_PER_CPU_COUNT,
        per_cpu_count=counts.dense or (),
    )
    wire = packed_counts(SAMPLE_COUNTS, counts)
    if wire:
        message.MergeFromString(wire)
    return message


def sample(value: Sample) -> pb.WatchSample:
    return pb.WatchSample(bdf=value.bdf, time=value.time, vectors=[_vector_sample(v) for v in value.vectors])
