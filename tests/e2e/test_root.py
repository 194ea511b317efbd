"""msixd --root DIR serves a captured tree and keeps every file of its own under DIR too.

The daemon runs in a private mount namespace whose /etc (an overlay), /var/lib and /run
are directories of the test: it sees a "host" configuration and state there, and the
test sees anything it writes to them, without touching this machine's own.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from msixd.api.msix.v1 import msix_pb2 as pb
from msixd.api.msix.v1 import msix_pb2_grpc
from msixd.main import effective_config, parse_args
from tests.e2e.conftest import REPO, wait_serving

HOST_CONFIG = 'banned_cpus = "1"\nlog_level = "debug"\n'
HOST_STATE = json.dumps({"version": 1, "devices": {"0000:00:0b.0": {"vectors": 0, "previous_driver": "e1000e"}}})


def test_root_puts_every_default_path_under_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MSIXD_CONFIG", "MSIXD_SOCKET", "MSIXD_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)
    args = parse_args(["--root", str(tmp_path)])
    assert args.config == tmp_path / "etc/msixd/msixd.toml"
    config = effective_config(args)
    assert config.socket == tmp_path / "run/msixd/msixd.sock"
    assert config.state_dir == tmp_path / "var/lib/msixd"


def test_root_keeps_what_is_given_explicitly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "etc/msixd").mkdir(parents=True)
    (tmp_path / "etc/msixd/msixd.toml").write_text('socket = "/tmp/named.sock"\n')
    monkeypatch.setenv("MSIXD_STATE_DIR", "/tmp/state-from-env")
    config = effective_config(parse_args(["--root", str(tmp_path)]))
    assert config.socket == Path("/tmp/named.sock"), "the file under the root names it"
    assert config.state_dir == Path("/tmp/state-from-env")
    other = tmp_path / "other.toml"
    other.write_text("")
    args = parse_args(["--root", str(tmp_path), "--config", str(other), "--socket", "/tmp/opt.sock"])
    assert args.config == other and effective_config(args).socket == Path("/tmp/opt.sock")


def test_without_root_the_defaults_are_the_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("MSIXD_CONFIG", "MSIXD_SOCKET", "MSIXD_STATE_DIR"):
        monkeypatch.delenv(name, raising=False)
    args = parse_args([])
    assert args.config == Path("/etc/msixd/msixd.toml")


@pytest.fixture
def host(tmp_path: Path) -> Path:
    """The "host" /etc overlay, /var/lib and /run the daemon will see, with a configuration and a state."""
    host = tmp_path / "host"
    for name in ("etc-upper/msixd", "etc-work", "var-lib/msixd", "run"):
        (host / name).mkdir(parents=True)
    (host / "etc-upper/msixd/msixd.toml").write_text(HOST_CONFIG)
    (host / "var-lib/msixd/state.json").write_text(HOST_STATE)
    return host


def files(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() if p.is_file() else b"" for p in sorted(directory.rglob("*"))}


@pytest.fixture
def daemon(host: Path, tree: Callable[[str], Path]) -> Iterator[tuple[subprocess.Popen[str], Path]]:
    root = tree("guest-6.12")
    mounts = (f"mount --bind {host}/var-lib /var/lib && mount --bind {host}/run /run && "
              f"mount -t overlay overlay -o lowerdir=/etc,upperdir={host}/etc-upper,workdir={host}/etc-work /etc")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MSIXD_")}
    proc = subprocess.Popen(
        ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", f'{mounts} && exec "$@"', "sh",
         sys.executable, "-m", "msixd.main", "--root", str(root), "--log-format", "json"],
        cwd=REPO, env=env, stdout=(host / "msixd.log").open("w"), stderr=subprocess.STDOUT, text=True,
    )
    try:
        yield proc, root
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("unshare") is None,
                    reason="needs root and unshare for a private mount namespace")
def test_bind_and_enable_under_root_never_touch_the_hosts_files(
    daemon: tuple[subprocess.Popen[str], Path], host: Path
) -> None:
    proc, root = daemon
    ours, hosts = root / "run/msixd/msixd.sock", host / "run/msixd/msixd.sock"
    deadline = time.monotonic() + 90
    while not (ours.exists() or hosts.exists()) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not hosts.exists(), "msixd --root served on the host's socket path"
    wait_serving(ours, proc)
    before = files(host)
    with grpc.insecure_channel(f"unix:{ours}") as channel:
        stub = msix_pb2_grpc.MsixServiceStub(channel)
        spread = stub.Spread(pb.SpreadRequest(bdf="0000:00:04.0", dry_run=True))
        assert list(spread.cpus) == [0, 1], "the host's banned_cpus were not read"
        # A captured tree is not a kernel: the bind fails (no unbind file), and msixd undoes it: the device
        # is still on its driver, so the driver it saved first is forgotten again, in DIR's state file.
        with pytest.raises(grpc.RpcError) as bound:
            stub.Bind(pb.BindRequest(bdf="0000:00:04.0"))
        assert bound.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.RpcError) as enabled:  # the tree's /dev/vfio files are not the kernel's
            stub.Enable(pb.EnableRequest(bdf="0000:00:0a.0", vectors=2))
        assert enabled.value.code() != grpc.StatusCode.INTERNAL
    proc.terminate()
    assert proc.wait(timeout=30) == 0
    after = files(host)
    after.pop("msixd.log")
    before.pop("msixd.log")
    assert after == before, "msixd --root wrote to the host's /etc, /var/lib or /run"
    saved = json.loads((root / "var/lib/msixd/state.json").read_text())["devices"]
    assert saved == {}
