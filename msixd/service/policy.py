"""Placement policy: rules in policy.d/*.toml saying where MSI-X vectors go.

One file holds any number of rules, each a ``[[rule]]`` table::

    [[rule]]
    name = "nic-rx"                                  # required, unique across the files
    match = { interface = "eth0", actions = "*-rx-*" }
    place = "spread"                                 # pin | spread | balance | leave
    cpus = "local"                                   # a CPU list, or "local"
    force = false                                    # allow isolated and nohz_full CPUs
    on_drift = "correct"                             # correct | observe

``match`` selects devices and their vectors; every selector given must hold
(a selector given a list holds when any item does; text is matched as a
shell glob):

    bdf        "0000:3b:00.0", "0000:3b:*"    the PCI function
    device     "8086:10d3", "15b3:*"          vendor:device
    driver     "mlx5_core"                    the bound driver
    class      "0x02", "0x0108"               PCI class code, as a prefix of its six hex digits
    numa_node  0                              the function's NUMA node
    interface  "eth0"                         a network interface of the function
    block      "nvme0n1"                      a block device the function serves
    vectors    "0-3,8"                        MSI-X table indexes
    actions    "*-TxRx-*"                     a handler name of the vector's IRQ

``place`` says what to do with the vectors selected:

    pin       every vector on exactly the CPUs of ``cpus`` (required)
    spread    one CPU each, round robin by MSI-X index over ``cpus``
    balance   one CPU each over ``cpus``, more vectors on CPUs that spent less
              time in interrupts (irq + softirq time, measured)
    leave     nothing: the vectors are left to the kernel, irqbalance or the
              operator, and no later rule takes them

``cpus = "local"`` (the default for spread and balance) is the function's
local CPUs that are online, not isolated, not nohz_full and not in msixd's
banned_cpus. ``on_drift = "observe"`` reports a vector someone else moved
instead of putting it back.

Precedence: files are read in the lexical order of their names (as udev and
systemd read drop-ins: number them), rules in the order they appear; a vector
is placed by the first rule that selects it. Later rules that select it too
are shown as shadowed by it.

Every error names its file and line. The files are read whole and checked
before any of them is used: a reload or apply with a broken file keeps the
running policy.
"""

from __future__ import annotations

import enum
import fnmatch
import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from msixd.config import ConfigError, toml_document
from msixd.errors import InvalidArgument, InvalidCpuList, shown
from msixd.kernel.cpulist import format_cpulist, parse_cpulist

MAX_FILE_BYTES = 1 << 20
MAX_RULES = 4096
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_FILE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,250}\.toml")
_RULE_HEADER = re.compile(r"\s*\[\[\s*rule\s*\]\]\s*(#.*)?$")
_CLASS = re.compile(r"(?:0x)?([0-9a-fA-F]{2}|[0-9a-fA-F]{4}|[0-9a-fA-F]{6})")
_DEVICE_ID = re.compile(r"[0-9a-fA-F*?]{1,4}:[0-9a-fA-F*?]{1,4}")
RULE_KEYS = ("name", "match", "place", "cpus", "force", "on_drift")
SELECTOR_KEYS = ("bdf", "device", "driver", "class", "numa_node", "interface", "block", "vectors", "actions")


class PolicyError(InvalidArgument):
    """A policy file is wrong; the message names the file and line."""


class Place(enum.Enum):
    PIN = "pin"
    SPREAD = "spread"
    BALANCE = "balance"
    LEAVE = "leave"


class OnDrift(enum.Enum):
    CORRECT = "correct"
    OBSERVE = "observe"


@dataclass(frozen=True)
class DeviceFacts:
    """What a rule can select a PCI function by."""

    bdf: str
    vendor_id: int
    device_id: int
    class_code: int
    driver: str | None
    numa_node: int
    interfaces: frozenset[str] = frozenset()
    block_devices: frozenset[str] = frozenset()


def _glob_any(patterns: tuple[str, ...], values: Iterable[str]) -> bool:
    names = list(values)
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns for name in names)


