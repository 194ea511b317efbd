"""Read-only use cases: the host's MSI/MSI-X devices, their vectors and irq domains."""

from __future__ import annotations

import operator
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

import structlog

from msixd import __version__
from msixd.errors import DeviceNotFound, KernelFormatError
from msixd.kernel import debugfs, irq, pci, system
from msixd.kernel.irq import IndexSource
from msixd.kernel.roots import KernelRoots
from msixd.kernel.system import Feature, State
from msixd.service.coalesce import Coalescer
from msixd.service.model import (
    Device,
    Domain,
    DomainRef,
    DomainScheme,
    DomainSource,
    Features,
    IrqMode,
    Ownership,
    Status,
    Vector,
)
from msixd.service.owner import Owner
from msixd.service.session import LeaseTag

log = structlog.get_logger(__name__)
_BY_INDEX = operator.attrgetter("index", "irq")

# VFIO dynamic MSI-X ("vfio/pci: Clear VFIO_IRQ_INFO_NORESIZE for MSI-X") landed in 6.5.
DYNAMIC_MSIX_SINCE = (6, 5)
# The IOMMU device a PCI function's `iommu` link names, and the irq remapping
# domain its driver creates: intel/irq_remapping.c "INTEL-IR-%d" per DMAR unit,
# amd/iommu.c "AMD-IR-%d" per IVHD.
_IR_DOMAIN_OF_IOMMU = ((re.compile(r"dmar(\d+)"), "INTEL-IR-{}"), (re.compile(r"ivhd(\d+)"), "AMD-IR-{}"))


def _irq_mode(modes: Iterable[str]) -> IrqMode:
    seen = set(modes)
    if "msix" in seen:
        return IrqMode.MSIX
    if "msi" in seen:
        return IrqMode.MSI
    return IrqMode.NONE


def _release_version(release: str) -> tuple[int, int] | None:
    match = re.match(r"(\d{1,6})\.(\d{1,6})", release)
    return (int(match.group(1)), int(match.group(2))) if match else None


