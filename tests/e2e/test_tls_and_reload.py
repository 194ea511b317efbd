"""The mutual-TLS listener and configuration reload, on a real msixd process."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from msixd.api.msix.v1 import msix_pb2 as pb
from msixd.api.msix.v1 import msix_pb2_grpc
from tests.e2e.conftest import REPO
from tests.e2e.daemon import Daemon

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the test certificates")


def openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_pki(directory: Path, name: str) -> None:
    """A CA, a server certificate for 127.0.0.1, and a client certificate, all under `name`-*."""
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", f"/CN={name}-ca",
            "-keyout", f"{name}-ca.key", "-out", f"{name}-ca.pem", cwd=directory)
    extensions = (("server", "subjectAltName=IP:127.0.0.1,DNS:localhost"), ("client", "extendedKeyUsage=clientAuth"))
    for role, extension in extensions:
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}-{role}",
                "-keyout", f"{name}-{role}.key", "-out", f"{name}-{role}.csr", cwd=directory)
        (directory / f"{name}-{role}.ext").write_text(extension + "\n")
        openssl("x509", "-req", "-in", f"{name}-{role}.csr", "-CA", f"{name}-ca.pem", "-CAkey", f"{name}-ca.key",
                "-CAcreateserial", "-days", "2", "-extfile", f"{name}-{role}.ext", "-out", f"{name}-{role}.pem",
                cwd=directory)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("pki")
    make_pki(directory, "fleet")
    make_pki(directory, "rogue")
    return directory


@pytest.fixture
def tls_daemon(pki: Path, tree: Callable[[str], Path]) -> Iterator[tuple[Daemon, int]]:
    port = free_port()
    running = Daemon(
        f'tcp_listen = "127.0.0.1:{port}"\ntls_cert = "{pki}/fleet-server.pem"\ntls_key = "{pki}/fleet-server.key"\n'
        f'tls_client_ca = "{pki}/fleet-ca.pem"\ntls_admins = ["fleet-client"]\n',
        "--root", str(tree("host-6.18")),
    )
    yield running, port
    running.stop()


def msixctl_tcp(port: int, pki: Path, client: str | None, *args: str) -> subprocess.CompletedProcess[str]:
    tls = ["--ca", str(pki / "fleet-ca.pem")]
    if client:
        tls += ["--cert", str(pki / f"{client}-client.pem"), "--key", str(pki / f"{client}-client.key")]
    return subprocess.run([sys.executable, "-m", "msixctl.main", "--target", f"127.0.0.1:{port}", *tls, *args],
                          cwd=REPO, capture_output=True, text=True, timeout=60)


def test_fleet_client_with_certificate(tls_daemon: tuple[Daemon, int], pki: Path) -> None:
    daemon, port = tls_daemon
    done = msixctl_tcp(port, pki, "fleet", "list", "-o", "json")
    assert done.returncode == 0, done.stderr
    assert len(json.loads(done.stdout)["devices"]) == 5
    done = msixctl_tcp(port, pki, "fleet", "affinity", "0000:00:04.0", "1", "0")
    assert done.returncode == 0, done.stderr
    assert "TLS client 'fleet-client'" in daemon.log_text()


def test_no_client_certificate_is_refused(tls_daemon: tuple[Daemon, int], pki: Path) -> None:
    _, port = tls_daemon
    done = msixctl_tcp(port, pki, None, "list")
    assert done.returncode == 2 and "--target needs --ca, --cert and --key" in done.stderr
    # Below msixctl: a TLS client that offers no certificate fails the handshake.
    credentials = grpc.ssl_channel_credentials(root_certificates=(pki / "fleet-ca.pem").read_bytes())
    with grpc.secure_channel(f"127.0.0.1:{port}", credentials) as channel:
        with pytest.raises(grpc.RpcError) as err:
            msix_pb2_grpc.MsixServiceStub(channel).GetStatus(pb.GetStatusRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def test_certificate_from_another_ca_is_refused(tls_daemon: tuple[Daemon, int], pki: Path) -> None:
    _, port = tls_daemon
    done = msixctl_tcp(port, pki, "rogue", "list")
    assert done.returncode == 3 and "Traceback" not in done.stderr


def test_plaintext_tcp_is_refused(tls_daemon: tuple[Daemon, int]) -> None:
    _, port = tls_daemon
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        with pytest.raises(grpc.RpcError) as err:
            msix_pb2_grpc.MsixServiceStub(channel).GetStatus(pb.GetStatusRequest(), timeout=5)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


def spread_cpus(daemon: Daemon) -> list[int]:
    done = subprocess.run([sys.executable, "-m", "msixctl.main", "--socket", str(daemon.socket), "affinity",
                           "0000:00:04.0", "--spread", "--dry-run", "-o", "json"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return list(json.loads(done.stdout)["cpus"])


def refusals(daemon: Daemon) -> list[str]:
    events = [json.loads(line) for line in daemon.log_text().splitlines() if line.startswith("{")]
    return [e["error"] for e in events if e["event"].startswith("reload refused")]


def test_reload_applies_and_a_broken_file_keeps_serving(tree: Callable[[str], Path]) -> None:
    daemon = Daemon("", "--root", str(tree("host-6.18")))
    try:
        assert spread_cpus(daemon) == [0, 1]
        daemon.write_config('banned_cpus = "1"\n')
        daemon.reload()
        assert spread_cpus(daemon) == [0]
        assert "configuration reloaded" in daemon.log_text()
        daemon.write_config('banned_cpus = "0"\nlog_level = "loud"\n')
        daemon.reload()
        assert spread_cpus(daemon) == [0], "the running configuration stays"
        refused = refusals(daemon)
        assert len(refused) == 1 and "line 4: log_level must be one of" in refused[0]
        daemon.config.write_text('banned_cpus = "1"\nnot toml at all\nlog_level = "info"\n')
        daemon.reload()
        assert spread_cpus(daemon) == [0]
        refused = refusals(daemon)
        assert len(refused) == 2 and ", line 2: " in refused[1], refused[1]
    finally:
        assert daemon.stop() == 0


def test_broken_file_at_start_is_one_clear_error(tmp_path: Path) -> None:
    config = tmp_path / "msixd.toml"
    config.write_text('socket = "/tmp/x.sock"\nbanned_cpu = "1"\n')
    done = subprocess.run([sys.executable, "-m", "msixd.main", "--config", str(config), "--log-format", "json"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    event = json.loads(done.stdout.strip().splitlines()[-1])
    assert event["event"] == "cannot start: bad configuration"
    assert "line 2: unknown setting 'banned_cpu'" in event["error"]
