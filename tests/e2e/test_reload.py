"""SIGHUP with broken or missing files, and a metrics port that cannot be served, on real msixd processes."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import grpc
import pytest

from msixd.api.msix.v1 import msix_pb2 as pb
from msixd.api.msix.v1 import msix_pb2_grpc
from tests.e2e.conftest import REPO
from tests.e2e.daemon import Daemon

DEEP = 5000


def spread_cpus(daemon: Daemon) -> list[int]:
    """The CPUs a spread would use: every online CPU minus banned_cpus, as the running configuration says."""
    with grpc.insecure_channel(f"unix:{daemon.socket}") as channel:
        answer = msix_pb2_grpc.MsixServiceStub(channel).Spread(
            pb.SpreadRequest(bdf="0000:00:04.0", dry_run=True), timeout=30)
    return list(answer.cpus)


# Written after the socket and state_dir lines: the first line here is line 3.
HOSTILE = {
    "invalid UTF-8": (b'banned_cpus = "0"\n# caf\xe9\n', "line 4", "UTF-8"),
    "a 5,000-digit CPU number": (b'banned_cpus = "' + b"1" * DEEP + b'"\n', "line 3", "too long"),
    "a 5,000-digit integer": (b'log_level = "debug"\nbanned_cpus = ' + b"7" * DEEP + b"\n", "line 4", "digits"),
    "arrays nested 5,000 deep": (b"banned_cpus = " + b"[" * DEEP + b"]" * DEEP + b"\n", "line 3", "nested"),
    "inline tables nested 3,000 deep": (b"x = " + b"{a = " * 3000 + b"1" + b"}" * 3000 + b"\n", "line 3", "nested"),
}


def test_broken_and_missing_files_on_reload_keep_the_running_settings(tree: Callable[[str], Path]) -> None:
    daemon = Daemon('banned_cpus = "1"\n', "--root", str(tree("host-6.18")))
    try:
        assert spread_cpus(daemon) == [0]
        for name, (text, line, says) in HOSTILE.items():
            daemon.write_config(text)
            outcome = daemon.reload()
            assert outcome["event"] == "reload refused; the running configuration stays", name
            assert outcome["error"].startswith(f"{daemon.config}, {line}: ") and says in outcome["error"], outcome
            assert spread_cpus(daemon) == [0], f"{name}: banned_cpus stays"
        daemon.config.unlink()  # deleted: not "back to the defaults"
        outcome = daemon.reload()
        assert outcome["event"] == "reload refused; the running configuration stays"
        assert outcome["error"].startswith(str(daemon.config)) and "does not exist" in outcome["error"]
        assert spread_cpus(daemon) == [0], "banned_cpus stays when the file is gone"
        daemon.write_config('banned_cpus = "0"\n')  # and a good file is still taken
        assert daemon.reload()["event"] == "configuration reloaded"
        assert spread_cpus(daemon) == [1]
    finally:
        assert daemon.stop() == 0


def start_msixd(directory: Path, config: str, root: Path) -> subprocess.CompletedProcess[str]:
    """msixd that is expected to refuse to start: run it to its end."""
    (directory / "msixd.toml").write_text(config)
    return subprocess.run(
        [sys.executable, "-m", "msixd.main", "--config", str(directory / "msixd.toml"), "--log-format", "json",
         "--socket", str(directory / "msixd.sock"), "--state-dir", str(directory / "state"), "--root", str(root)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )


def last_event(done: subprocess.CompletedProcess[str]) -> dict[str, str]:
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def test_metrics_port_out_of_range_is_refused_when_the_file_is_parsed(tmp_path: Path,
                                                                       tree: Callable[[str], Path]) -> None:
    done = start_msixd(tmp_path, 'log_level = "info"\nmetrics_listen = "127.0.0.1:99999"\n', tree("host-6.18"))
    assert done.returncode == 1 and "Traceback" not in done.stdout + done.stderr
    event = last_event(done)
    assert event["event"] == "cannot start: bad configuration"
    assert "line 2: metrics_listen port must be 1 to 65535" in event["error"]
    assert not (tmp_path / "msixd.sock").exists()


@pytest.fixture
def taken_port() -> object:
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen()
    yield holder.getsockname()[1]
    holder.close()


def test_metrics_port_that_cannot_be_bound_ends_start_up_cleanly(tmp_path: Path, tree: Callable[[str], Path],
                                                                 taken_port: int) -> None:
    done = start_msixd(tmp_path, f'metrics_listen = "127.0.0.1:{taken_port}"\n', tree("host-6.18"))
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr, done.stdout + done.stderr
    event = last_event(done)
    assert event["event"] == "cannot start"
    assert f"127.0.0.1:{taken_port}" in event["error"] and "in use" in event["error"]
    assert not (tmp_path / "msixd.sock").exists(), "no socket left behind"
    assert not any(json.loads(line)["event"] == "serving" for line in done.stdout.splitlines() if line.startswith("{"))
