"""Prometheus metrics on localhost."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tests.e2e.conftest import REPO
from tests.e2e.daemon import Daemon
from tests.e2e.test_tls_and_reload import free_port


def test_metrics(tree: Callable[[str], Path]) -> None:
    port = free_port()
    daemon = Daemon(f'metrics_listen = "127.0.0.1:{port}"\n', "--root", str(tree("host-6.18")))
    try:
        for args in (["show", "0000:00:04.0"], ["show", "0000:00:1f.7"], ["affinity", "0000:00:04.0", "1", "0"]):
            subprocess.run([sys.executable, "-m", "msixctl.main", "--socket", str(daemon.socket), *args],
                           cwd=REPO, capture_output=True, timeout=60)
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        daemon.stop()
    assert 'msixd_vector_interrupts_total{bdf="0000:00:04.0",irq="42",vector="2"}' in text
    assert 'msixd_rpc_duration_seconds_count{rpc="GetDevice"} 2.0' in text
    assert 'msixd_rpc_errors_total{code="NOT_FOUND"} 1.0' in text
    assert "msixd_affinity_changes_total 1.0" in text
