"""Coexisting with irqbalance: the IRQs msixd places are banned from it, through its control socket.

irqbalance re-places every IRQ it has not banned when it starts, at every
rescan (SIGHUP, CPU hotplug) and when it sees a new IRQ, and never notices
that someone else moved one. So every IRQ a policy rule places, and every
owned vector msixd placed, is put on irqbalance's list of banned IRQs; the
IRQs that leave the policy come off it again.

The list lives only in irqbalance's memory and a "settings ban irqs" command
replaces all of it, the IRQs its operator banned with --banirq too. So the
link reads the list first ("setup"), keeps every IRQ it did not put there
itself, adds its own, sends the whole list and reads it back. What msixd put
there is remembered in its state directory, so a restarted msixd takes back
its own bans instead of keeping them forever as someone else's; a new
irqbalance (a new pid, or the same pid started again) starts with none of
them, and gets them sent again.

msixd leaves its bans in place when it stops: a restart of msixd must not let
irqbalance move the vectors it pinned meanwhile.

Talking to irqbalance happens on this link's own thread: an irqbalance before
1.9.4 can leave its socket unanswered for a whole pass (10 s by default)
while it sleeps after a rescan, and nothing else in msixd waits for that.
"""

from __future__ import annotations

import enum
import json
import os
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import structlog

from msixd.kernel import irqbalance as kirqbalance
from msixd.kernel.cpulist import format_cpulist
from msixd.kernel.roots import KernelRoots

log = structlog.get_logger(__name__)
# A process irqbalance-ui would take for irqbalance may not have its socket yet: it builds its
# view of the machine first. After this long without one, it has none.
SOCKET_GRACE_SECONDS = 10.0
TIMEOUT_SECONDS = 20.0
# Whether the irqbalance known is still there, or one has a socket now: one stat, every second (irqbalance
# balances its first time a pass after it starts, 10 s by default: the bans must be there before).
CHECK_SECONDS = 1.0
# Its banned list is read back this often even when nothing changed (irqbalance-ui may have changed it).
VERIFY_SECONDS = 30.0
# A look through all of /proc, as irqbalance-ui does, for an irqbalance without a socket.
SCAN_SECONDS = 10.0


class LinkState(enum.Enum):
    DISABLED = "disabled"  # irqbalance = "ignore" in msixd's configuration
    NOT_RUNNING = "not_running"
    STARTING = "starting"  # found, its socket not there yet
    NO_SOCKET = "no_socket"  # running without a control socket
    BANNED = "banned"  # every IRQ msixd wants banned is banned
    PARTIAL = "partial"  # irqbalance kept only part of the list
    FAILED = "failed"  # the socket refused or did not answer


@dataclass(frozen=True)
class LinkStatus:
    state: LinkState
    pid: int = 0
    address: str = ""
    wanted: frozenset[int] = frozenset()  # IRQs msixd wants banned
    banned: frozenset[int] = frozenset()  # irqbalance's whole list, as last read back
    detail: str = ""


