"""/etc/msixd/msixd.toml: what an operator sets, checked before anything uses it.

Every problem is an error that names where it is: tomllib's own message gives
the line of a syntax error; a wrong key or value is reported with the line it
stands on. Unknown keys are errors, so a typo never silently does nothing.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from msixd.errors import InvalidCpuList, MsixdError
from msixd.kernel.cpulist import parse_cpulist

DEFAULT_PATH = Path("/etc/msixd/msixd.toml")


class ConfigError(MsixdError):
    pass


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

    def reload_changes(self, new: Config) -> tuple[list[str], list[str]]:
        """Names of settings a reload can apply, and of those that need a restart."""
        changed = [f.name for f in fields(self) if getattr(self, f.name) != getattr(new, f.name)]
        live = {"banned_cpus", "log_format", "log_level", "admin_group", "socket_group", "tls_admins", "tls_readers"}
        return [n for n in changed if n in live], [n for n in changed if n not in live]


_TYPES = {
    "socket": Path, "socket_group": str, "admin_group": str, "tcp_listen": str, "tls_cert": Path,
    "tls_key": Path, "tls_client_ca": Path, "banned_cpus": str, "state_dir": Path, "log_format": str,
    "log_level": str, "metrics_listen": str, "tls_admins": tuple, "tls_readers": tuple,
    "client_idle_seconds": float,
}
_CHOICES = {"log_format": ("auto", "json", "console"), "log_level": ("debug", "info", "warning", "error")}
_HOST_PORT = re.compile(r"(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})")


def _line_of(text: str, key: str) -> str:
    for number, line in enumerate(text.splitlines(), 1):
        if re.match(rf"\s*{re.escape(key)}\s*=", line):
            return f"line {number}"
    return "a table"


def parse(text: str, source: str = "msixd.toml") -> Config:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{source}: {err}") from None
    values: dict[str, object] = {}
    for key, value in raw.items():
        where = f"{source}, {_line_of(text, key)}"
        if key not in _TYPES:
            known = ", ".join(sorted(_TYPES))
            raise ConfigError(f"{where}: unknown setting {key!r} (known: {known})")
        if _TYPES[key] is tuple:
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise ConfigError(f"{where}: {key} must be a list of names, e.g. [\"orchestrator\"]")
            values[key] = tuple(value)
            continue
        if _TYPES[key] is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 1 <= value <= 86400:
                raise ConfigError(f"{where}: {key} must be a number of seconds from 1 to 86400")
            values[key] = float(value)
            continue
        if not isinstance(value, str):
            raise ConfigError(f"{where}: {key} must be a string, not {type(value).__name__}")
        if key in _CHOICES and value not in _CHOICES[key]:
            raise ConfigError(f"{where}: {key} must be one of {', '.join(_CHOICES[key])}, not {value!r}")
        if key in ("tcp_listen", "metrics_listen") and value and not _HOST_PORT.fullmatch(value):
            raise ConfigError(f"{where}: {key} must be host:port, not {value!r}")
        if key == "banned_cpus":
            try:
                values[key] = parse_cpulist(value)
            except InvalidCpuList as err:
                raise ConfigError(f"{where}: {err}") from None
            continue
        values[key] = _TYPES[key](value) if _TYPES[key] is Path else value
    config = Config(**values)  # type: ignore[arg-type]
    if config.tcp_listen and not (config.tls_cert and config.tls_key and config.tls_client_ca):
        raise ConfigError(
            f"{source}: tcp_listen needs tls_cert, tls_key and tls_client_ca: the TCP listener is mutual TLS only"
        )
    return config


def load(path: Path) -> Config:
    """The configuration at path; defaults when the file does not exist."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return Config()
    except OSError as err:
        raise ConfigError(f"{path}: {os.strerror(err.errno or 0)}") from None
    return parse(text, str(path))
