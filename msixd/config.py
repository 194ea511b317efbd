"""/etc/msixd/msixd.toml: what an operator sets, checked before anything uses it.

Every problem is one ConfigError that names where it is: tomllib's own message
gives the line of a syntax error; a wrong key or value is reported with the line
it stands on. Unknown keys are errors, so a typo never silently does nothing.
Text that is not UTF-8 (TOML 1.0 requires it), a number of more digits than
int() converts, and nesting deeper than tomllib's recursion reaches are each a
ConfigError too, so a reload with any broken file keeps the running settings.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from msixd.errors import InvalidBdf, InvalidCpuList, MsixdError
from msixd.kernel.cpulist import parse_cpulist
from msixd.kernel.pci import parse_bdf

DEFAULT_PATH = Path("/etc/msixd/msixd.toml")


class ConfigError(MsixdError):
    pass


@dataclass(frozen=True)
class LeaseRule:
    """One [[lease]] table: who may lease the MSI-X vectors of which devices (admins may lease anything).

    devices: canonical BDFs ("0000:00:05.0") and vendor:device IDs ("8086:10d3", lower-case hex);
    uids and gids: the users named in `users` and the groups in `groups`, resolved when the file is
    read; device_fd: whether a lease may also carry the device's VFIO file.
    """

    devices: tuple[str, ...]
    uids: frozenset[int] = frozenset()
    gids: frozenset[int] = frozenset()
    device_fd: bool = False
    line: int = 0

    def covers(self, bdf: str, vendor_device: str) -> bool:
        return bdf in self.devices or vendor_device in self.devices

    def names(self, uid: int, groups: frozenset[int]) -> bool:
        return uid in self.uids or bool(self.gids & groups)


@dataclass(frozen=True)
class Config:
    socket: Path = Path("/run/msixd/msixd.sock")
    # Members may read; the socket file is owned by this group, mode 0660.
    socket_group: str = "msixd"
    # Members (and root) may change things.
    admin_group: str = "msixd-admin"
    # "host:port" for the mutual-TLS listener; empty: none.
    tcp_listen: str = ""
    tls_cert: Path | None = None
    tls_key: Path | None = None
    # CA that signs client certificates; TCP clients must present one.
    tls_client_ca: Path | None = None
    # Names (subject CN or a subjectAltName) of client certificates that may change things, and
    # of those that may only read. A certificate named in neither may do nothing.
    tls_admins: tuple[str, ...] = ()
    tls_readers: tuple[str, ...] = ()
    # A connection to the Unix socket that sends or receives nothing for this long is closed.
    client_idle_seconds: float = 120.0
    # CPUs msixd never places a vector on.
    banned_cpus: frozenset[int] = field(default_factory=frozenset)
    state_dir: Path = Path("/var/lib/msixd")
    log_format: str = "auto"
    log_level: str = "info"
    # "host:port" for Prometheus metrics; empty: none. Keep it on localhost.
    metrics_listen: str = ""
    # Placement policy: the rules' directory, seconds between the reconciler's passes, and whether
    # IRQs it places are banned from irqbalance ("ban") or irqbalance is left alone ("ignore").
    policy_dir: Path = Path("/etc/msixd/policy.d")
    policy_interval: float = 10.0
    irqbalance: str = "ban"
    # [[lease]] tables: who may lease which devices' vectors (admins and root may lease anything).
    leases: tuple[LeaseRule, ...] = ()

    def reload_changes(self, new: Config) -> tuple[list[str], list[str]]:
        """Names of settings a reload can apply, and of those that need a restart."""
        changed = [f.name for f in fields(self) if getattr(self, f.name) != getattr(new, f.name)]
        live = {"banned_cpus", "log_format", "log_level", "admin_group", "socket_group", "tls_admins", "tls_readers",
                "policy_dir", "policy_interval", "irqbalance", "leases"}
        return [n for n in changed if n in live], [n for n in changed if n not in live]


_TYPES = {
    "socket": Path, "socket_group": str, "admin_group": str, "tcp_listen": str, "tls_cert": Path,
    "tls_key": Path, "tls_client_ca": Path, "banned_cpus": str, "state_dir": Path, "log_format": str,
    "log_level": str, "metrics_listen": str, "tls_admins": tuple, "tls_readers": tuple,
    "client_idle_seconds": float, "policy_dir": Path, "policy_interval": float, "irqbalance": str,
    "lease": list,
}
_CHOICES = {"log_format": ("auto", "json", "console"), "log_level": ("debug", "info", "warning", "error"),
            "irqbalance": ("ban", "ignore")}
# Seconds a float setting may take: (lowest, highest).
_SECONDS = {"client_idle_seconds": (1, 86400), "policy_interval": (0.5, 86400)}
_HOST_PORT = re.compile(r"(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})")
# Nesting past this many arrays or inline tables is named by its line when tomllib
# runs out of recursion (msixd's settings are all strings: none nests at all).
_NESTING_SHOWN = 100
# Python's default int_max_str_digits: tomllib's int() refuses longer numbers.
_INT_DIGITS = 4300


def _line_at(text: str, offset: int) -> int:
    return text.count("\n", 0, offset) + 1


def _too_deep(text: str) -> int | None:
    """The line where arrays and inline tables first nest more than _NESTING_SHOWN deep.

    Skips strings (basic, literal, multi-line) and comments, where brackets are only text.
    """
    depth, i, end = 0, 0, len(text)
    while i < end:
        char = text[i]
        if char == "#":
            i = text.find("\n", i)
            if i < 0:
                return None
        elif char in "\"'":
            quote = text[i : i + 3] if text[i : i + 3] in ('"""', "'''") else char
            i += len(quote)
            while i < end and not text.startswith(quote, i):
                i += 2 if char == '"' and text[i] == "\\" else 1
            i += len(quote) - 1
        elif char in "[{":
            depth += 1
            if depth > _NESTING_SHOWN:
                return _line_at(text, i)
        elif char in "]}":
            depth = max(depth - 1, 0)
        i += 1
    return None


