"""At start, take back what systemd kept for msixd (msixd/service/fdstore.py), after checking it.

Each file handed back (LISTEN_FDS) is checked against the kernel before msixd
relies on it, and nothing is re-installed to check it: freeing and requesting
an interrupt again (free_irq/request_irq, what SET_IRQS does to a vector that
has a trigger) could drop one.

- A group's files: the group file is /dev/vfio/<group> (or noiommu-<group>)
  and GET_STATUS says viable with a container set; the container file is
  /dev/vfio/vfio.
- A device's file: a VFIO device file (anon_inode:[vfio-device]) with PCI
  regions; the device is bound to vfio-pci in that group; its MSI-X IRQ count
  is the table size sysfs shows; its config space, read through the file's
  config region, has the vendor, device, class and subsystem sysfs has.
- A vector's eventfd: an eventfd, whose vector has vfio-pci's handler
  "vfio-msix[<index>](<bdf>)" (/sys/kernel/irq/N/actions). That it is the
  very eventfd the kernel signals is proven with one loopback trigger
  (SET_IRQS DATA_NONE|ACTION_TRIGGER signals the installed eventfd and nothing
  else, vfio_pci_set_msi_trigger()), counted and taken off again; a leased
  vector's is not triggered (its holder would see it). A vector with the
  handler but none of msixd's eventfds (msixd died between SET_IRQS and
  storing it, which it does in that order the other way round) gets a fresh
  eventfd of msixd's; a stored eventfd whose vector has no handler is closed.
- The release channel: re-installed as the device's request trigger (no IRQ
  behind it); if the kernel signalled it meanwhile (an unbind waiting), the
  signal is left for the keeper, which gives the device back.
- A lease's connection: a socket whose peer (SO_PEERCRED, recorded by the
  kernel at connect time) is the lease's holder, for a lease of the runtime
  facts on an adopted device.

What fails a check is closed, with a log line saying why, and removed from
the store; a device whose files fail is opened again the usual way by
restore() (MSI-X was disabled when its last file closed). Names msixd does
not know are closed and removed (systemd's advice for a newer msixd's leftovers).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import structlog

from msixd.errors import MsixdError
from msixd.kernel import irq as kirq
from msixd.kernel import pci, peercred
from msixd.kernel import vfio as kvfio
from msixd.kernel.roots import KernelRoots
from msixd.service.fdstore import RUNTIME, FdStore, Name, parse, request_name, vector_name
from msixd.service.leases import Holder, Lease, Leases, Return
from msixd.service.owner import Owner
from msixd.service.session import LeaseTag, OwnedDevice

log = structlog.get_logger(__name__)
audit = structlog.get_logger("msixd.audit")


@dataclass
class AdoptedLease:
    lease: Lease
    connection: int  # the socket's descriptor, for the transport
    name: str  # its name in the store


@dataclass
class Adoption:
    devices: list[str] = field(default_factory=list)
    refused: dict[str, str] = field(default_factory=dict)  # bdf or name -> why
    leases: list[AdoptedLease] = field(default_factory=list)
    # Interrupts counted meanwhile on adopted vectors (msixd's own; a lease's holder counts its own).
    counted: dict[str, int] = field(default_factory=dict)


class _Refused(Exception):
    pass


class Adopter:
    def __init__(self, roots: KernelRoots, owner: Owner, leases: Leases, store: FdStore,
                 vfio: ModuleType = kvfio) -> None:
        self._roots = roots
        self._owner = owner
        self._leases = leases
        self._store = store
        self._vfio = vfio

    def _close(self, name: str, fd: int) -> None:
        self._store.drop(name)
        try:
            self._vfio.close(fd)
        except OSError:
            pass

    def adopt(self, handed: list[tuple[str, int]]) -> Adoption:
        outcome = Adoption()
        if not handed:
            return outcome
        parsed: list[tuple[Name, str, int]] = []
        for name, fd in handed:
            if name == RUNTIME:
                continue  # FdStore.from_environment took it
            self._store.adopted(name)
            what = parse(name)
            if what is None:
                log.warning("closed a file systemd handed back under a name msixd does not know", name=name[:80])
                self._close(name, fd)
                continue
            parsed.append((what, name, fd))
        groups = self._adopt_groups(parsed, outcome)
        lease_facts = self._lease_facts()
        for what, name, fd in [p for p in parsed if p[0].kind == "d"]:
            try:
                device = self._adopt_device(what.bdf, name, fd, groups, parsed, lease_facts, outcome)
            except (_Refused, MsixdError, OSError) as err:
                why = str(err) or type(err).__name__
                log.warning("device not adopted: it is opened again the usual way", bdf=what.bdf, why=why)
                outcome.refused[what.bdf] = why
                self._close(name, fd)
                for other, other_name, other_fd in parsed:
                    if other.bdf == what.bdf and other.kind in "vr":
                        self._close(other_name, other_fd)
                continue
            outcome.devices.append(device.bdf)
        adopted = set(outcome.devices)
        for what, name, fd in parsed:  # files of devices that were not handed back (or not adopted)
            if what.kind in "vr" and what.bdf not in adopted and what.bdf not in outcome.refused:
                self._close(name, fd)
        self._adopt_leases(parsed, lease_facts, adopted, outcome)
        # A group adopted for a device that was not stays open for restore() to open the device
        # in: closing it here would race systemd's own close of its copy (FDSTOREREMOVE is handled
        # when systemd gets to it), and the group would still be busy. restore() closes what is
        # left unused.
        for bdf in outcome.devices:
            audit.info("adopt", bdf=bdf, by="msixd",
                       reason="kept in systemd's file descriptor store across a restart: MSI-X never went off")
        return outcome

    # Groups

    def _adopt_groups(self, parsed: list[tuple[Name, str, int]], outcome: Adoption) -> set[int]:
        files: dict[int, dict[str, tuple[str, int]]] = {}
        for what, name, fd in parsed:
            if what.kind in "cg":
                files.setdefault(what.group, {})[what.kind] = (name, fd)
        adopted = set()
        for group, pair in files.items():
            problem = ""
            if set(pair) != {"c", "g"}:
                problem = "its group or container file is missing"
            else:
                group_fd, container_fd = pair["g"][1], pair["c"][1]
                target = self._vfio.fd_target(group_fd)
                if not target.rsplit("/", 1)[-1] in (str(group), f"noiommu-{group}") or "/vfio/" not in target:
                    problem = f"the group file is {target or 'not open'}, not /dev/vfio/{group}"
                elif self._vfio.fd_target(container_fd).rsplit("/", 2)[-2:] != ["vfio", "vfio"]:
                    problem = f"the container file is {self._vfio.fd_target(container_fd)}, not /dev/vfio/vfio"
                else:
                    try:
                        flags = self._vfio.group_get_status(group_fd)
                    except MsixdError as err:
                        flags, problem = 0, str(err)
                    wanted = kvfio.VFIO_GROUP_FLAGS_VIABLE | kvfio.VFIO_GROUP_FLAGS_CONTAINER_SET
                    if not problem and flags & wanted != wanted:
                        problem = f"VFIO_GROUP_GET_STATUS says {flags:#x}: not viable with a container set"
            if problem:
                log.warning("VFIO group not adopted", group=group, why=problem)
                outcome.refused[f"group {group}"] = problem
                for name, fd in pair.values():
                    self._close(name, fd)
                continue
            self._owner.adopt_group(group, pair["g"][1], pair["c"][1])
            adopted.add(group)
        return adopted

    # Devices

    def _adopt_device(self, bdf: str, name: str, device_fd: int, groups: set[int],
                      parsed: list[tuple[Name, str, int]], lease_facts: dict[str, dict[str, Any]],
                      outcome: Adoption) -> OwnedDevice:
        vfio = self._vfio
        device = pci.read_device(self._roots, bdf)
        assert device is not None
        if device.driver != "vfio-pci":
            raise _Refused(f"bound to {device.driver or 'no driver'} now, not vfio-pci")
        if device.iommu_group not in groups:
            raise _Refused(f"its IOMMU group {device.iommu_group} was not adopted")
        target = vfio.fd_target(device_fd)
        if target != "anon_inode:[vfio-device]":
            raise _Refused(f"the device file is {target or 'not open'}, not a VFIO device file")
        if not vfio.device_get_info(device_fd).flags & kvfio.VFIO_DEVICE_FLAGS_PCI:
            raise _Refused("the device file is not a PCI device's")
        info = vfio.device_get_irq_info(device_fd, kvfio.VFIO_PCI_MSIX_IRQ_INDEX)
        if device.msix is None or info.count != device.msix.table_size:
            shown = device.msix.table_size if device.msix else "no"
            raise _Refused(f"the device file has {info.count} MSI-X IRQs, sysfs {shown} table entries")
        config = vfio.read_config(device_fd, 0, 0x30)
        if len(config) < 0x30:
            raise _Refused("its config space could not be read through the device file")
        vendor, device_id = struct.unpack_from("<HH", config, 0)
        class_code = int.from_bytes(config[9:12], "little")
        sub_vendor, sub_device = struct.unpack_from("<HH", config, 0x2C)
        seen = (vendor, device_id, class_code, sub_vendor, sub_device)
        expected = (device.vendor_id, device.device_id, device.class_code, device.subsystem_vendor_id,
                    device.subsystem_device_id)
        if seen != expected:
            raise _Refused("the device file's config space is another device's: "
                           f"{vendor:04x}:{device_id:04x} class {class_code:06x}, sysfs "
                           f"{device.vendor_id:04x}:{device.device_id:04x} class {device.class_code:06x}")
        assert device.iommu_group is not None
        owned = OwnedDevice(bdf=bdf, group=device.iommu_group, device_fd=device_fd, table_size=info.count,
                            dynamic=not info.noresize, identity=pci.device_identity(self._roots, bdf))
        self._store.adopted(name)
        handlers = self._handlers(bdf)
        owned.allocated = len(kirq.msi_irqs(self._roots, bdf))
        leased = {int(i) for facts in lease_facts.values() if facts.get("bdf") == bdf
                  for i in facts.get("vectors", []) if isinstance(i, int)}
        previous = self._store.counts(bdf)
        candidates: dict[int, list[tuple[str, int]]] = {}
        for what, stored_name, fd in parsed:
            if what.kind == "v" and what.bdf == bdf:
                if vfio.fd_target(fd) != "anon_inode:[eventfd]" or what.index not in handlers:
                    why = "not an eventfd" if what.index in handlers else "its vector has no handler"
                    log.info("stored eventfd closed", bdf=bdf, vector=what.index, why=why)
                    self._close(stored_name, fd)
                    continue
                vfio.set_nonblocking(fd)  # msixd reads its eventfds without waiting
                candidates.setdefault(what.index, []).append((stored_name, fd))
        counted = 0
        for index in sorted(handlers):
            found = candidates.get(index, [])
            chosen, extra = self._installed(owned, index, found, index in leased and len(found) == 1)
            for stored_name, fd in found:
                if (stored_name, fd) != chosen:
                    self._close(stored_name, fd)
            if chosen is None:
                log.warning("a vector had no eventfd of msixd's: given a fresh one", bdf=bdf, vector=index)
                fresh = vfio.new_eventfd()
                owned.names[fresh] = fresh_name = vector_name(bdf, index)
                self._store.keep(fresh_name, fresh)
                vfio.msix_set_triggers(device_fd, index, [fresh])
                owned.eventfds[index] = fresh
            else:
                owned.eventfds[index] = chosen[1]
                owned.names[chosen[1]] = chosen[0]
            owned.counts[index] = previous.get(index, 0) + extra
            counted += extra
        owned.eventfds = dict(sorted(owned.eventfds.items()))
        self._adopt_request(owned, parsed)
        outcome.counted[bdf] = counted
        self._owner.adopt_device(owned)
        log.info("device adopted from systemd's store", bdf=bdf, vectors=len(owned.eventfds), allocated=owned.allocated,
                 dynamic=owned.dynamic, counted_meanwhile=counted)
        return owned

    def _handlers(self, bdf: str) -> set[int]:
        """MSI-X indexes that have vfio-pci's handler installed now."""
        found = set()
        for number in kirq.msi_irqs(self._roots, bdf):
            sys_irq = kirq.read_sys_irq(self._roots, number)
            if sys_irq is None:
                continue
            index = kirq.vector_index(bdf, sys_irq.chip_name, sys_irq.hwirq, sys_irq.actions)
            if index is not None and f"vfio-msix[{index[0]}]({bdf})" in sys_irq.actions:
                found.add(index[0])
        return found

    def _installed(self, device: OwnedDevice, index: int, candidates: list[tuple[str, int]],
                   leased: bool) -> tuple[tuple[str, int] | None, int]:
        """Which candidate eventfd the kernel signals for the vector, and what it counted meanwhile.

        A leased vector's single eventfd is taken as it is (a loopback would reach its holder).
        Otherwise one loopback trigger: the installed eventfd is the one it reaches; the count
        read includes it, and it is taken off again."""
        vfio = self._vfio
        if not candidates:
            return None, 0
        if leased:
            return candidates[0], 0
        before = {fd: vfio.read_eventfd(fd) for _, fd in candidates}
        vfio.msix_trigger(device.device_fd, index)
        for candidate in candidates:
            after = vfio.read_eventfd(candidate[1])
            if after >= 1:
                return candidate, before[candidate[1]] + after - 1
        return None, 0

    def _adopt_request(self, device: OwnedDevice, parsed: list[tuple[Name, str, int]]) -> None:
        vfio = self._vfio
        stored = [(name, fd) for what, name, fd in parsed if what.kind == "r" and what.bdf == device.bdf]
        fd = -1
        for name, candidate in stored:
            if fd < 0 and vfio.fd_target(candidate) == "anon_inode:[eventfd]":
                fd = candidate
                vfio.set_nonblocking(fd)
            else:
                self._close(name, candidate)
        if fd < 0:
            fd = vfio.new_eventfd()
            self._store.keep(request_name(device.bdf), fd)
        asked = vfio.read_eventfd(fd)
        try:
            vfio.request_set_trigger(device.device_fd, fd)
        except MsixdError as err:
            log.warning("no release channel: unbinding or removing the device will wait for msixd to stop",
                        bdf=device.bdf, error=str(err))
        if asked:  # the kernel asked for the device back while msixd restarted: the keeper answers it
            vfio.write_eventfd(fd, asked)
            log.warning("the kernel asked for the device back while msixd restarted", bdf=device.bdf)
        device.request_fd = fd

    # Leases

    def _lease_facts(self) -> dict[str, dict[str, Any]]:
        leases = self._store.facts.get("leases", {})
        return {lease: facts for lease, facts in leases.items() if isinstance(facts, dict)}

    def _adopt_leases(self, parsed: list[tuple[Name, str, int]], facts: dict[str, dict[str, Any]],
                      adopted: set[str], outcome: Adoption) -> None:
        connections = {what.lease: (name, fd) for what, name, fd in parsed if what.kind == "l"}
        for lease_id, lease_facts in facts.items():
            connection = connections.pop(lease_id, None)
            try:
                lease = _lease(lease_id, lease_facts)
            except (KeyError, TypeError, ValueError):
                log.warning("lease facts unreadable: lease ended", lease=lease_id[:40])
                self._store.forget_lease(lease_id)
                if connection is not None:
                    self._close(*connection)
                continue
            problem = ""
            if lease.bdf not in adopted:
                problem = "its device was not adopted"
            elif connection is None:
                problem = "its connection was not kept"
            else:
                target = self._vfio.fd_target(connection[1])
                if not target.startswith("socket:"):
                    problem = f"its connection is {target or 'not open'}, not a socket"
            if not problem and connection is not None:
                try:
                    credentials = peercred.peer_credentials_of(connection[1])
                except OSError as err:
                    problem = f"its connection has no peer: {err.strerror}"
                else:
                    if credentials.uid != lease.holder.uid:
                        problem = f"its connection's peer is uid {credentials.uid}, not {lease.holder.uid}"
            if problem:
                log.warning("lease not adopted: it ends", lease=lease_id, bdf=lease.bdf, why=problem)
                outcome.refused[f"lease {lease_id}"] = problem
                self._store.forget_lease(lease_id)
                if connection is not None:
                    self._close(*connection)
                if lease.bdf in adopted:  # taken back as the lease asked: the holder's copies count no more
                    tag = LeaseTag(lease.id, lease.holder.uid, lease.holder.pid, lease.since)
                    self._owner.mark_leased(lease.bdf, lease.vectors, tag)
                    self._owner.unlease(lease.bdf, lease_id, lease.on_return is Return.RELEASE)
                continue
            assert connection is not None
            tag = LeaseTag(lease.id, lease.holder.uid, lease.holder.pid, lease.since)
            self._owner.mark_leased(lease.bdf, lease.vectors, tag)
            self._leases.restore(lease)
            outcome.leases.append(AdoptedLease(lease, connection[1], connection[0]))
        for name, fd in connections.values():  # connections without facts
            log.warning("closed a lease connection without lease facts", name=name[:80])
            self._close(name, fd)


def _lease(lease_id: str, facts: dict[str, Any]) -> Lease:
    holder = Holder(int(facts["uid"]), int(facts["gid"]), int(facts["pid"]),
                    frozenset(int(g) for g in facts.get("groups", [])))
    return Lease(lease_id, str(facts["bdf"]), tuple(int(v) for v in facts["vectors"]),
                 tuple(int(i) for i in facts["irqs"]), holder, float(facts["since"]), bool(facts["device_fd"]),
                 Return(facts["on_return"]), tuple(int(v) for v in facts.get("grown", [])))

