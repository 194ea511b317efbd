"""The placement reconciler: makes the kernel's IRQ affinities what the policy says, and keeps them so.

When it looks:

- at start, and on every reload (SIGHUP, ``systemctl reload``) and ``msixctl
  apply``: a full pass over every PCI function with MSI/MSI-X IRQs;
- on kernel uevents (msixd/kernel/uevent.py): a PCI function added, removed,
  bound to a driver or unbound, a network interface or block device added or
  renamed, a CPU going on- or offline: the device concerned is looked at
  again at once, and for a few seconds after (a driver requests its IRQs
  after it binds: nvme from a work item, a NIC when its interface goes up);
- every ``interval`` seconds (drift): each vector a rule places has its
  smp_affinity_list read, and each tracked device its msi_irqs/ listed. A
  vector someone else moved is put back (or, under ``on_drift = "observe"``,
  reported once per move); a device whose IRQs changed, or whose driver
  requested a handler, is looked at again. Without uevents (a container
  outside the host's network namespace) each drift pass also lists every
  other function's IRQs and driver, and looks again at those that changed.

Every write goes through Placement (msixd/service/placement.py): the same
checks, locks, read-back and record as ``msixctl affinity``. Each correction
is an audit line and counts in ``msixd_policy_corrections_total{reason}``:
``start``, ``apply``, ``hotplug`` (after a uevent), ``new_vector`` (an IRQ that
appeared, or got its handler) and ``drift`` (moved by someone else). A vector
the kernel will not move (a managed IRQ: smp_affinity_list is read-only since
6.12, the write fails with EIO before) is reported once and never retried,
as TuneD's irq plugin marks IRQs "unchangeable"; so is a CPU set the kernel
rejects, until the policy or the device changes.

A ``balance`` rule's choice is measured once (irq + softirq time per CPU,
msixd/kernel/cpuload.py) when the rule is applied or a vector appears, and
kept afterwards: a placement that followed the load every pass would itself
be the churn msixd is there to stop.

Locks: ``_pass_lock`` runs one pass (or one dry run) at a time; it comes
before every lock of the Owner's order (msixd/service/owner.py): a pass
places through Placement, which takes the device's lock, then its own.
``_state_lock`` is a leaf guarding what readers copy out (the claims and the
last report); nothing is called under it.
"""

from __future__ import annotations

import enum
import queue
import threading
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol, TypeVar

import structlog

from msixd.errors import DeviceNotFound, KernelFormatError, MsixdError
from msixd.kernel import cpuload, pci, system, vectors
from msixd.kernel import irq as kirq
from msixd.kernel.cpulist import format_cpulist
from msixd.kernel.irq import IndexSource
from msixd.kernel.roots import KernelRoots
from msixd.kernel.uevent import Lost, Uevent
from msixd.service.coalesce import Coalescer
from msixd.service.irqbalance import IrqbalanceLink, LinkStatus
from msixd.service.owner import Owner
from msixd.service.placement import Placement
from msixd.service.policy import DeviceFacts, OnDrift, Place, Policy, Rule, load

log = structlog.get_logger(__name__)
audit = structlog.get_logger("msixd.audit")
T = TypeVar("T")

# After a uevent on a device, look at it again this long (seconds after the event).
SETTLE_AFTER = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 15.0)
UEVENT_SUBSYSTEMS = frozenset({"pci", "net", "block", "cpu"})


class Reason(enum.Enum):
    START = "start"
    APPLY = "apply"
    HOTPLUG = "hotplug"
    NEW_VECTOR = "new_vector"
    DRIFT = "drift"


class VectorState(enum.Enum):
    IN_PLACE = "in_place"  # where its rule says
    PENDING = "pending"  # elsewhere: the next pass moves it (what a diff lists)
    DRIFTED = "drifted"  # moved by someone else, and its rule only observes
    UNCHANGEABLE = "unchangeable"  # the kernel will not move it
    NO_HANDLER = "no_handler"  # no /proc/irq/<irq> yet: placed once its driver requests it
    ERROR = "error"  # the rule cannot be applied to it here
    LEFT_ALONE = "left_alone"  # its rule says leave


PLACING = frozenset({VectorState.IN_PLACE, VectorState.PENDING, VectorState.DRIFTED, VectorState.NO_HANDLER})


@dataclass(frozen=True)
class Decision:
    """What the policy says about one vector, and where the kernel has it."""

    bdf: str
    index: int
    irq: int
    rule: Rule
    shadowed: tuple[str, ...]
    affinity: frozenset[int]
    target: frozenset[int] | None
    state: VectorState
    detail: str = ""


@dataclass(frozen=True)
class Correction:
    """One placement a pass made (or tried)."""

    bdf: str
    index: int
    irq: int
    rule: str
    previous: frozenset[int]
    target: frozenset[int]
    reason: Reason
    effective: frozenset[int] = frozenset()
    error: str = ""


