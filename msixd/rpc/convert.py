"""Service-layer values to msix.v1 messages. One function per message, no logic."""

from __future__ import annotations

from msixd.api.msix.v1 import msix_pb2 as pb
from msixd.kernel.irq import IndexSource
from msixd.kernel.pci import MsixProbe
from msixd.kernel.system import Cpus, Feature, State
from msixd.service.binding import Bound, Released
from msixd.service.leases import Lease, Return
from msixd.service.model import Device, Domain, DomainRef, DomainScheme, DomainSource, IrqMode, Status, Vector
from msixd.service.owner import ResizePath
from msixd.service.placement import Placed, PlannedPlacement
from msixd.service.session import LeaseTag
from msixd.service.watch import Sample

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


def vector(value: Vector) -> pb.Vector:
    return pb.Vector(
        index=value.index,
        index_source=INDEX_SOURCE[value.index_source],
        irq=value.irq,
        chip=value.chip,
        hwirq=value.hwirq or 0,
        actions=value.actions,
        type=value.type,
        affinity=sorted(value.affinity),
        effective_affinity=sorted(value.effective_affinity),
        affinity_settable=value.affinity_settable,
        affinity_reason=value.affinity_reason,
        node=value.node,
        total_count=value.total_count,
        per_cpu_count=value.per_cpu_count,
        eventfd_count=value.eventfd_count,
        lease=lease_holder(value.lease) if value.lease is not None else None,
    )


def device(value: Device) -> pb.Device:
    dev = value.pci
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
        local_cpus=sorted(dev.local_cpus),
        msix_probe=MSIX_PROBE[dev.msix_probe],
        irq_mode=IRQ_MODE[value.irq_mode],
        vectors_allocated=value.vectors_allocated,
        vectors=[vector(v) for v in value.vectors],
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
    return message


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


def sample(value: Sample) -> pb.WatchSample:
    return pb.WatchSample(
        bdf=value.bdf,
        time=value.time,
        vectors=[
            pb.VectorSample(
                vector=v.vector,
                irq=v.irq,
                total=v.total,
                rate=v.rate,
                source=pb.COUNT_SOURCE_EVENTFD if v.from_eventfd else pb.COUNT_SOURCE_PER_CPU_COUNT,
                per_cpu_count=v.per_cpu_count,
            )
            for v in value.vectors
        ],
    )
