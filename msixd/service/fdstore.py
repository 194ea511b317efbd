"""What msixd keeps in systemd's file descriptor store, and the facts it writes beside them.

Under systemd with FileDescriptorStoreMax= set, every VFIO container, group
and device file msixd opens, every eventfd it gives the kernel, each device's
release channel and each lease's connection go into the store as soon as they
exist, each under its own name, and leave it when msixd closes them. Beside
them, one memory file (msixd/kernel/memfile.py) holds what the kernel cannot
tell a new msixd: the interrupts counted on each vector so far, and the
leases with their holders. `systemctl restart` hands the store to the next
msixd (LISTEN_FDS), which adopts what checks out against the kernel
(msixd/service/adopt.py): the kernel never sees the files closed, so MSI-X
stays enabled, the IRQs and their affinities stay as they are, and every
eventfd keeps counting meanwhile. `systemctl stop` closes the store: the last
reference to each file goes, and the kernel disables MSI-X
(vfio_pci_core_close_device) as when msixd closed them itself.

Names (FDNAME: printable ASCII, no ':', at most 255 characters; a PCI
address is written with '-'): c-<group> and g-<group> for a group's container
and group files, d-<bdf> a device file, r-<bdf> its release channel,
v-<bdf>-<index>-<token> a vector's eventfd (a token per eventfd: a vector's
eventfd may be replaced, and each name is removed on its own), l-<lease> a
lease's connection, and "runtime" the memory file.
"""

from __future__ import annotations

import json
import re
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import structlog

from msixd.kernel import memfile, sdnotify

log = structlog.get_logger(__name__)
RUNTIME = "runtime"
_NAME = re.compile(r"(?P<kind>[cgdrvl])-(?P<rest>[!-~]+)")


def key(bdf: str) -> str:
    return bdf.replace(":", "-")


def bdf_of(text: str) -> str:
    return text.replace("-", ":", 2)


def container_name(group: int) -> str:
    return f"c-{group}"


def group_name(group: int) -> str:
    return f"g-{group}"


def device_name(bdf: str) -> str:
    return f"d-{key(bdf)}"


def request_name(bdf: str) -> str:
    return f"r-{key(bdf)}"


def vector_name(bdf: str, index: int) -> str:
    return f"v-{key(bdf)}-{index}-{secrets.token_hex(3)}"


def lease_name(lease: str) -> str:
    return f"l-{lease}"


@dataclass(frozen=True)
class Name:
    """A store name taken apart: kind c, g, d, r, v or l; group, bdf, index, lease as they apply."""

    kind: str
    group: int = -1
    bdf: str = ""
    index: int = -1
    lease: str = ""


def parse(name: str) -> Name | None:
    match = _NAME.fullmatch(name)
    if match is None:
        return None
    kind, rest = match.group("kind"), match.group("rest")
    if kind in "cg":
        return Name(kind, group=int(rest)) if rest.isdigit() and len(rest) < 10 else None
    if kind == "l":
        return Name(kind, lease=rest)
    found = re.fullmatch(r"([0-9a-f]{4}-[0-9a-f]{2}-[0-9a-f]{2}\.[0-7])(?:-(\d{1,4})-[0-9a-f]+)?", rest)
    if found is None or (kind == "v") != (found.group(2) is not None):
        return None
    return Name(kind, bdf=bdf_of(found.group(1)), index=int(found.group(2)) if kind == "v" else -1)


class FdStore:
    """The store as msixd uses it. Without systemd (or with FileDescriptorStoreMax=0) it is
    inactive and every method does nothing: msixd behaves as it always did."""

    def __init__(self, max_fds: int = 0, send: Callable[[str, list[int]], bool] = sdnotify.notify_fds,
                 memory: int | None = None, facts: dict[str, Any] | None = None) -> None:
        self.max_fds = max_fds
        self._send = send
        self._lock = threading.Lock()  # a leaf: dictionary work, one datagram, one memory file write
        self._names: set[str] = set()
        self._full_said = False
        self.facts: dict[str, Any] = facts or {"devices": {}, "leases": {}}
        self._memory = memory
        if self.active and memory is None:
            self._memory = memfile.create("msixd-runtime")
            self.keep(RUNTIME, self._memory)

    @property
    def active(self) -> bool:
        return self.max_fds > 0

    @classmethod
    def from_environment(cls, handed: list[tuple[str, int]]) -> FdStore:
        """The store systemd offers this process, with the memory file it handed back (if any)."""
        max_fds = sdnotify.store_max()
        memory = next((fd for name, fd in handed if name == RUNTIME), None)
        facts = None
        if memory is not None:
            record = memfile.read(memory)
            try:
                facts = json.loads(record) if record else None
            except ValueError:
                facts = None
            if not isinstance(facts, dict) or not isinstance(facts.get("devices"), dict) \
                    or not isinstance(facts.get("leases"), dict):
                log.warning("the runtime facts handed back are unreadable; counts and leases start afresh")
                facts = None
        store = cls(max_fds, memory=memory if max_fds else None, facts=facts)
        if memory is not None:
            store._names.add(RUNTIME)
        return store

    # Descriptors

    def keep(self, name: str, fd: int) -> None:
        if not self.active:
            return
        with self._lock:
            if name in self._names:
                return
            if len(self._names) >= self.max_fds:
                if not self._full_said:
                    self._full_said = True
                    log.warning("systemd's file descriptor store is full: what does not fit is not kept across a "
                                "restart (raise FileDescriptorStoreMax= and MSIXD_FDSTORE=)", max_fds=self.max_fds)
                return
            self._send(f"FDSTORE=1\nFDNAME={name}\nFDPOLL=0", [fd])
            self._names.add(name)

    def drop(self, name: str) -> None:
        if not self.active:
            return
        with self._lock:
            if name not in self._names:
                return
            self._names.discard(name)
            self._send(f"FDSTOREREMOVE=1\nFDNAME={name}", [])

    def adopted(self, name: str) -> None:
        """A name handed back at start and kept: it is in the store already."""
        if self.active:
            with self._lock:
                self._names.add(name)

    def kept(self) -> set[str]:
        with self._lock:
            return set(self._names)

    # Facts

    def record_device(self, bdf: str, counts: dict[int, int]) -> None:
        if self.active:
            with self._lock:
                self.facts["devices"][bdf] = {"counts": {str(i): n for i, n in sorted(counts.items())}}
                self._write()

    def forget_device(self, bdf: str) -> None:
        if self.active:
            with self._lock:
                if self.facts["devices"].pop(bdf, None) is not None:
                    self._write()

    def record_lease(self, lease: str, facts: dict[str, Any]) -> None:
        if self.active:
            with self._lock:
                self.facts["leases"][lease] = facts
                self._write()

    def forget_lease(self, lease: str) -> None:
        if self.active:
            with self._lock:
                if self.facts["leases"].pop(lease, None) is not None:
                    self._write()

    def counts(self, bdf: str) -> dict[int, int]:
        """What the previous msixd counted on the device's vectors."""
        with self._lock:
            raw = self.facts["devices"].get(bdf, {}).get("counts", {})
        return {int(i): int(n) for i, n in raw.items() if str(i).isdigit() and isinstance(n, int) and n >= 0}

    def _write(self) -> None:
        if self._memory is not None:
            memfile.write(self._memory, json.dumps(self.facts, sort_keys=True).encode())


NO_STORE = FdStore()