@dataclass
class Stats:
    passes: int = 0
    full_passes: int = 0
    last_pass_seconds: float = 0.0
    last_pass_time: float = 0.0  # seconds since the epoch
    corrections: Counter[str] = field(default_factory=Counter)
    failures: int = 0
    drift_observed: int = 0
    uevents: int = 0
    uevents_lost: int = 0
    pass_seconds_total: float = 0.0


@dataclass(frozen=True)
class Report:
    policy: Policy
    decisions: tuple[Decision, ...]
    irqbalance: LinkStatus | None
    interval: float
    uevents: bool
    stats: Stats


@dataclass(frozen=True)
class Applied:
    policy: Policy
    decisions: tuple[Decision, ...]
    corrections: tuple[Correction, ...]
    dry_run: bool


class UeventSource(Protocol):
    def receive(self, timeout: float | None) -> Uevent | Lost | None: ...

    def close(self) -> None: ...


@dataclass
class _Vector:
    irq: int
    index: int
    actions: tuple[str, ...]


@dataclass
class _Device:
    facts: DeviceFacts
    local_cpus: frozenset[int]
    irqs: frozenset[int]
    vectors: list[_Vector]
    decisions: dict[int, Decision] = field(default_factory=dict)  # by IRQ
    # Made from the decisions after each pass that changed them (_summarize):
    watch: list[tuple[int, bytes | None]] = field(default_factory=list)  # what a drift pass reads
    placed: frozenset[int] = frozenset()  # IRQs a rule places: banned from irqbalance
    claims: dict[tuple[str, int], str] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)


@dataclass(frozen=True)
class _Context:
    """What one pass reads once: CPUs, names, load."""

    cpus: system.Cpus
    banned: frozenset[int]
    interfaces: dict[str, frozenset[str]]
    blocks: dict[str, frozenset[str]]
    load: dict[int, float]


def _drop(table: dict[tuple[str, int], T], bdf: str, keep: frozenset[int]) -> None:
    """Remove the device's entries (keyed by BDF and IRQ) whose IRQ is not in keep."""
    for key in [k for k in table if k[0] == bdf and k[1] not in keep]:
        del table[key]


