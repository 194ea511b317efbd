"""msixd as a real process with a configuration file, and msixctl as any user."""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

from tests.e2e.conftest import REPO, wait_serving


def _limit_files(nofile: int) -> None:
    resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))


class Daemon:
    def __init__(self, config: str, *args: str, nofile: int | None = None, env: dict[str, str] | None = None) -> None:
        """nofile: RLIMIT_NOFILE for msixd (systemd gives services 1024 soft unless the unit says otherwise)."""
        # World-traversable: the socket must be reachable by the test's other users.
        self.dir = Path(tempfile.mkdtemp(prefix="msixd-e2e-"))
        self.dir.chmod(0o755)
        self.socket = self.dir / "msixd.sock"
        self.config = self.dir / "msixd.toml"
        self.write_config(config)
        self.log = self.dir / "msixd.log"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "msixd.main", "--config", str(self.config), "--log-format", "json", *args],
            cwd=REPO, stdout=self.log.open("w"), stderr=subprocess.STDOUT, text=True, env={**os.environ, **(env or {})},
            preexec_fn=(lambda: _limit_files(nofile)) if nofile else None,
        )
        wait_serving(self.socket, self.proc)

    def write_config(self, extra: str) -> None:
        self.config.write_text(f'socket = "{self.dir / "msixd.sock"}"\nstate_dir = "{self.dir / "state"}"\n{extra}')

    def reload(self) -> None:
        self.proc.send_signal(signal.SIGHUP)
        time.sleep(1.0)

    def log_text(self) -> str:
        return self.log.read_text()

    def stop(self) -> int:
        self.proc.terminate()
        return self.proc.wait(timeout=30)


def msixctl_as(uid: int, gid: int, groups: list[int], *args: str) -> subprocess.CompletedProcess[str]:
    """msixctl run by another user: the system python3, with this checkout and the venv's packages."""
    path = os.pathsep.join([str(REPO), sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    identity = [f"--reuid={uid}", f"--regid={gid}"] + ([f"--groups={','.join(map(str, groups))}"] if groups else ["--clear-groups"])
    return subprocess.run(
        ["setpriv", *identity, "/usr/bin/python3", "-m", "msixctl.main", *args],
        cwd="/", capture_output=True, text=True, timeout=60,
        env={"PYTHONPATH": path, "PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
    )