@dataclass(frozen=True)
class Selector:
    bdf: tuple[str, ...] = ()
    device: tuple[str, ...] = ()
    driver: tuple[str, ...] = ()
    class_prefix: tuple[str, ...] = ()  # lower-case hex digits, 2, 4 or 6 of them
    numa_node: tuple[int, ...] = ()
    interface: tuple[str, ...] = ()
    block: tuple[str, ...] = ()
    vectors: frozenset[int] | None = None
    actions: tuple[str, ...] = ()

    def selects_device(self, device: DeviceFacts) -> bool:
        if self.bdf and not _glob_any(self.bdf, [device.bdf]):
            return False
        if self.device and not _glob_any(self.device, [f"{device.vendor_id:04x}:{device.device_id:04x}"]):
            return False
        if self.driver and not _glob_any(self.driver, [device.driver or ""]):
            return False
        if self.class_prefix and not any(f"{device.class_code:06x}".startswith(p) for p in self.class_prefix):
            return False
        if self.numa_node and device.numa_node not in self.numa_node:
            return False
        if self.interface and not _glob_any(self.interface, device.interfaces):
            return False
        return not self.block or _glob_any(self.block, device.block_devices)

    def selects_vector(self, index: int, actions: tuple[str, ...]) -> bool:
        if self.vectors is not None and index not in self.vectors:
            return False
        return not self.actions or _glob_any(self.actions, actions)

    def describe(self) -> str:
        """The selectors as a file would write them, for people."""
        parts = []
        for key, values in (("bdf", self.bdf), ("device", self.device), ("driver", self.driver),
                            ("class", tuple(f"0x{p}" for p in self.class_prefix)),
                            ("numa_node", tuple(str(n) for n in self.numa_node)),
                            ("interface", self.interface), ("block", self.block)):
            if values:
                parts.append(f"{key}={','.join(values)}")
        if self.vectors is not None:
            parts.append(f"vectors={format_cpulist(self.vectors)}")
        if self.actions:
            parts.append(f"actions={','.join(self.actions)}")
        return " ".join(parts) or "every device"


@dataclass(frozen=True)
class Rule:
    name: str
    source: str  # the file it was read from
    line: int
    order: int  # 1 is placed first
    selector: Selector
    place: Place
    cpus: frozenset[int] | None  # None: the device's local CPUs
    force: bool = False
    on_drift: OnDrift = OnDrift.CORRECT

    @property
    def where(self) -> str:
        return f"{self.source}:{self.line}"

    def describe_cpus(self) -> str:
        return "local" if self.cpus is None else format_cpulist(self.cpus)


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...] = ()
    files: tuple[str, ...] = ()
    # Set when the policy was applied with a file that is not (or not so) in policy.d.
    trial: str = ""
    directory: str = ""

    def first(self, device: DeviceFacts, index: int, actions: tuple[str, ...]) -> tuple[Rule | None, list[Rule]]:
        """The rule that places this vector, and the later rules that select it too (shadowed)."""
        chosen: Rule | None = None
        shadowed = []
        for rule in self.rules:
            if rule.selector.selects_device(device) and rule.selector.selects_vector(index, actions):
                if chosen is None:
                    chosen = rule
                else:
                    shadowed.append(rule)
        return chosen, shadowed


# Reading the files


@dataclass
class _Lines:
    """Where things are in one file's text, for error messages."""

    source: str
    lines: list[str]
    headers: list[int] = field(default_factory=list)  # line number of each [[rule]]

    @classmethod
    def of(cls, source: str, text: str) -> _Lines:
        lines = text.splitlines()
        found = cls(source, lines)
        found.headers = [n for n, line in enumerate(lines, 1) if _RULE_HEADER.match(line)]
        return found

    def rule_line(self, position: int) -> int:
        return self.headers[position] if position < len(self.headers) else 1

    def key_line(self, position: int, key: str) -> int:
        """The line of `key = ...` inside the position-th rule (its header line when not found)."""
        start = self.rule_line(position)
        end = self.headers[position + 1] - 1 if position + 1 < len(self.headers) else len(self.lines)
        pattern = re.compile(rf"(^|[{{,\s]){re.escape(key)}\s*=")
        for number in range(start, end + 1):
            if pattern.search(self.lines[number - 1].split("#", 1)[0]):
                return number
        return start

    def error(self, line: int, message: str) -> PolicyError:
        return PolicyError(f"{self.source}, line {line}: {message}")


def _strings(where: _Lines, line: int, key: str, value: object) -> tuple[str, ...]:
    raw: list[object] = value if isinstance(value, list) else [value]
    items = [item for item in raw if isinstance(item, str) and item]
    if not raw or len(items) != len(raw):
        raise where.error(line, f"match.{key} must be a non-empty string or a list of them")
    if len(items) > 256 or any(len(item) > 256 for item in items):
        raise where.error(line, f"match.{key}: at most 256 items of at most 256 characters")
    return tuple(items)


