"""Keeps owned devices owned: lets go when the kernel asks, takes them back when they return.

The kernel asks for a device back both when an operator unbinds it from
vfio-pci and when it is being removed (hot unplug, `remove` in sysfs). The two
look the same at that moment; what follows tells them apart: a removed device
disappears from sysfs, an unbound one stays. A removal and a rescan can both
happen between two looks (the kernel is quick, the keeper polls), so absence
is not the only sign: a device found again is a new sysfs directory with a new
identity (pci.device_identity), an unbound one keeps its own. Only a device
that disappeared and came back (a rescan, a re-plug) is taken back, bound to
vfio-pci again if msixd had bound it, with its vector count and placements. An
unbound one is left to the operator.
"""

from __future__ import annotations

import threading
import time

import structlog

from msixd.errors import DeviceNotFound, MsixdError
from msixd.kernel import pci
from msixd.kernel.roots import KernelRoots
from msixd.service.binding import Binding
from msixd.service.owner import GivenBack, Owner

log = structlog.get_logger(__name__)
audit = structlog.get_logger("msixd.audit")
_TAKEN_BACK = "the device was removed and found again (a rescan or a re-plug)"
# How long a device asked back may still be seen before it counts as unbound, not removed.
REMOVAL_GRACE_SECONDS = 10.0


class Keeper:
    def __init__(self, roots: KernelRoots, owner: Owner, binding: Binding) -> None:
        self._roots = roots
        self._owner = owner
        self._binding = binding
        self._asked: dict[str, tuple[float, int | None]] = {}  # bdf -> when the kernel asked, identity then
        self._gone: set[str] = set()  # asked for, then seen absent: removed
        self._stop = threading.Event()
        self.heartbeat = time.monotonic()  # each turn of the loop: liveness watches it
        self._thread = threading.Thread(target=self._run, name="keeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def released(self, devices: list[GivenBack]) -> None:
        """The owner gave these devices back because the kernel asked."""
        desired = self._owner.desired() if devices else {}
        for device in devices:
            self._asked[device.bdf] = (time.monotonic(), device.identity)
            state = desired.get(device.bdf)
            audit.info("release", bdf=device.bdf, vectors_released=state.vectors if state else None, by="msixd",
                       reason="the kernel asked for the device back (an unbind, or its removal)")

    def _run(self) -> None:
        while not self._stop.is_set():
            self.heartbeat = time.monotonic()
            try:
                self.released(self._owner.handle_release_requests(timeout=0.5, stop=self._stop))
                self.step()
            except Exception:  # noqa: BLE001 - the keeper must not die of one device
                log.exception("keeper step failed")

    def _present(self, bdf: str) -> pci.PciDevice | None:
        try:
            return pci.read_device(self._roots, bdf)
        except DeviceNotFound:
            return None

    def step(self) -> None:
        for bdf, (asked_at, identity) in list(self._asked.items()):
            now = pci.device_identity(self._roots, bdf)
            if now is None:
                del self._asked[bdf]
                self._gone.add(bdf)
                log.warning("device removed; msixd will take it back if it returns", bdf=bdf)
            elif identity is not None and now != identity:
                del self._asked[bdf]
                self._gone.add(bdf)
                log.warning("device removed and found again already", bdf=bdf)
            elif time.monotonic() - asked_at > REMOVAL_GRACE_SECONDS:
                del self._asked[bdf]
                log.warning("device was unbound from vfio-pci, not removed: left alone "
                            "(msixctl bind/enable take it again)", bdf=bdf)
        desired = self._owner.desired()
        for bdf in list(self._gone):
            device = self._present(bdf)
            state = desired.get(bdf)
            if state is None or state.vectors == 0:
                self._gone.discard(bdf)
                continue
            if device is None:
                continue
            try:
                if device.driver != "vfio-pci" and state.previous_driver is not None:
                    self._binding.bind(bdf)
                    audit.info("bind", bdf=bdf, driver="vfio-pci", by="msixd", reason=_TAKEN_BACK)
                self._owner.restore_one(bdf, state)
                self._gone.discard(bdf)
                log.info("device returned and was taken back", bdf=bdf, vectors=state.vectors)
                audit.info("take back", bdf=bdf, vectors=state.vectors, affinities=state.affinities, by="msixd",
                           reason=_TAKEN_BACK)
            except MsixdError as err:
                log.warning("device returned but could not be taken back yet", bdf=bdf, error=str(err))