class IrqbalanceLink:
    def __init__(self, roots: KernelRoots, state_file: Path | None, enabled: bool = True,
                 abstract_fallback: bool = True, check_every: float = CHECK_SECONDS) -> None:
        self._roots = roots
        self._state_file = state_file
        self.enabled = enabled
        self._abstract = abstract_fallback
        self._check_every = check_every
        self._lock = threading.Lock()  # a leaf: guards the fields below, nothing is called under it
        self._wanted: frozenset[int] = frozenset()
        self._status = LinkStatus(LinkState.NOT_RUNNING)
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._instance: kirqbalance.Instance | None = None
        self._seen_at = 0.0
        self._scanned = -SCAN_SECONDS
        self._ours: frozenset[int] = frozenset()  # what msixd put on the present irqbalance's list
        self._saved: tuple[kirqbalance.Instance, frozenset[int]] | None = None  # the record in the state dir
        self._last_banned: frozenset[int] = frozenset()
        self._reported: tuple[object, ...] = ()
        self.heartbeat = time.monotonic()
        self.syncs = 0
        self._thread = threading.Thread(target=self._run, name="irqbalance", daemon=True)

    # What the reconciler calls

    def want(self, irqs: frozenset[int]) -> None:
        """Ban exactly these IRQs (and whatever others banned); returns at once."""
        with self._lock:
            changed = irqs != self._wanted
            self._wanted = irqs
        if changed:
            self._dirty.set()

    def status(self) -> LinkStatus:
        with self._lock:
            return self._status

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._dirty.set()
        self._thread.join(timeout=TIMEOUT_SECONDS + 5)

    def poke(self) -> None:
        """Look again now (a test, or a reload)."""
        self._dirty.set()

    # The thread

    def _run(self) -> None:
        self._load_ours()
        verified = 0.0
        while not self._stop.is_set():
            self.heartbeat = time.monotonic()
            asked = self._dirty.wait(self._check_every)
            self._dirty.clear()
            if self._stop.is_set():
                return
            verify = asked or time.monotonic() - verified >= VERIFY_SECONDS
            try:
                self.step(verify)
            except Exception:  # noqa: BLE001 - the link must not die of one irqbalance
                log.exception("irqbalance link step failed")
            if verify:
                verified = time.monotonic()

    def _set(self, status: LinkStatus) -> None:
        with self._lock:
            self._status = status
        key = (status.state, status.pid, status.detail)
        if key != self._reported:  # each change is logged once, not every check
            self._reported = key
            fields = {"pid": status.pid or None, "detail": status.detail or None}
            if status.state in (LinkState.NO_SOCKET, LinkState.FAILED, LinkState.PARTIAL):
                log.warning(f"irqbalance: {status.state.value}", **fields)
            else:
                log.info(f"irqbalance: {status.state.value}", **fields,
                         banned=format_cpulist(status.wanted) if status.state is LinkState.BANNED else None)

    def step(self, verify: bool = True) -> None:
        """One look at irqbalance: find it, and (when asked to verify, or when it is new) bring its
        banned list in line."""
        with self._lock:
            wanted = self._wanted
        if not self.enabled:
            self._set(LinkStatus(LinkState.DISABLED, wanted=wanted,
                                 detail="irqbalance = \"ignore\" in msixd's configuration"))
            return
        if self._instance is None or not kirqbalance.alive(self._roots, self._instance):
            instance = self._discover()
            if instance != self._instance:
                self._instance, self._seen_at = instance, time.monotonic()
                self._ours = self._remembered(instance)
                verify = True
        instance = self._instance
        if instance is None:
            self._set(LinkStatus(LinkState.NOT_RUNNING, wanted=wanted))
            return
        where = kirqbalance.address(self._roots, instance.pid, self._abstract)
        if where is None:
            waited = time.monotonic() - self._seen_at
            if waited < SOCKET_GRACE_SECONDS:
                self._set(LinkStatus(LinkState.STARTING, instance.pid, wanted=wanted))
                return
            self._set(LinkStatus(
                LinkState.NO_SOCKET, instance.pid, wanted=wanted,
                detail=f"irqbalance (pid {instance.pid}) has no control socket "
                       f"({kirqbalance.socket_path(self._roots, instance.pid)} does not exist: built without it, "
                       "or without /run/irqbalance): msixd cannot ban the IRQs it places from it, and irqbalance "
                       "will move them at its next rescan. Ban them in irqbalance's own configuration: --banirq "
                       "for each IRQ, --banmod for a driver, or a --policyscript answering ban=true for the "
                       "devices; IRQBALANCE_BANNED_CPULIST keeps irqbalance's own placements off the CPUs named, "
                       "but does not stop it moving IRQs that are not banned (docs/policy.md)"))
            return
        shown = where if isinstance(where, str) else "the abstract socket"
        if not verify and self.status().state in (LinkState.BANNED, LinkState.PARTIAL) and \
                self.status().pid == instance.pid:
            return
        try:
            self._sync(where, wanted)
        except kirqbalance.IrqbalanceError as err:
            self._set(LinkStatus(LinkState.FAILED, instance.pid, shown, wanted, detail=err.reason))
            return
        with self._lock:
            banned = self._last_banned
        missing = wanted - banned
        if missing:
            self._set(LinkStatus(
                LinkState.PARTIAL, instance.pid, shown, wanted, banned,
                detail=f"irqbalance kept {len(wanted) - len(missing)} of the {len(wanted)} IRQs msixd bans "
                       f"(not IRQ {format_cpulist(missing)}): irqbalance before 1.9.4 reads 500 bytes of a "
                       "command, later ones 16 KiB"))
        else:
            self._set(LinkStatus(LinkState.BANNED, instance.pid, shown, wanted, banned))

    def _discover(self) -> kirqbalance.Instance | None:
        """The irqbalance to talk to: one whose control socket is there (a cheap look, every check),
        else, every SCAN_SECONDS, any process irqbalance-ui would take for it (a look at all of /proc)."""
        with_socket = kirqbalance.with_socket(self._roots)
        if with_socket:
            return with_socket[0]
        now = time.monotonic()
        if self._instance is None and now - self._scanned < SCAN_SECONDS:
            return None
        self._scanned = now
        found = kirqbalance.find(self._roots)
        return found[0] if found else None

    def _sync(self, where: str | bytes, wanted: frozenset[int]) -> None:
        current = kirqbalance.setup(where, TIMEOUT_SECONDS).banned_irqs
        foreign = current - self._ours  # banned by its operator (--banirq) or irqbalance-ui
        desired = foreign | wanted
        if desired != current:
            kirqbalance.ban(where, desired, TIMEOUT_SECONDS)
            current = kirqbalance.setup(where, TIMEOUT_SECONDS).banned_irqs
            self.syncs += 1
        ours = (wanted - foreign) & current
        if ours != self._ours:
            self._ours = ours
            self._remember(ours)
        with self._lock:
            self._last_banned = current

    # What msixd banned, kept across its restarts

    def _remembered(self, instance: kirqbalance.Instance | None) -> frozenset[int]:
        saved = self._saved
        if instance is None or saved is None or saved[0] != instance:
            return frozenset()
        return saved[1]

    def _load_ours(self) -> None:
        if self._state_file is None:
            return
        try:
            document = json.loads(self._state_file.read_text())
            instance = kirqbalance.Instance(int(document["pid"]), int(document["start_time"]))
            irqs = frozenset(int(irq) for irq in document["banned_irqs"])
        except FileNotFoundError:
            return
        except (OSError, ValueError, KeyError, TypeError) as err:
            log.warning("irqbalance: the record of msixd's bans is unreadable; irqbalance's present bans are "
                        "kept as someone else's", path=str(self._state_file), error=str(err)[:200])
            return
        self._saved = (instance, irqs)

    def _remember(self, ours: frozenset[int]) -> None:
        instance = self._instance
        if self._state_file is None or instance is None:
            return
        self._saved = (instance, ours)
        document = {"pid": instance.pid, "start_time": instance.start_time, "banned_irqs": sorted(ours)}
        tmp = None
        try:
            self._state_file.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{self._state_file.name}.", dir=self._state_file.parent)
            with os.fdopen(fd, "w") as out:
                json.dump(document, out)
            os.replace(tmp, self._state_file)
        except OSError as err:
            if tmp is not None:
                Path(tmp).unlink(missing_ok=True)
            log.warning("irqbalance: cannot record msixd's bans", path=str(self._state_file), error=str(err))