def _selector(where: _Lines, position: int, raw: object) -> Selector:
    if not isinstance(raw, dict):
        raise where.error(where.key_line(position, "match"),
                          "match must be a table, e.g. match = { driver = \"nvme\" }")
    values: dict[str, Any] = {}
    for key, value in raw.items():
        line = where.key_line(position, key)
        if key not in SELECTOR_KEYS:
            raise where.error(line, f"unknown selector {shown(key)} in match (known: {', '.join(SELECTOR_KEYS)})")
        if key == "numa_node":
            numbers = value if isinstance(value, list) else [value]
            if not numbers or not all(isinstance(n, int) and not isinstance(n, bool) and -1 <= n < 65536
                                      for n in numbers):
                raise where.error(line, "match.numa_node must be a node number (-1 to 65535) or a list of them")
            values["numa_node"] = tuple(numbers)
        elif key == "vectors":
            if not isinstance(value, str):
                raise where.error(line, "match.vectors must be a string of MSI-X indexes, e.g. \"0-3,8\"")
            try:
                values["vectors"] = parse_cpulist(value)
            except InvalidCpuList as err:
                raise where.error(line, f"match.vectors: {err.reason}") from None
            if not values["vectors"]:
                raise where.error(line, "match.vectors is empty")
        elif key == "class":
            prefixes = []
            for item in _strings(where, line, key, value):
                match = _CLASS.fullmatch(item)
                if match is None:
                    raise where.error(line, f"match.class {shown(item)} is not 2, 4 or 6 hex digits (e.g. \"0x02\", "
                                            "\"0x0108\")")
                prefixes.append(match.group(1).lower())
            values["class_prefix"] = tuple(prefixes)
        elif key == "device":
            items = _strings(where, line, key, value)
            for item in items:
                if not _DEVICE_ID.fullmatch(item):
                    raise where.error(line, f"match.device {shown(item)} is not vendor:device in hex, e.g. "
                                            "\"8086:10d3\" or \"15b3:*\"")
            values["device"] = tuple(item.lower() for item in items)
        elif key == "bdf":
            values["bdf"] = tuple(item.lower() for item in _strings(where, line, key, value))
        else:
            values[key] = _strings(where, line, key, value)
    return Selector(**values)


def _cpus(where: _Lines, line: int, value: object) -> frozenset[int] | None:
    if not isinstance(value, str):
        raise where.error(line, "cpus must be a CPU list such as \"2-3\", or \"local\"")
    if value.strip() == "local":
        return None
    try:
        cpus = parse_cpulist(value)
    except InvalidCpuList as err:
        raise where.error(line, f"cpus: {err.reason}") from None
    if not cpus:
        raise where.error(line, "cpus is empty")
    return cpus