class Reconciler:
    def __init__(self, roots: KernelRoots, placement: Placement, owner: Owner, policy_dir: Path,
                 interval: float = 10.0, irqbalance: IrqbalanceLink | None = None,
                 uevents: UeventSource | None = None) -> None:
        self._roots = roots
        self._placement = placement
        self._owner = owner
        self.policy_dir = policy_dir
        self.interval = interval
        self._irqbalance = irqbalance
        self._uevents = uevents
        self._policy = Policy(directory=str(policy_dir))
        self._pass_lock = threading.Lock()
        self._state_lock = threading.Lock()
        self._coalescer = Coalescer()
        # Pass state: touched only under _pass_lock.
        self._devices: dict[str, _Device] = {}
        self._owned_irqs: dict[str, frozenset[int]] = {}  # owned device -> IRQs of its placed vectors
        self._placed: dict[tuple[str, int], frozenset[int]] = {}  # (bdf, irq) -> CPUs msixd placed or found
        self._unchangeable: dict[tuple[str, int], str] = {}  # (bdf, irq) -> why, reported once
        self._rejected: dict[tuple[str, int], tuple[frozenset[int], str]] = {}  # a target the kernel refused
        self._balanced: dict[tuple[str, int], tuple[str, int]] = {}  # (bdf, index) -> (rule, CPU)
        self._observed: dict[tuple[str, int], frozenset[int]] = {}  # drift reported under observe
        self._load_sample: dict[int, float] | None = None
        self._settling: dict[str, list[float]] = {}  # bdf -> when to look at it again
        self._untracked: dict[str, tuple[object, ...]] = {}  # without uevents: see _discover
        # Readers' copies: under _state_lock.
        self._claims: dict[tuple[str, int], str] = {}
        self._state_counts: Counter[str] = Counter()
        self._placed_irqs: frozenset[int] = frozenset()
        self._summaries_changed = False
        self.stats = Stats()
        self.heartbeat = time.monotonic()
        self._queue: queue.Queue[tuple[str, object]] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="reconciler", daemon=True)
        self._pump = threading.Thread(target=self._pump_uevents, name="uevents", daemon=True)
        placement.claimed = self.claimed

    # Lifecycle

    def load_policy(self) -> Policy:
        """Read policy.d (PolicyError when a file is wrong) and make it the running policy, without a pass."""
        policy = load(self.policy_dir)
        with self._pass_lock:
            self._policy = policy
        return policy

    def start(self) -> None:
        self._thread.start()
        if self._uevents is not None:
            self._pump.start()

    def stop(self) -> None:
        self._stop.set()
        self._queue.put(("stop", None))
        self._thread.join(timeout=30)
        if self._uevents is not None:
            self._pump.join(timeout=5)
            self._uevents.close()

    def reload(self) -> None:
        """Re-read policy.d and apply it, on the reconciler's thread (SIGHUP)."""
        self._queue.put(("reload", None))

    @property
    def policy(self) -> Policy:
        return self._policy

    # For Placement and the RPCs

    def claimed(self, bdf: str, index: int) -> str | None:
        """The rule (name and where) that places this vector and puts it back when moved, if any."""
        with self._state_lock:
            return self._claims.get((bdf, index))

    def irqbalance_status(self) -> LinkStatus | None:
        return self._irqbalance.status() if self._irqbalance is not None else None

    def vector_states(self) -> Counter[str]:
        """How many vectors the rules select, by state, as the last pass left them (for metrics)."""
        with self._state_lock:
            return Counter(self._state_counts)

    def report(self, bdf: str | None = None) -> Report:
        """Every vector a rule selects (of one device, with bdf), as the kernel has it now (a dry run
        of a full pass). Raises InvalidBdf."""
        bdf = pci.parse_bdf(bdf) if bdf else None
        decisions = self._coalescer.run("report", lambda: self._dry_run(self._policy))
        chosen = tuple(d for d in decisions if bdf is None or d.bdf == bdf)
        return Report(self._policy, chosen, self._irqbalance.status() if self._irqbalance else None,
                      self.interval, self._uevents is not None, replace(self.stats, corrections=Counter(
                          self.stats.corrections)))

    def diff(self) -> tuple[Decision, ...]:
        """The vectors a pass would move now."""
        return tuple(d for d in self.report().decisions if d.state is VectorState.PENDING)

    def apply(self, trial: tuple[str, bytes] | None = None, dry_run: bool = False) -> Applied:
        """Read policy.d (with trial's file added or in place of its namesake) and apply it now;
        with dry_run, only answer what would change. PolicyError when a file is wrong."""
        policy = load(self.policy_dir, trial)
        if dry_run:
            return Applied(policy, tuple(self._dry_run(policy)), (), True)
        with self._pass_lock:
            self._policy = policy
            corrections = self._full_pass(Reason.APPLY, fresh=True)
            decisions = tuple(d for device in self._devices.values() for d in device.decisions.values())
        log.info("policy applied", rules=len(policy.rules), files=list(policy.files), trial=policy.trial or None,
                 corrections=len(corrections))
        return Applied(policy, decisions, tuple(corrections), False)

    # The thread

    def _run(self) -> None:
        try:
            with self._pass_lock:
                self._full_pass(Reason.START, fresh=True)
        except Exception:  # noqa: BLE001 - a bad first pass must not stop the reconciler
            log.exception("policy: the first pass failed")
        next_drift = time.monotonic() + self.interval
        while not self._stop.is_set():
            self.heartbeat = now = time.monotonic()
            due = min([next_drift, *[times[0] for times in self._settling.values()]])
            try:
                item = self._queue.get(timeout=max(0.0, min(due - now, 1.0)))
            except queue.Empty:
                item = None
            items = [item] if item is not None else []
            while True:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if any(kind == "stop" for kind, _ in items):
                return
            try:
                self._handle(items)
                if any(kind == "reload" for kind, _ in items):
                    next_drift = time.monotonic() + self.interval  # the interval may have changed
                if time.monotonic() >= next_drift:
                    with self._pass_lock:
                        self._drift_pass()
                    next_drift = time.monotonic() + self.interval
            except Exception:  # noqa: BLE001 - the reconciler must not die of one pass
                log.exception("policy: pass failed")

    def _handle(self, items: list[tuple[str, object]]) -> None:
        reload = any(kind == "reload" for kind, _ in items)
        events = [value for kind, value in items if kind == "uevent"]
        if reload:
            try:
                policy = load(self.policy_dir)
            except MsixdError as err:
                log.error("policy reload refused; the running policy stays", error=str(err))
            else:
                with self._pass_lock:
                    self._policy = policy
                    corrections = self._full_pass(Reason.APPLY, fresh=True)
                log.info("policy reloaded", rules=len(policy.rules), files=list(policy.files),
                         corrections=len(corrections))
                return
        full = any(isinstance(event, Lost) for event in events)
        touched: set[str] = set()
        for event in events:
            if isinstance(event, Uevent):
                bdf = self._bdf_of(event)
                if event.subsystem == "cpu" or (bdf is None and event.subsystem == "block" and self._uses("block")):
                    full = True
                elif bdf is not None:
                    touched.add(bdf)
                    if event.subsystem == "pci" and event.action in ("remove", "unbind"):
                        self._forget_later(bdf)
                    self._settling[bdf] = [time.monotonic() + delay for delay in SETTLE_AFTER]
        with self._pass_lock:
            if full:
                self._full_pass(Reason.HOTPLUG)
            elif touched:
                self._rescan_devices(touched, Reason.HOTPLUG)
            now = time.monotonic()
            for bdf, times in list(self._settling.items()):
                if times[0] > now:
                    continue
                while times and times[0] <= now:
                    times.pop(0)
                if not times:
                    del self._settling[bdf]
                if bdf not in touched:
                    self._check_device(bdf, Reason.HOTPLUG)

    def _uses(self, selector: str) -> bool:
        return any(getattr(rule.selector, selector) for rule in self._policy.rules)

    @staticmethod
    def _bdf_of(event: Uevent) -> str | None:
        if event.pci_slot:
            return event.pci_slot
        if event.subsystem in ("net", "block"):
            return vectors.bdf_in_path(event.devpath)
        return None

    def _forget_later(self, bdf: str) -> None:
        """The device lost its driver or went away: what msixd knew of its IRQs is void (their
        numbers are reused), including a managed IRQ's "unchangeable"."""
        with self._pass_lock:
            self._purge(bdf, keep=frozenset())

    def _pump_uevents(self) -> None:
        assert self._uevents is not None
        while not self._stop.is_set():
            try:
                event = self._uevents.receive(1.0)
            except OSError as err:
                log.error("policy: the uevent socket failed; relying on periodic passes", error=str(err))
                self._uevents = None
                return
            if event is None:
                continue
            if isinstance(event, Lost):
                self.stats.uevents_lost += 1
                log.warning("policy: the kernel dropped uevents (receive buffer full): looking at everything")
                self._queue.put(("uevent", event))
            elif event.subsystem in UEVENT_SUBSYSTEMS:
                self.stats.uevents += 1
                self._queue.put(("uevent", event))

    # Passes (under _pass_lock)

    def _context(self, policy: Policy, measure: bool) -> _Context:
        uses = {name for rule in policy.rules for name in ("interface", "block") if getattr(rule.selector, name)}
        load: dict[int, float] = {}
        if measure and any(rule.place is Place.BALANCE for rule in policy.rules):
            now = cpuload.interrupt_seconds(self._roots)
            if now is not None:
                before = self._load_sample or {}
                load = {cpu: seconds - before.get(cpu, 0.0) for cpu, seconds in now.items()}
                self._load_sample = now
                # What balance rules weigh CPUs by, so that an operator can tell why they chose so.
                log.info("policy: interrupt time per CPU measured", since="the last measurement" if before else "boot",
                         seconds={str(cpu): round(value, 3) for cpu, value in sorted(load.items())})
        return _Context(
            cpus=system.read_cpus(self._roots),
            banned=self._placement.banned,
            interfaces=vectors.interfaces(self._roots) if "interface" in uses else {},
            blocks=vectors.block_devices(self._roots) if "block" in uses else {},
            load=load,
        )

    def _scan(self, bdf: str, policy: Policy, context: _Context) -> _Device | None:
        """The device and its vectors, when a rule selects the device and it has IRQs."""
        irqs = vectors.msi_irq_numbers(self._roots, bdf)
        if not irqs:
            return None
        try:
            device = pci.read_device(self._roots, bdf)
        except DeviceNotFound:
            return None
        assert device is not None
        facts = DeviceFacts(bdf, device.vendor_id, device.device_id, device.class_code, device.driver,
                            device.numa_node, context.interfaces.get(bdf, frozenset()),
                            context.blocks.get(bdf, frozenset()))
        if not any(rule.selector.selects_device(facts) for rule in policy.rules):
            return None
        found = []
        for position, number in enumerate(sorted(irqs)):
            handler = vectors.read_handler(self._roots, number)
            if handler is None:
                continue  # freed meanwhile
            index, _source = kirq.vector_index(bdf, handler.chip_name, handler.hwirq, handler.actions) or (
                position, IndexSource.ORDER)
            found.append(_Vector(number, index, handler.actions))
        return _Device(facts, device.local_cpus, irqs, sorted(found, key=lambda v: (v.index, v.irq)))

    def _cpus_for(self, rule: Rule, device: _Device, context: _Context) -> tuple[frozenset[int], str]:
        """The CPUs a rule places a device's vectors on, or "" and why it cannot."""
        cpus = context.cpus
        if rule.cpus is None:
            local = device.local_cpus or cpus.online
            usable = (local & cpus.online) - cpus.isolated - cpus.nohz_full - context.banned
            if not usable:
                return frozenset(), (f"its local CPUs ({format_cpulist(local)}) are all offline, isolated, "
                                     "nohz_full or banned")
            return usable, ""
        offline = rule.cpus - cpus.online
        if offline:
            return frozenset(), f"CPU {format_cpulist(offline)} not online"
        banned = rule.cpus & context.banned
        if banned:
            return frozenset(), f"CPU {format_cpulist(banned)} banned by msixd's configuration (banned_cpus)"
        reserved = rule.cpus & (cpus.isolated | cpus.nohz_full)
        if reserved and not rule.force:
            return frozenset(), f"CPU {format_cpulist(reserved)} isolated or nohz_full (force = true allows it)"
        return rule.cpus, ""

    def _decide(self, devices: dict[str, _Device], policy: Policy, context: _Context,
                balanced: dict[tuple[str, int], tuple[str, int]]) -> None:
        """Fill each device's decisions; balance choices go into `balanced` (a copy to commit)."""
        counts: dict[str, Counter[int]] = {}
        for (bdf, _index), (rule_name, cpu) in balanced.items():
            if bdf not in devices:
                counts.setdefault(rule_name, Counter())[cpu] += 1
        for bdf in sorted(devices):
            device = devices[bdf]
            by_rule: dict[str, list[tuple[_Vector, list[Rule]]]] = {}
            rules: dict[str, Rule] = {}
            for vector in device.vectors:
                rule, shadowed = policy.first(device.facts, vector.index, vector.actions)
                if rule is not None:
                    by_rule.setdefault(rule.name, []).append((vector, shadowed))
                    rules[rule.name] = rule
            device.decisions = {}
            for name, selected in by_rule.items():
                rule = rules[name]
                cpus, problem = (frozenset(), "") if rule.place is Place.LEAVE else self._cpus_for(rule, device,
                                                                                                  context)
                movable: list[_Vector] = []
                current: dict[int, tuple[frozenset[int], bool | None]] = {}
                for vector, _ in selected:
                    raw = vectors.read_affinity_raw(self._roots, vector.irq)
                    try:
                        affinity = vectors.parse_affinity(self._roots, vector.irq, raw) if raw else frozenset()
                    except KernelFormatError as err:
                        log.warning("policy: unreadable affinity", bdf=bdf, irq=vector.irq, error=str(err))
                        affinity = frozenset()
                    writable = vectors.affinity_writable(self._roots, vector.irq) if raw is not None else None
                    current[vector.irq] = (affinity, writable)
                    # Vectors without a handler yet count, so that a NIC going up does not shift the others.
                    if writable is not False and (bdf, vector.irq) not in self._unchangeable:
                        movable.append(vector)
                targets: dict[int, frozenset[int]] = {}
                if rule.place is Place.PIN and not problem:
                    targets = {v.irq: cpus for v, _ in selected}
                elif rule.place is Place.SPREAD and not problem:
                    order = sorted(cpus)
                    targets = {v.irq: frozenset({order[p % len(order)]}) for p, v in enumerate(movable)}
                elif rule.place is Place.BALANCE and not problem:
                    targets = self._balance(rule, bdf, movable, cpus, context.load, balanced,
                                            counts.setdefault(rule.name, Counter()))
                for vector, shadowed in selected:
                    affinity, writable = current[vector.irq]
                    device.decisions[vector.irq] = self._decision(
                        bdf, vector, rule, tuple(r.name for r in shadowed), affinity, writable,
                        targets.get(vector.irq), problem)

    def _balance(self, rule: Rule, bdf: str, movable: list[_Vector], cpus: frozenset[int], load: dict[int, float],
                 balanced: dict[tuple[str, int], tuple[str, int]], counts: Counter[int]) -> dict[int, frozenset[int]]:
        """One CPU each: kept where chosen before, new ones dealt to the CPU with the least interrupt
        time, each vector dealt to a CPU counting as the mean load of the CPUs."""
        mean = sum(load.get(cpu, 0.0) for cpu in cpus) / len(cpus)
        weight = max(mean, 1e-9)
        targets = {}
        fresh = []
        for vector in movable:
            kept = balanced.get((bdf, vector.index))
            if kept is not None and kept[0] == rule.name and kept[1] in cpus:
                targets[vector.irq] = frozenset({kept[1]})
                counts[kept[1]] += 1
            else:
                fresh.append(vector)
        for vector in fresh:
            cpu = min(sorted(cpus), key=lambda c: load.get(c, 0.0) + weight * counts[c])
            counts[cpu] += 1
            balanced[(bdf, vector.index)] = (rule.name, cpu)
            targets[vector.irq] = frozenset({cpu})
        return targets

    def _decision(self, bdf: str, vector: _Vector, rule: Rule, shadowed: tuple[str, ...], affinity: frozenset[int],
                  writable: bool | None, target: frozenset[int] | None, problem: str) -> Decision:
        def made(state: VectorState, detail: str = "", to: frozenset[int] | None = None) -> Decision:
            return Decision(bdf, vector.index, vector.irq, rule, shadowed, affinity, to, state, detail)

        key = (bdf, vector.irq)
        if rule.place is Place.LEAVE:
            return made(VectorState.LEFT_ALONE)
        if key in self._unchangeable:
            return made(VectorState.UNCHANGEABLE, self._unchangeable[key])
        if writable is None:
            return made(VectorState.NO_HANDLER, f"no /proc/irq/{vector.irq}: its driver has not requested it yet",
                        target)
        if not writable:
            return made(VectorState.UNCHANGEABLE,
                        "the kernel manages this IRQ's affinity (smp_affinity_list is read-only)")
        if problem:
            return made(VectorState.ERROR, f"rule {rule.name}: {problem}")
        if target is None:
            return made(VectorState.ERROR, f"rule {rule.name} has no CPU for it")
        rejected = self._rejected.get(key)
        if rejected is not None and rejected[0] == target:
            return made(VectorState.ERROR, rejected[1], target)
        if affinity == target:
            return made(VectorState.IN_PLACE, to=target)
        if rule.on_drift is OnDrift.OBSERVE and key in self._placed:
            return made(VectorState.DRIFTED, f"moved to {format_cpulist(affinity)} by someone else; rule "
                                             f"{rule.name} only observes", target)
        return made(VectorState.PENDING, to=target)

    def _scan_all(self, policy: Policy, context: _Context) -> dict[str, _Device]:
        """Every PCI function the policy has something to say about; one with an unreadable
        sysfs entry is skipped with a warning, the others still count."""
        devices: dict[str, _Device] = {}
        for bdf in pci.list_bdfs(self._roots):
            try:
                device = self._scan(bdf, policy, context)
            except KernelFormatError as err:
                log.warning("policy: device skipped: unreadable sysfs entry", bdf=bdf, error=str(err))
                continue
            if device is not None:
                devices[bdf] = device
        return devices

    def _dry_run(self, policy: Policy) -> list[Decision]:
        with self._pass_lock:
            context = self._context(policy, measure=False)
            devices = self._scan_all(policy, context)
            self._decide(devices, policy, context, dict(self._balanced))
            return [d for device in devices.values() for d in sorted(device.decisions.values(),
                                                                      key=lambda d: (d.index, d.irq))]

    def _full_pass(self, reason: Reason, fresh: bool = False) -> list[Correction]:
        """Every device; fresh (start, apply): balance is measured anew, observed moves and
        rejected CPU sets are forgotten."""
        started = time.perf_counter()
        policy = self._policy
        if fresh:
            self._balanced.clear()
            self._rejected.clear()
            self._placed.clear()
            self._observed.clear()
        context = self._context(policy, measure=True)
        devices = self._scan_all(policy, context)
        for bdf in set(self._devices) - set(devices):
            self._purge(bdf, keep=frozenset())
        self._decide(devices, policy, context, self._balanced)
        self._devices = devices
        self._summaries_changed = True
        corrections = self._enforce(list(devices), reason)
        if self._uevents is None:
            self._untracked = self._untracked_signatures()
        self.stats.full_passes += 1
        self._finish(started)
        return corrections

    def _rescan_devices(self, bdfs: Iterable[str], reason: Reason) -> list[Correction]:
        """Look at some devices again from scratch (a uevent, changed IRQs)."""
        policy = self._policy
        context = self._context(policy, measure=any(rule.place is Place.BALANCE for rule in policy.rules))
        scanned: dict[str, _Device] = {}
        for bdf in bdfs:
            try:
                device = self._scan(bdf, policy, context)
            except KernelFormatError as err:
                log.warning("policy: device skipped: unreadable sysfs entry", bdf=bdf, error=str(err))
                device = None
            if device is None:
                self._purge(bdf, keep=frozenset())
                if self._devices.pop(bdf, None) is not None:
                    self._summaries_changed = True
            else:
                self._purge(bdf, keep=device.irqs)
                scanned[bdf] = device
        if not scanned:
            self._publish()
            return []
        self._decide(scanned, policy, context, self._balanced)
        self._devices.update(scanned)
        return self._enforce(list(scanned), reason)

    def _purge(self, bdf: str, keep: frozenset[int]) -> None:
        """Forget what was known of the device's IRQs that are not in keep."""
        _drop(self._placed, bdf, keep)
        _drop(self._unchangeable, bdf, keep)
        _drop(self._rejected, bdf, keep)
        _drop(self._observed, bdf, keep)
        device = self._devices.get(bdf)
        if device is not None:
            indexes = {v.index for v in device.vectors if v.irq not in keep}
            for key in [k for k in self._balanced if k[0] == bdf and k[1] in indexes]:
                del self._balanced[key]

    def _check_device(self, bdf: str, reason: Reason) -> list[Correction]:
        """The drift check of one device: its IRQs listed, then each placed vector's affinity read
        (one read each, compared as the kernel prints it, nothing parsed when it is as expected)."""
        device = self._devices.get(bdf)
        irqs = vectors.msi_irq_numbers(self._roots, bdf)
        if device is None:
            return self._rescan_devices([bdf], reason) if irqs else []
        if irqs != device.irqs:
            return self._rescan_devices([bdf], reason)
        changed = vectors.changed_affinities(self._roots, device.watch)
        if not changed:
            return []
        decisions = device.decisions
        if any(decisions[irq].state is VectorState.NO_HANDLER for irq in changed if irq in decisions):
            return self._rescan_devices([bdf], reason)  # its driver requested it: its handler names are known now
        return self._recheck(device, changed, reason)

    def _recheck(self, device: _Device, irqs: list[int], reason: Reason) -> list[Correction]:
        """Decide again the vectors whose affinity changed, against the targets they had."""
        bdf = device.facts.bdf
        for irq in irqs:
            old = device.decisions[irq]
            raw = vectors.read_affinity_raw(self._roots, irq)
            if raw is None:
                return self._rescan_devices([bdf], reason)  # freed meanwhile
            try:
                affinity = vectors.parse_affinity(self._roots, irq, raw)
            except KernelFormatError as err:
                log.warning("policy: unreadable affinity", bdf=bdf, irq=irq, error=str(err))
                continue
            writable = vectors.affinity_writable(self._roots, irq)
            device.decisions[irq] = self._decision(bdf, _Vector(irq, old.index, ()), old.rule, old.shadowed, affinity,
                                                   writable, old.target, "")
        return self._enforce([bdf], reason)

    def _redecide(self, bdf: str, reason: Reason) -> list[Correction]:
        """Decide a known device's vectors again from their affinities now, and enforce."""
        device = self._devices[bdf]
        context = self._context(self._policy, measure=False)
        self._decide({bdf: device}, self._policy, context, self._balanced)
        return self._enforce([bdf], reason)

    def _drift_pass(self) -> list[Correction]:
        started = time.perf_counter()
        corrections = []
        for bdf in list(self._devices):
            corrections += self._check_device(bdf, Reason.DRIFT)
        if self._uevents is None:
            corrections += self._discover(Reason.DRIFT)
        self._finish(started)
        return corrections

    def _untracked_signatures(self) -> dict[str, tuple[object, ...]]:
        """For every PCI function no rule selects: what would make a rule select it now (its IRQs,
        its driver, and its names when rules select by them)."""
        names_used = [name for name in ("interface", "block") if self._uses(name)]
        interfaces = vectors.interfaces(self._roots) if "interface" in names_used else {}
        blocks = vectors.block_devices(self._roots) if "block" in names_used else {}
        return {bdf: (vectors.msi_irq_numbers(self._roots, bdf), vectors.driver_name(self._roots, bdf),
                      interfaces.get(bdf), blocks.get(bdf))
                for bdf in pci.list_bdfs(self._roots) if bdf not in self._devices}

    def _discover(self, reason: Reason) -> list[Correction]:
        """Without uevents: the functions no rule selected whose IRQs, driver or names changed since
        the last look are looked at again (a listing and a link per function, not a full pass)."""
        signatures = self._untracked_signatures()
        changed = [bdf for bdf, signature in signatures.items()
                   if signature != self._untracked.get(bdf) and signature[0]]
        self._untracked = signatures
        return self._rescan_devices(changed, reason) if changed else []

    def _finish(self, started: float) -> None:
        self._publish()
        seconds = time.perf_counter() - started
        self.stats.passes += 1
        self.stats.last_pass_seconds = seconds
        self.stats.pass_seconds_total += seconds
        self.stats.last_pass_time = time.time()

    # Acting

    def _reason(self, decision: Decision, reason: Reason) -> Reason:
        if reason in (Reason.START, Reason.APPLY, Reason.HOTPLUG):
            return reason
        return Reason.DRIFT if (decision.bdf, decision.irq) in self._placed else Reason.NEW_VECTOR

    def _enforce(self, bdfs: list[str], reason: Reason) -> list[Correction]:
        corrections = []
        for bdf in bdfs:
            device = self._devices[bdf]
            for irq, decision in list(device.decisions.items()):
                key = (bdf, irq)
                if decision.state is VectorState.IN_PLACE:
                    self._placed[key] = decision.affinity
                elif decision.state is VectorState.UNCHANGEABLE and key not in self._unchangeable:
                    self._unchangeable[key] = decision.detail
                    log.warning("policy: the kernel will not move this vector; reported once, never retried",
                                bdf=bdf, vector=decision.index, irq=irq, rule=decision.rule.name,
                                reason=decision.detail)
                elif decision.state is VectorState.DRIFTED and self._observed.get(key) != decision.affinity:
                    self._observed[key] = decision.affinity
                    self.stats.drift_observed += 1
                    log.warning("policy: a vector was moved by someone else; its rule only observes", bdf=bdf,
                                vector=decision.index, irq=irq, rule=decision.rule.name,
                                cpus=format_cpulist(decision.affinity),
                                rule_cpus=format_cpulist(decision.target or ()))
                elif decision.state is VectorState.PENDING:
                    correction = self._correct(decision, self._reason(decision, reason))
                    corrections.append(correction)
                    device.decisions[irq] = self._after(decision, correction)
            self._summarize(device)
        self._publish()  # whatever looked at the devices: the claims and the bans follow at once
        return corrections

    def _summarize(self, device: _Device) -> None:
        """What the drift pass reads, and what readers and irqbalance are told, for one device."""
        watch: list[tuple[int, bytes | None]] = []
        placed = set()
        claims: dict[tuple[str, int], str] = {}
        shown: dict[str, str] = {}
        for irq, decision in device.decisions.items():
            state = decision.state
            if state is VectorState.NO_HANDLER:
                watch.append((irq, None))
            elif state is VectorState.IN_PLACE or state is VectorState.DRIFTED or state is VectorState.PENDING:
                watch.append((irq, format_cpulist(decision.affinity).encode()))
            else:
                continue
            placed.add(irq)
            rule = decision.rule
            if rule.on_drift is OnDrift.CORRECT:
                if rule.name not in shown:
                    shown[rule.name] = f"{rule.name} ({rule.where})"
                claims[(device.facts.bdf, decision.index)] = shown[rule.name]
        device.watch = watch
        device.placed = frozenset(placed)
        device.claims = claims
        device.counts = Counter(decision.state.value for decision in device.decisions.values())
        self._summaries_changed = True

    def _correct(self, decision: Decision, reason: Reason) -> Correction:
        assert decision.target is not None
        key = (decision.bdf, decision.irq)
        try:
            placed = self._placement.place(decision.bdf, decision.index, decision.irq, decision.target,
                                           decision.affinity)
        except kirq.AffinityRefused as err:
            self._unchangeable[key] = err.reason
            self.stats.failures += 1
            log.warning("policy: the kernel will not move this vector; reported once, never retried",
                        bdf=decision.bdf, vector=decision.index, irq=decision.irq, rule=decision.rule.name,
                        reason=err.reason)
            return self._made(decision, reason, error=str(err))
        except kirq.AffinityRejected as err:
            self._rejected[key] = (decision.target, str(err))
            self.stats.failures += 1
            log.warning("policy: the kernel rejected the rule's CPUs for this vector; not retried until the "
                        "policy or the device changes", bdf=decision.bdf, vector=decision.index, irq=decision.irq,
                        rule=decision.rule.name, error=str(err))
            return self._made(decision, reason, error=str(err))
        if placed.affinity != decision.target:
            why = (f"IRQ {decision.irq}: the kernel kept CPUs {format_cpulist(placed.affinity)} for "
                   f"{format_cpulist(decision.target)}")
            self._rejected[key] = (decision.target, why)
            self.stats.failures += 1
            log.warning("policy: the placement did not hold", bdf=decision.bdf, vector=decision.index,
                        irq=decision.irq, rule=decision.rule.name, error=why)
            return self._made(decision, reason, error=why)
        self._placed[key] = decision.target
        self._observed.pop(key, None)
        self.stats.corrections[reason.value] += 1
        audit.info("policy placement", bdf=decision.bdf, vector=decision.index, irq=decision.irq,
                   rule=decision.rule.name, cpus=format_cpulist(decision.target),
                   previous=format_cpulist(decision.affinity), effective=format_cpulist(placed.effective_affinity),
                   reason=reason.value, by="msixd")
        return self._made(decision, reason, effective=placed.effective_affinity)

    @staticmethod
    def _made(decision: Decision, reason: Reason, effective: frozenset[int] = frozenset(),
              error: str = "") -> Correction:
        assert decision.target is not None
        return Correction(decision.bdf, decision.index, decision.irq, decision.rule.name, decision.affinity,
                          decision.target, reason, effective, error)

    def _after(self, decision: Decision, correction: Correction) -> Decision:
        key = (decision.bdf, decision.irq)
        if not correction.error:
            return replace(decision, affinity=decision.target or frozenset(), state=VectorState.IN_PLACE)
        if key in self._unchangeable:
            return replace(decision, state=VectorState.UNCHANGEABLE, detail=self._unchangeable[key])
        return replace(decision, state=VectorState.ERROR, detail=correction.error)

    def _publish(self) -> None:
        """What readers see between passes: the claims, and the ban list for irqbalance (the IRQs the
        rules place, and the owned vectors msixd placed)."""
        if self._summaries_changed:
            claims: dict[tuple[str, int], str] = {}
            counts: Counter[str] = Counter()
            placed: set[int] = set()
            for device in self._devices.values():
                claims.update(device.claims)
                counts.update(device.counts)
                placed |= device.placed
            self._placed_irqs = frozenset(placed)
            with self._state_lock:
                self._claims = claims
                self._state_counts = counts
            self._summaries_changed = False
        if self._irqbalance is not None:
            self._irqbalance.want(self._placed_irqs | self._owned_placements())

    def _owned_placements(self) -> set[int]:
        """IRQs of the vectors msixd owns and placed (msixctl affinity on an owned device)."""
        found: set[int] = set()
        for bdf, state in self._owner.desired().items():
            if not state.affinities or self._owner.owned(bdf) is None:
                continue
            irqs = vectors.msi_irq_numbers(self._roots, bdf)
            for number in irqs:
                handler = vectors.read_handler(self._roots, number)
                if handler is None:
                    continue
                found_index = kirq.vector_index(bdf, handler.chip_name, handler.hwirq, handler.actions)
                if found_index is not None and found_index[0] in state.affinities:
                    found.add(number)
        return found
