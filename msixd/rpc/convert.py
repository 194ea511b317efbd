"""Service-layer values to msix.v1 messages. One function per message, no logic."""

from __future__ import annotations

from msixd.api.msix.v1 import msix_pb2 as pb
from msixd.kernel.irq import IndexSource
from msixd.kernel.pci import MsixProbe
from msixd.kernel.system import Cpus, Feature, State
from msixd.service.model import Device, Domain, DomainRef, DomainScheme, DomainSource, IrqMode, Status, Vector

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