def _rule(where: _Lines, position: int, raw: object, order: int) -> Rule:
    line = where.rule_line(position)
    if not isinstance(raw, dict):
        raise where.error(line, "a rule is a [[rule]] table")
    for key in raw:
        if key not in RULE_KEYS:
            raise where.error(where.key_line(position, key),
                              f"unknown key {shown(key)} in a rule (known: {', '.join(RULE_KEYS)})")
    name = raw.get("name")
    if name is None:
        raise where.error(line, "the rule has no name (name = \"...\", unique across the files)")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise where.error(where.key_line(position, "name"),
                          "name must be 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    place_text = raw.get("place")
    if place_text is None:
        raise where.error(line, f"rule {name!r} says nothing to do: place = \"pin\", \"spread\", \"balance\" or "
                                "\"leave\"")
    try:
        place = Place(place_text)
    except ValueError:
        raise where.error(where.key_line(position, "place"),
                          f"place must be pin, spread, balance or leave, not {shown(str(place_text))}") from None
    cpus: frozenset[int] | None = None
    if "cpus" in raw:
        if place is Place.LEAVE:
            raise where.error(where.key_line(position, "cpus"), f"rule {name!r} leaves its vectors alone: it takes "
                                                                "no cpus")
        cpus = _cpus(where, where.key_line(position, "cpus"), raw["cpus"])
    elif place is Place.PIN:
        raise where.error(line, f"rule {name!r} pins: it needs cpus = \"<CPU list>\" (or \"local\")")
    force = raw.get("force", False)
    if not isinstance(force, bool):
        raise where.error(where.key_line(position, "force"), "force must be true or false")
    drift_text = raw.get("on_drift", "correct")
    try:
        on_drift = OnDrift(drift_text)
    except ValueError:
        raise where.error(where.key_line(position, "on_drift"),
                          f"on_drift must be correct or observe, not {shown(str(drift_text))}") from None
    selector = _selector(where, position, raw.get("match", {}))
    return Rule(name, where.source, line, order, selector, place, cpus, force, on_drift)


def parse(text: str, source: str, first_order: int = 1) -> list[Rule]:
    """The rules of one file's text, numbered from first_order."""
    try:
        document = toml_document(text, source)
    except ConfigError as err:
        raise PolicyError(str(err)) from None
    where = _Lines.of(source, text)
    for key in document:
        if key != "rule":
            line = next((n for n, l in enumerate(where.lines, 1) if re.match(rf"\s*\[?\s*{re.escape(key)}\b", l)), 1)
            raise where.error(line, f"unknown table or key {shown(key)}: a policy file holds [[rule]] tables only")
    raw_rules = document.get("rule", [])
    if not isinstance(raw_rules, list) or len(raw_rules) != len(where.headers):
        raise where.error(1, "write each rule as a [[rule]] table (one header per rule)")
    if len(raw_rules) > MAX_RULES:
        raise where.error(where.rule_line(MAX_RULES), f"more than {MAX_RULES} rules")
    return [_rule(where, position, raw, first_order + position) for position, raw in enumerate(raw_rules)]


def _decode(data: bytes, source: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise PolicyError(f"{source}, line {line}: not UTF-8 text (byte 0x{data[err.start]:02x}); TOML files are "
                          "UTF-8") from None


def check_file_name(name: str) -> str:
    """A policy file's name as policy.d would hold it: no directories, ending in .toml."""
    if not _FILE_NAME.fullmatch(name):
        raise PolicyError(f"policy file name {shown(name)} must be a plain file name ending in .toml "
                          "(letters, digits, '.', '_', '-')")
    return name


def load(directory: Path, trial: tuple[str, bytes] | None = None) -> Policy:
    """Every *.toml of directory in name order; with trial (name, content), that file added, or
    put in place of the one of that name. A missing directory is an empty policy."""
    texts: dict[str, tuple[str, bytes]] = {}  # name -> (source shown, content)
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        names = []
    except OSError as err:
        raise PolicyError(f"{directory}: {os.strerror(err.errno or 0)}") from None
    for name in names:
        path = directory / name
        if not name.endswith(".toml") or name.startswith(".") or not path.is_file():
            continue
        try:
            with path.open("rb") as stream:
                data = stream.read(MAX_FILE_BYTES + 1)
        except OSError as err:
            raise PolicyError(f"{path}: {os.strerror(err.errno or 0)}") from None
        if len(data) > MAX_FILE_BYTES:
            raise PolicyError(f"{path}: larger than {MAX_FILE_BYTES} bytes")
        texts[name] = (str(path), data)
    trial_note = ""
    if trial is not None:
        name, data = check_file_name(trial[0]), trial[1]
        if len(data) > MAX_FILE_BYTES:
            raise PolicyError(f"{name}: larger than {MAX_FILE_BYTES} bytes")
        replaced = name in texts
        texts[name] = (f"{name} (applied by msixctl)", data)
        trial_note = f"{name} {'in place of' if replaced else 'added to'} {directory / name if replaced else directory}"
    rules: list[Rule] = []
    seen: dict[str, Rule] = {}
    for name in sorted(texts):
        source, data = texts[name]
        for rule in parse(_decode(data, source), source, len(rules) + 1):
            if rule.name in seen:
                earlier = seen[rule.name]
                raise PolicyError(f"{rule.source}, line {rule.line}: rule name {rule.name!r} is used already at "
                                  f"{earlier.source}, line {earlier.line}")
            seen[rule.name] = rule
            rules.append(rule)
        if len(rules) > MAX_RULES:
            raise PolicyError(f"{source}: more than {MAX_RULES} rules in all")
    return Policy(tuple(rules), tuple(source for source, _ in (texts[n] for n in sorted(texts))), trial_note,
                  str(directory))
