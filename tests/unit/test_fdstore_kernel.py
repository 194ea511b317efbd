"""sd_notify with descriptors, sd_listen_fds, and the runtime memory file, against a fake systemd."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from msixd.kernel import memfile, sdnotify
from tests.fakesystemd import FakeSystemd

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def systemd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSystemd]:
    fake = FakeSystemd(tmp_path, max_fds=8)
    for key, value in fake.env().items():
        monkeypatch.setenv(key, value)
    yield fake
    fake.close()


def test_descriptors_are_stored_by_name_and_removed_by_name(systemd: FakeSystemd) -> None:
    first, second = os.eventfd(0), os.eventfd(0)
    assert sdnotify.notify_fds("FDSTORE=1\nFDNAME=v-0000-00-0a.0-0\nFDPOLL=0", [first])
    assert sdnotify.notify_fds("FDSTORE=1\nFDNAME=v-0000-00-0a.0-1\nFDPOLL=0", [second])
    systemd.wait_for(lambda s: len(s.store) == 2, what="two stored")
    os.eventfd_write(first, 3)
    copy = dict(systemd.store)["v-0000-00-0a.0-0"]
    assert os.eventfd_read(copy) == 3, "the store holds the same eventfd"
    assert sdnotify.notify("FDSTOREREMOVE=1\nFDNAME=v-0000-00-0a.0-0")
    systemd.wait_for(lambda s: s.names() == ["v-0000-00-0a.0-1"], what="one removed")
    for fd in (first, second):
        os.close(fd)


def test_names_follow_systemds_rules() -> None:
    assert sdnotify.valid_fdname("d-0000-00-0a.0") and not sdnotify.valid_fdname("d-0000:00:0a.0")
    assert not sdnotify.valid_fdname("") and not sdnotify.valid_fdname("x" * 256) and not sdnotify.valid_fdname("a\nb")


def test_the_store_size_comes_from_systemd_or_msixds_unit(monkeypatch: pytest.MonkeyPatch,
                                                           systemd: FakeSystemd) -> None:
    assert sdnotify.store_max() == 8
    monkeypatch.delenv("FDSTORE")
    assert sdnotify.store_max() == 0
    monkeypatch.setenv("MSIXD_FDSTORE", "4096")  # systemd before 254 sets no FDSTORE
    assert sdnotify.store_max() == 4096
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert sdnotify.store_max() == 0, "no systemd, no store"


LISTEN = r"""
import json, os
from msixd.kernel import sdnotify
passed = sdnotify.listen_fds()
print(json.dumps({"passed": [[name, fd, os.readlink(f"/proc/self/fd/{fd}"), os.get_inheritable(fd)]
                             for name, fd in passed],
                  "left": [v for v in ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES") if v in os.environ]}))
"""


def test_the_next_process_gets_the_store_from_descriptor_3(systemd: FakeSystemd, tmp_path: Path) -> None:
    eventfd, memory = os.eventfd(0), memfile.create("msixd-runtime")
    sdnotify.notify_fds("FDSTORE=1\nFDNAME=v-x-0", [eventfd])
    sdnotify.notify_fds("FDSTORE=1\nFDNAME=runtime", [memory])
    systemd.wait_for(lambda s: len(s.store) == 2)
    out = (tmp_path / "out").open("w+")
    proc = systemd.spawn([sys.executable, "-c", LISTEN], {"PYTHONPATH": str(REPO), "PATH": os.environ["PATH"]},
                         stdout=out.fileno())
    assert proc.wait(timeout=60) == 0
    out.seek(0)
    seen = json.loads(out.read())
    assert [entry[:2] for entry in seen["passed"]] == [["v-x-0", 3], ["runtime", 4]]
    assert seen["passed"][0][2] == "anon_inode:[eventfd]" and seen["passed"][1][2].startswith("/memfd:msixd-runtime")
    assert not any(entry[3] for entry in seen["passed"]), "close-on-exec: no child takes them"
    assert seen["left"] == [], "the variables are unset"
    os.close(eventfd)
    os.close(memory)


def test_listen_fds_is_for_the_process_named_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))
    monkeypatch.setenv("LISTEN_FDS", "1")
    assert sdnotify.listen_fds() == []
    assert "LISTEN_FDS" not in os.environ


def test_the_memory_file_keeps_the_last_whole_record() -> None:
    fd = memfile.create("test")
    try:
        assert memfile.read(fd) is None
        memfile.write(fd, b"first")
        memfile.write(fd, b"second, longer")
        assert memfile.read(fd) == b"second, longer"
        copy = os.dup(fd)
        memfile.write(fd, b"third")
        assert memfile.read(copy) == b"third", "one file, shared with whoever holds a copy"
        os.close(copy)
        # A writer killed in the middle of a record (before the header names it) leaves the last one readable.
        header = os.pread(fd, 40, 0)
        in_use = int.from_bytes(header[16:24], "little")
        free = next(slot for slot in memfile.SLOTS if slot != in_use)
        os.pwrite(fd, b"torn, half writ", free)
        assert memfile.read(fd) == b"third" and os.pread(fd, 40, 0) == header
        os.pwrite(fd, b"X", memfile.SLOTS[0])
        os.pwrite(fd, b"X", memfile.SLOTS[1])
        assert memfile.read(fd) is None, "a damaged record is no record"
    finally:
        os.close(fd)


def test_spawned_without_a_store_gets_no_listen_variables(systemd: FakeSystemd, tmp_path: Path) -> None:
    out = (tmp_path / "out").open("w+")
    proc = systemd.spawn([sys.executable, "-c", "import os; print(sorted(k for k in os.environ if 'LISTEN' in k))"],
                         {"PATH": os.environ["PATH"]}, stdout=out.fileno())
    assert proc.wait(timeout=60) == 0
    out.seek(0)
    assert out.read().strip() == "[]"
