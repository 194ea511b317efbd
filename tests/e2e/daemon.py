"""msixd as a real process with a configuration file, and msixctl as any user."""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
import weakref
from pathlib import Path
from typing import Any

from tests.e2e.conftest import REPO, wait_serving


def _limit_files(nofile: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))


class Daemon:
    def __init__(self, config: str, *args: str, nofile: int | None = None, env: dict[str, str] | None = None) -> None:
        """nofile: RLIMIT_NOFILE for msixd (systemd gives services 1024 soft unless the unit says otherwise)."""
        # World-traversable: the socket must be reachable by the test's other users. Removed
        # with its files when the test lets go of this object (or at exit), after stop().
        self.dir = Path(tempfile.mkdtemp(prefix="msixd-e2e-"))
        weakref.finalize(self, shutil.rmtree, self.dir, ignore_errors=True)
        self.dir.chmod(0o755)
        self.socket = self.dir / "msixd.sock"
        self.config = self.dir / "msixd.toml"
        self.write_config(config)
        self.log = self.dir / "msixd.log"
        with self.log.open("w") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "msixd.main", "--config", str(self.config), "--log-format", "json",
                 "--policy-dir", str(self.dir / "policy.d"), *args],
                cwd=REPO, stdout=log, stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})},
                preexec_fn=(lambda: _limit_files(nofile)) if nofile else None,
            )
        wait_serving(self.socket, self.proc)

    def write_config(self, extra: str | bytes) -> None:
        """The socket and state_dir lines (lines 1 and 2), then `extra` as it is, bytes included."""
        head = f'socket = "{self.dir / "msixd.sock"}"\nstate_dir = "{self.dir / "state"}"\n'.encode()
        self.config.write_bytes(head + (extra if isinstance(extra, bytes) else extra.encode()))

    def reload(self, timeout: float = 60.0) -> dict[str, Any]:
        """SIGHUP, then wait for the reload's outcome: its "configuration reloaded" or "reload refused" event."""
        before = len(self.reload_outcomes())
        self.proc.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            outcomes = self.reload_outcomes()
            if len(outcomes) > before:
                return outcomes[before]
            if self.proc.poll() is not None:
                raise AssertionError(f"msixd exited with {self.proc.returncode} on SIGHUP:\n{self.log_text()[-4000:]}")
            time.sleep(0.05)
        raise AssertionError(f"no reload outcome logged within {timeout:.0f} s")

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.log_text().splitlines() if line.startswith("{")]

    def reload_outcomes(self) -> list[dict[str, Any]]:
        return [e for e in self.events()
                if e["event"] in ("configuration reloaded",) or e["event"].startswith("reload refused")]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(timeout=30)


def msixctl_as(uid: int, gid: int, groups: list[int], *args: str) -> subprocess.CompletedProcess[str]:
    """msixctl run by another user: the system python3, with this checkout and the venv's packages."""
    path = os.pathsep.join([str(REPO), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    supplementary = [f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"]
    identity = [f"--reuid={uid}", f"--regid={gid}", *supplementary]
    return subprocess.run(
        ["setpriv", *identity, "/usr/bin/python3", "-m", "msixctl.main", *args],
        cwd="/", capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": path, "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
    )
