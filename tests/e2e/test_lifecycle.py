"""msixd speaks systemd's notify protocol and stops gracefully."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.e2e.conftest import REPO


def test_ready_watchdog_and_stopping(tmp_path: Path, tree: object) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(20)
    sock = tmp_path / "msixd.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "msixd.main", "--socket", str(sock), "--state-dir", str(tmp_path / "state"),
         "--config", str(tmp_path / "absent.toml"), "--root", str(tree("host-6.18")), "--log-format", "json"],  # type: ignore[operator]
        cwd=REPO, env={**os.environ, "NOTIFY_SOCKET": str(tmp_path / "notify"), "WATCHDOG_USEC": "400000"},
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        assert notify.recv(64) == b"READY=1"
        assert sock.exists(), "READY=1 comes once the socket is served"
        started = time.monotonic()
        assert notify.recv(64) == b"WATCHDOG=1"
        assert notify.recv(64) == b"WATCHDOG=1"
        assert time.monotonic() - started < 2, "pings every WATCHDOG_USEC/2"
        proc.terminate()
        messages = []
        while not messages or messages[-1] == b"WATCHDOG=1":
            messages.append(notify.recv(64))
        assert messages[-1] == b"STOPPING=1"
        assert proc.wait(timeout=30) == 0
        assert not sock.exists(), "the socket is removed on the way down"
    finally:
        proc.kill()
        notify.close()


CORRUPT_STATE = {
    "torn": '{"version": 1, "devices": {"0000:00:0a.0": {"vectors": ',
    # json accepts Infinity; int(inf) raised OverflowError at every start.
    "vectors Infinity": '{"version": 1, "devices": {"0000:00:0a.0": {"vectors": Infinity}}}',
    # RecursionError in json at every start.
    "nested 100,000 deep": '{"version": 1, "devices": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "not UTF-8": '{"version": 1, "devices": {"0000:00:0a.0": {"vectors": 1, "previous_driver": "\xff"}}}',
}


@pytest.mark.parametrize("text", CORRUPT_STATE.values(), ids=CORRUPT_STATE.keys())
def test_corrupt_state_file_is_moved_aside_and_msixd_starts(tmp_path: Path, tree: object, text: str) -> None:
    from tests.e2e.conftest import wait_serving

    state = tmp_path / "state"
    state.mkdir()
    (state / "state.json").write_bytes(text.encode("latin-1"))
    proc = subprocess.Popen(
        [sys.executable, "-m", "msixd.main", "--socket", str(tmp_path / "msixd.sock"), "--state-dir", str(state),
         "--config", str(tmp_path / "absent.toml"), "--root", str(tree("host-6.18")), "--log-format", "json"],  # type: ignore[operator]
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        wait_serving(tmp_path / "msixd.sock", proc)
    finally:
        proc.terminate()
        out, _ = proc.communicate(timeout=30)
    assert [p.name.split(".corrupt-")[0] for p in state.iterdir()] == ["state.json"]
    assert any(p.name.startswith("state.json.corrupt-") for p in state.iterdir())
    assert "state file unreadable, moved aside" in out
