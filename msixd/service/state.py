"""Desired state that survives a restart: which devices msixd owns, and how.

One JSON file, replaced atomically (write a temporary file, fsync, rename,
fsync the directory), so a crash leaves the old state or the new one, never a
torn one. A file that cannot be read as state is moved aside, not deleted, and
msixd starts empty.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import structlog

log = structlog.get_logger(__name__)
FORMAT_VERSION = 1


@dataclass
class DeviceState:
    vectors: int = 0
    # MSI-X index -> CPUs, as last placed through msixd.
    affinities: dict[int, list[int]] = field(default_factory=dict)
    # The driver the device had before msixd bound it to vfio-pci.
    previous_driver: str | None = None


class StateStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    def load(self) -> dict[str, DeviceState]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return {}
        try:
            raw = json.loads(text)
            if raw.get("version") != FORMAT_VERSION:
                raise ValueError(f"unknown state format {raw.get('version')!r}")
            return {
                bdf: DeviceState(
                    vectors=int(entry["vectors"]),
                    affinities={int(k): [int(c) for c in v] for k, v in entry.get("affinities", {}).items()},
                    previous_driver=entry.get("previous_driver"),
                )
                for bdf, entry in raw["devices"].items()
            }
        except (ValueError, KeyError, TypeError, AttributeError) as err:
            aside = self.path.with_name(f"{self.path.name}.corrupt-{time.strftime('%Y%m%dT%H%M%S')}")
            os.replace(self.path, aside)
            log.error("state file unreadable, moved aside; starting with no state", path=str(self.path),
                      moved_to=str(aside), error=str(err))
            return {}

    def save(self, devices: dict[str, DeviceState]) -> None:
        document = {
            "version": FORMAT_VERSION,
            "devices": {
                bdf: {
                    "vectors": state.vectors,
                    "affinities": {str(k): v for k, v in sorted(state.affinities.items())},
                    "previous_driver": state.previous_driver,
                }
                for bdf, state in sorted(devices.items())
            },
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as out:
                json.dump(document, out, indent=2)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        dir_fd = os.open(self.path.parent, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
