"""Values the service layer hands to its callers."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from msixd.kernel.irq import CpuCounts, IndexSource
from msixd.kernel.pci import PciDevice
from msixd.kernel.system import Cpus, Feature
from msixd.service.session import LeaseTag


class IrqMode(enum.Enum):
    NONE = "none"
    MSI = "msi"
    MSIX = "msix"


class DomainScheme(enum.Enum):
    PER_DEVICE = "per_device"
    GLOBAL = "global"


class DomainSource(enum.Enum):
    DEBUGFS = "debugfs"
    INFERRED = "inferred"


@dataclass(frozen=True)
class DomainRef:
    name: str
    scheme: DomainScheme
    remapped: bool
    source: DomainSource


@dataclass(frozen=True)
class Vector:
    index: int
    index_source: IndexSource
    irq: int
    chip: str
    hwirq: int | None
    actions: tuple[str, ...]
    type: str
    affinity: frozenset[int]
    effective_affinity: frozenset[int]
    affinity_settable: bool
    affinity_reason: str
    node: int
    per_cpu_count: CpuCounts
    eventfd_count: int = 0
    # Set while the vector is leased: who holds it.
    lease: LeaseTag | None = None

    @property
    def total_count(self) -> int:
        return self.per_cpu_count.total


@dataclass(frozen=True)
class Ownership:
    dynamic_msix: bool
    vectors_enabled: int
    iommu_group: int


@dataclass(frozen=True)
class Device:
    pci: PciDevice
    irq_mode: IrqMode
    vectors_allocated: int
    domain: DomainRef | None
    vectors: tuple[Vector, ...] = ()
    ownership: Ownership | None = None


@dataclass(frozen=True)
class Domain:
    name: str
    scheme: DomainScheme
    source: DomainSource
    remapped: bool
    bdfs: tuple[str, ...]
    size: int
    mapped: int
    parents: tuple[str, ...]


@dataclass(frozen=True)
class Features:
    vfio: Feature
    vfio_pci: Feature
    iommu_groups: Feature
    interrupt_remapping: Feature
    per_device_msi_domains: Feature
    dynamic_msix: Feature
    debugfs_irq: Feature
    vfio_noiommu: Feature


@dataclass(frozen=True)
class Status:
    daemon_version: str
    kernel_release: str
    features: Features
    cpus: Cpus
    uptime_seconds: float