class Inventory:
    """What the kernel says about MSI/MSI-X right now.

    Every answer is read from the kernel when it is asked for. Only what cannot
    change while a device keeps its sysfs identity (its IDs, where its MSI-X
    capability, table and PBA are) is remembered, by pci.Devices, and dropped
    when the identity changes; enable and mask bits, drivers, IRQs, affinities
    and counts are read again for every answer.
    """

    def __init__(
        self, roots: KernelRoots, owner: Owner | None = None, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._roots = roots
        self._owner = owner
        self._clock = clock
        self._coalescer = Coalescer()
        self._started = clock()
        self.devices = pci.Devices(roots)

    # Devices

    def list_devices(self, all_devices: bool = False, include_vectors: bool = False) -> list[Device]:
        return self._coalescer.run(("list", all_devices, include_vectors),
                                   lambda: self._list_devices(all_devices, include_vectors))

    def _list_devices(self, all_devices: bool, include_vectors: bool) -> list[Device]:
        devices = []
        bdfs = pci.list_bdfs(self._roots)
        self.devices.keep_only(set(bdfs))
        for bdf in bdfs:
            try:
                device = self._device(bdf, include_vectors, msix_only=not all_devices)
            except DeviceNotFound:
                log.debug("device vanished during listing", bdf=bdf)
                continue
            except KernelFormatError as err:
                log.warning("device skipped: unreadable sysfs entry", bdf=bdf, error=str(err))
                continue
            if device is not None:
                devices.append(device)
        return devices

    def get_device(self, bdf: str) -> Device:
        """bdf in any accepted form ("00:09.0" too). Raises InvalidBdf, DeviceNotFound."""
        bdf = pci.parse_bdf(bdf)
        device = self._coalescer.run(("get", bdf), lambda: self._device(bdf, include_vectors=True))
        assert device is not None
        return device

    def _device(self, bdf: str, include_vectors: bool, msix_only: bool = False) -> Device | None:
        pci_device = self.devices.read(bdf, msix_only)
        if pci_device is None:
            return None
        irqs = irq.msi_irq_numbers(self._roots, bdf)
        first = irqs[0] if irqs else None
        mode = irq.msi_mode(self._roots, bdf, irqs) if irqs else ""
        # The first IRQ's debugfs file names the domain, and tells whether debugfs has
        # IRQ files at all (Debian's kernels are built without them: one failed open).
        debug = debugfs.read_irq(self._roots, first) if first is not None else None
        vectors: tuple[Vector, ...] = ()
        chip = ""
        ownership = None
        owned = self._owner.owned(bdf) if self._owner else None
        counts: dict[int, int] = {}
        leases: dict[int, LeaseTag] = {}
        if owned is not None:
            assert self._owner is not None
            counts = self._owner.counts(bdf)
            leases = self._owner.leases(bdf)
            ownership = Ownership(owned.dynamic, len(counts) + len(leases), owned.group)
        if include_vectors:
            vectors = self._vectors(bdf, irqs, debug, counts, leases)
            chip = vectors[0].chip if vectors else ""
        else:
            for number in irqs:
                chip = irq.read_chip_name(self._roots, number) or ""
                if chip:
                    break
        return Device(
            pci=pci_device,
            irq_mode=_irq_mode((mode,)),
            vectors_allocated=len(irqs),
            domain=self._domain_ref(bdf, chip, debug),
            vectors=vectors,
            ownership=ownership,
        )

    def _vectors(self, bdf: str, irqs: list[int], debug: debugfs.DebugfsIrq | None,
                 eventfd_counts: dict[int, int], leases: dict[int, LeaseTag]) -> tuple[Vector, ...]:
        """The vectors of irqs; eventfd_counts: what msixd's eventfds counted, and leases: who holds
        each leased vector, per vector index."""
        vectors = []
        for position, number in enumerate(irqs):
            try:
                vector = self._vector(bdf, position, number, debug, eventfd_counts, leases)
            except KernelFormatError as err:
                log.warning("vector skipped: unreadable irq entry", bdf=bdf, irq=number, error=str(err))
                continue
            if vector is not None:
                vectors.append(vector)
        vectors.sort(key=_BY_INDEX)
        return tuple(vectors)

    def _vector(self, bdf: str, position: int, number: int, debug: debugfs.DebugfsIrq | None,
                eventfd_counts: dict[int, int], leases: dict[int, LeaseTag]) -> Vector | None:
        sys_irq = irq.read_sys_irq(self._roots, number)
        if sys_irq is None:
            log.debug("irq freed during listing", bdf=bdf, irq=number)
            return None
        chip, hwirq, actions = sys_irq.chip_name, sys_irq.hwirq, sys_irq.actions
        proc_irq = irq.read_proc_irq(self._roots, number)
        found = irq.vector_index(bdf, chip, hwirq, actions)
        index, source = (position, IndexSource.ORDER) if found is None else found
        if proc_irq is None:
            return Vector(index, source, number, chip, hwirq, actions, sys_irq.type, frozenset(), frozenset(), False,
                          f"no handler was ever requested on IRQ {number} (no /proc/irq/{number})", -1,
                          sys_irq.per_cpu_count, eventfd_counts.get(index, 0), leases.get(index))
        settable, reason = proc_irq.settable, proc_irq.reason
        if settable and debug is not None:  # debugfs has IRQ files: it knows which are managed
            info = debug if debug.irq == number else debugfs.read_irq(self._roots, number)
            if info is not None and info.managed:
                settable, reason = False, "the kernel manages this IRQ's affinity (IRQD_AFFINITY_MANAGED)"
        # Positional, in the order of Vector's fields: this runs once per vector of every answer.
        return Vector(index, source, number, chip, hwirq, actions, sys_irq.type, proc_irq.affinity,
                      proc_irq.effective_affinity, settable, reason, proc_irq.node, sys_irq.per_cpu_count,
                      eventfd_counts.get(index, 0), leases.get(index))

    # Domains

    def _domain_ref(self, bdf: str, chip: str, info: debugfs.DebugfsIrq | None) -> DomainRef | None:
        """The domain of the device's vectors, named by the first IRQ's debugfs file (info) when there is one."""
        if not chip:
            return None
        scheme = DomainScheme.PER_DEVICE if irq.per_device_chip(chip, bdf) else DomainScheme.GLOBAL
        if info is not None and info.chain:
            return DomainRef(info.chain[0][0], scheme, irq.remapped_chip(chip), DomainSource.DEBUGFS)
        # Without debugfs the domain is named after its irq chip: for per-device
        # domains the chip carries the domain's name (msi_create_device_irq_domain).
        return DomainRef(chip, scheme, irq.remapped_chip(chip), DomainSource.INFERRED)

    def _inferred_parents(self, device: Device) -> tuple[str, ...]:
        assert device.domain is not None
        chip = device.domain.name
        if not (chip.startswith("PCI-MSI") or chip.startswith("IR-PCI-MSI")):
            return ()  # not an x86 PCI MSI chip: no rule to apply
        parents = []
        if device.domain.remapped:
            iommu = pci.iommu_name(self._roots, device.pci.bdf) or ""
            for pattern, name in _IR_DOMAIN_OF_IOMMU:
                match = pattern.fullmatch(iommu)
                if match:
                    parents.append(name.format(match.group(1)))
        parents.append("VECTOR")
        return tuple(parents)

    def list_domains(self) -> list[Domain]:
        devices = [d for d in self.list_devices(all_devices=True) if d.domain is not None]
        domains: dict[str, Domain] = {}
        for device in devices:
            ref = device.domain
            assert ref is not None
            if ref.source is DomainSource.DEBUGFS:
                info = debugfs.read_irq(self._roots, next(iter(irq.msi_irq_numbers(self._roots, device.pci.bdf)), -1))
                parents = tuple(link[0] for link in info.chain[1:]) if info else ()
            else:
                parents = self._inferred_parents(device)
            known = domains.get(ref.name)
            if known is not None:  # a global domain shared by several devices
                domains[ref.name] = replace(
                    known, bdfs=known.bdfs + (device.pci.bdf,), mapped=known.mapped + device.vectors_allocated
                )
                continue
            msix = device.pci.msix
            per_device_msix = ref.scheme is DomainScheme.PER_DEVICE and device.irq_mode is IrqMode.MSIX
            domains[ref.name] = Domain(
                name=ref.name,
                scheme=ref.scheme,
                source=ref.source,
                remapped=ref.remapped,
                bdfs=(device.pci.bdf,),
                size=msix.table_size if msix and per_device_msix else 0,
                mapped=device.vectors_allocated,
                parents=parents,
            )
        for name, domain in domains.items():
            if domain.source is DomainSource.DEBUGFS:
                counted = debugfs.read_domain(self._roots, name)
                if counted is not None:
                    domains[name] = replace(domain, size=counted.size, mapped=counted.mapped)
        return sorted(domains.values(), key=lambda d: d.name)

    # Status

    def status(self) -> Status:
        release = system.kernel_release(self._roots)
        devices = self.list_devices(all_devices=True)
        chips = [d.domain for d in devices if d.domain is not None]
        return Status(
            daemon_version=__version__,
            kernel_release=release,
            features=Features(
                vfio=system.vfio(self._roots),
                vfio_pci=system.vfio_pci(self._roots),
                iommu_groups=system.iommu_groups(self._roots),
                interrupt_remapping=self._interrupt_remapping(chips),
                per_device_msi_domains=self._per_device_domains(chips),
                dynamic_msix=self._dynamic_msix(release, devices),
                debugfs_irq=system.debugfs_irq(self._roots),
                vfio_noiommu=system.vfio_noiommu(self._roots),
            ),
            cpus=system.read_cpus(self._roots),
            uptime_seconds=self._clock() - self._started,
        )

    @staticmethod
    def _interrupt_remapping(domains: list[DomainRef]) -> Feature:
        if not domains:
            return Feature(State.UNKNOWN, "no device has MSI/MSI-X vectors to tell by")
        remapped = [d.name for d in domains if d.remapped]
        if remapped:
            return Feature(State.PRESENT, f"MSI vectors use remapping chips (e.g. {remapped[0]})")
        return Feature(State.ABSENT, f"no MSI vector uses an IR- chip (e.g. {domains[0].name})")

    @staticmethod
    def _per_device_domains(domains: list[DomainRef]) -> Feature:
        per_device = [d.name for d in domains if d.scheme is DomainScheme.PER_DEVICE]
        if per_device:
            return Feature(State.PRESENT, f"{len(per_device)} devices have their own MSI domain (e.g. {per_device[0]})")
        if domains:
            return Feature(State.ABSENT, f"MSI vectors share the global domain of chip {domains[0].name}")
        return Feature(State.UNKNOWN, "no device has MSI/MSI-X vectors to tell by")

    def _dynamic_msix(self, release: str, devices: list[Device]) -> Feature:
        owned = [d for d in devices if d.ownership is not None]
        if owned:
            dynamic = [d.pci.bdf for d in owned if d.ownership and d.ownership.dynamic_msix]
            if dynamic:
                return Feature(State.PRESENT, f"VFIO_IRQ_INFO_NORESIZE is clear for {', '.join(dynamic)}")
            return Feature(State.ABSENT, f"VFIO_IRQ_INFO_NORESIZE is set for {owned[0].pci.bdf}")
        version = _release_version(release)
        if version is not None and version < DYNAMIC_MSIX_SINCE:
            return Feature(State.ABSENT, f"Linux {release} predates VFIO dynamic MSI-X (6.5)")
        return Feature(
            State.UNKNOWN,
            "decided per device: VFIO clears VFIO_IRQ_INFO_NORESIZE when the device's MSI parent "
            "domain can allocate vectors dynamically; known once a device is opened through VFIO",
        )