def _line_of(text: str, key: str) -> str:
    for number, line in enumerate(text.splitlines(), 1):
        if re.match(rf"\s*{re.escape(key)}\s*=", line):
            return f"line {number}"
    return "a table"


def under_root(path: Path, root: Path | None) -> Path:
    """A default absolute path of msixd's own, moved under root (msixd --root); as it is without one."""
    return root / path.relative_to("/") if root is not None else path


def defaults(root: Path | None = None) -> Config:
    """The settings of an empty file. Under a root, msixd's own paths (socket, state, policy) live under
    it too, so a daemon serving a captured tree never uses, or changes, the host's."""
    base = Config()
    return replace(base, socket=under_root(base.socket, root), state_dir=under_root(base.state_dir, root),
                   policy_dir=under_root(base.policy_dir, root))


def _port_in_range(value: str) -> bool:
    return 1 <= int(value.rpartition(":")[2]) <= 65535


def _toml(text: str, source: str) -> dict[str, object]:
    """tomllib.loads, with each of its ways to fail turned into a ConfigError naming the line."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        at = re.search(r"\(at line (\d+), column (\d+)\)$", str(err))
        if at:  # "<source>, line N: ..." like every other error here
            message = str(err)[: at.start()].rstrip()
            raise ConfigError(f"{source}, line {at.group(1)}: {message} (column {at.group(2)})") from None
        if str(err).endswith("(at end of document)"):  # the last line is where it ends
            message = str(err)[: -len("(at end of document)")].rstrip()
            raise ConfigError(f"{source}, line {_line_at(text, len(text))}: {message} (at the end)") from None
        raise ConfigError(f"{source}: {err}") from None
    except RecursionError:
        line_number = _too_deep(text)
        where = f", line {line_number}" if line_number else ""
        raise ConfigError(f"{source}{where}: arrays or inline tables nested too deeply") from None
    except ValueError as err:  # int() of a number longer than it converts (sys.get_int_max_str_digits)
        long_number = re.search(rf"[0-9_]{{{_INT_DIGITS + 1},}}", text)
        if long_number is None:
            raise ConfigError(f"{source}: {err}") from None
        line = _line_at(text, long_number.start())
        raise ConfigError(f"{source}, line {line}: a number of more than {_INT_DIGITS} digits") from None


def toml_document(text: str, source: str) -> dict[str, object]:
    """A TOML document, every way to fail a ConfigError naming "<source>, line N" (policy files use it too)."""
    return _toml(text, source)
_LEASE_KEYS = ("devices", "users", "groups", "device_fd")
_VENDOR_DEVICE = re.compile(r"[0-9a-f]{4}:[0-9a-f]{4}")
_ID_MAX = 0xFFFFFFFE  # (uid_t)-1 means "no change" to the kernel: never a user


def _lease_tables(text: str) -> list[tuple[int, int]]:
    """(first, last) line of each [[lease]] table, in file order."""
    lines = text.splitlines()
    starts = [n for n, line in enumerate(lines, 1) if re.match(r"\s*\[\[\s*lease\s*\]\]", line)]
    tables = []
    for position, start in enumerate(starts):
        end = len(lines)
        for n in range(start + 1, len(lines) + 1):
            if re.match(r"\s*\[", lines[n - 1]):
                end = n - 1
                break
        tables.append((start, starts[position + 1] - 1 if position + 1 < len(starts) else end))
    return tables


def _key_line(text: str, key: str, first: int, last: int) -> int:
    for number, line in enumerate(text.splitlines()[first - 1 : last], first):
        if re.match(rf"\s*{re.escape(key)}\s*=", line):
            return number
    return first


def _ids(values: object, key: str, lookup: Any, where: str) -> frozenset[int]:
    """User or group names (or numbers) as ids; a name the system does not know is an error."""
    if not isinstance(values, list):
        raise ConfigError(f"{where}: {key} must be a list of names or numbers, e.g. [\"dpdk\", 1001]")
    ids = set()
    for value in values:
        if isinstance(value, bool) or not isinstance(value, (str, int)):
            raise ConfigError(f"{where}: {key} must hold names or numbers, not {type(value).__name__}")
        if isinstance(value, int):
            if not 0 <= value <= _ID_MAX:
                raise ConfigError(f"{where}: {key}: {value} is not a valid id (0 to {_ID_MAX})")
            ids.add(value)
            continue
        try:
            ids.add(lookup(value))
        except KeyError:
            kind = "user" if key == "users" else "group"
            raise ConfigError(f"{where}: {key}: no {kind} named {value[:64]!r} on this system") from None
    return frozenset(ids)


def _lease_rule(table: dict[str, object], text: str, source: str, first: int, last: int) -> LeaseRule:
    def where(key: str | None = None) -> str:
        if not first:  # an inline array of tables: the line of `lease =`
            return f"{source}, {_line_of(text, 'lease')}"
        return f"{source}, line {_key_line(text, key, first, last) if key else first}"

    unknown = sorted(set(table) - set(_LEASE_KEYS))
    if unknown:
        raise ConfigError(f"{where(unknown[0])}: unknown [[lease]] key {unknown[0][:64]!r} "
                          f"(known: {', '.join(_LEASE_KEYS)})")
    devices = table.get("devices")
    if not isinstance(devices, list) or not devices or not all(isinstance(d, str) for d in devices):
        raise ConfigError(f"{where('devices')}: [[lease]] needs devices, a list of PCI addresses or "
                          "vendor:device IDs, e.g. [\"0000:00:05.0\", \"8086:10d3\"]")
    canonical = []
    for device in devices:
        if _VENDOR_DEVICE.fullmatch(device.lower()):
            canonical.append(device.lower())
            continue
        try:
            canonical.append(parse_bdf(device))
        except InvalidBdf as err:
            raise ConfigError(f"{where('devices')}: {err}, or a vendor:device ID such as 8086:10d3") from None
    uids = _ids(table.get("users", []), "users", lambda name: pwd.getpwnam(name).pw_uid, where("users"))
    gids = _ids(table.get("groups", []), "groups", lambda name: grp.getgrnam(name).gr_gid, where("groups"))
    if not uids and not gids:
        raise ConfigError(f"{where()}: a [[lease]] table must name users or groups (admins may lease "
                          "anything without one)")
    device_fd = table.get("device_fd", False)
    if not isinstance(device_fd, bool):
        raise ConfigError(f"{where('device_fd')}: device_fd must be true or false")
    return LeaseRule(tuple(canonical), uids, gids, device_fd, first)


def _lease_rules(value: object, text: str, source: str) -> tuple[LeaseRule, ...]:
    """[[lease]] tables, each checked: devices (BDFs or vendor:device IDs), users, groups, device_fd."""
    if not isinstance(value, list) or not all(isinstance(table, dict) for table in value):
        raise ConfigError(f"{source}, {_line_of(text, 'lease')}: lease must be [[lease]] tables")
    spans = _lease_tables(text)
    return tuple(
        _lease_rule(table, text, source, *(spans[position] if position < len(spans) else (0, 0)))
        for position, table in enumerate(value)
    )


def parse(text: str, source: str = "msixd.toml", base: Config | None = None) -> Config:
    """The file's settings over base (the defaults when None)."""
    raw = _toml(text, source)
    values: dict[str, Any] = {}  # checked above, one setting at a time
    for key, value in raw.items():
        where = f"{source}, {_line_of(text, key)}"
        if key not in _TYPES:
            known = ", ".join(sorted(_TYPES))
            raise ConfigError(f"{where}: unknown setting {key!r} (known: {known})")
        if key == "lease":
            values["leases"] = _lease_rules(value, text, source)
            continue
        if _TYPES[key] is tuple:
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise ConfigError(f"{where}: {key} must be a list of names, e.g. [\"orchestrator\"]")
            values[key] = tuple(value)
            continue
        if _TYPES[key] is float:
            low, high = _SECONDS[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= high:
                raise ConfigError(f"{where}: {key} must be a number of seconds from {low:g} to {high:g}")
            values[key] = float(value)
            continue
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {key} must be a string, not {type(value).__name__}")
        if key in _CHOICES and value not in _CHOICES[key]:
            raise ConfigError(f"{where}: {key} must be one of {', '.join(_CHOICES[key])}, not {value!r}")
        if key in ("tcp_listen", "metrics_listen") and value:
            if not _HOST_PORT.fullmatch(value):
                raise ConfigError(f"{where}: {key} must be host:port, not {value[:80]!r}")
            if not _port_in_range(value):
                raise ConfigError(f"{where}: {key} port must be 1 to 65535, not {value!r}")
        if key == "banned_cpus":
            try:
                values[key] = parse_cpulist(value)
            except InvalidCpuList as err:
                raise ConfigError(f"{where}: {err}") from None
            continue
        values[key] = _TYPES[key](value) if _TYPES[key] is Path else value
    config = replace(base or Config(), **values)
    if config.tcp_listen and not (config.tls_cert and config.tls_key and config.tls_client_ca):
        raise ConfigError(
            f"{source}: tcp_listen needs tls_cert, tls_key and tls_client_ca: the TCP listener is mutual TLS only"
        )
    return config


def load(path: Path, missing_ok: bool = True, base: Config | None = None) -> Config:
    """The configuration at path, over base (the defaults when None). A file that does not exist is
    base with missing_ok (at start), and an error without it (a reload must not drop settings because
    a file went away)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        if missing_ok:
            return base or Config()
        raise ConfigError(f"{path}: the file does not exist (an empty file means the defaults)") from None
    except OSError as err:
        raise ConfigError(f"{path}: {os.strerror(err.errno or 0)}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise ConfigError(
            f"{path}, line {line}: not UTF-8 text (byte 0x{data[err.start]:02x} at column {column}); "
            "TOML files are UTF-8"
        ) from None
    return parse(text, str(path), base)
