"""Record the file operations a reader makes, by standing in for its module's `os`.

Each operation is (call, path) or, for pread, (call, path, size, offset);
reads, fstats and preads are named by the path their descriptor was opened on.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from types import ModuleType
from typing import Any
from unittest import mock

Operation = tuple[Any, ...]


class RecordingOs:
    """os, with every call that touches a file recorded in `operations`."""

    def __init__(self) -> None:
        self.operations: list[Operation] = []
        self._paths: dict[int, str] = {}

    def __getattr__(self, name: str) -> Any:
        return getattr(os, name)

    def open(self, path: str, flags: int, mode: int = 0o777, **kwargs: Any) -> int:
        self.operations.append(("open", str(path)))
        fd = os.open(path, flags, mode, **kwargs)
        self._paths[fd] = str(path)
        return fd

    def close(self, fd: int) -> None:
        self._paths.pop(fd, None)
        os.close(fd)

    def read(self, fd: int, size: int) -> bytes:
        self.operations.append(("read", self._paths.get(fd, f"fd {fd}")))
        return os.read(fd, size)

    def pread(self, fd: int, size: int, offset: int) -> bytes:
        self.operations.append(("pread", self._paths.get(fd, f"fd {fd}"), size, offset))
        return os.pread(fd, size, offset)

    def fstat(self, fd: int) -> os.stat_result:
        self.operations.append(("fstat", self._paths.get(fd, f"fd {fd}")))
        return os.fstat(fd)

    def stat(self, path: str, *args: Any, **kwargs: Any) -> os.stat_result:
        self.operations.append(("stat", str(path)))
        return os.stat(path, *args, **kwargs)

    def listdir(self, path: str) -> list[str]:
        self.operations.append(("listdir", str(path)))
        return os.listdir(path)

    def readlink(self, path: str) -> str:
        self.operations.append(("readlink", str(path)))
        return os.readlink(path)

    def eventfd_read(self, fd: int) -> int:
        self.operations.append(("eventfd_read", fd))
        return os.eventfd_read(fd)


@contextmanager
def recording(*modules: ModuleType) -> Iterator[RecordingOs]:
    """Record what the given modules do through their `os` while the block runs."""
    recorder = RecordingOs()
    patches = [mock.patch.object(module, "os", recorder) for module in modules]
    for patch in patches:
        patch.start()
    try:
        yield recorder
    finally:
        for patch in patches:
            patch.stop()


def tally(operations: list[Operation]) -> Counter[Operation]:
    return Counter(operations)
