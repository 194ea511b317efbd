"""msixctl affinity --dry-run for one vector, against msixd's own servicer over a captured tree."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from typer.testing import CliRunner

from msixctl.client import ClientError
from msixctl.main import app
from msixd.api.msix.v1 import msix_pb2 as pb
from msixd.api.msix.v1 import msix_pb2_grpc
from msixd.kernel.roots import KernelRoots
from msixd.service.services import Services
from tests.serving import serve

BDF = "0000:00:04.0"
runner = CliRunner()


@pytest.fixture
def served(tree: Callable[[str], Path], tmp_path: Path) -> Iterator[tuple[Path, Path]]:
    root = tree("host-6.18")
    services = Services.build(KernelRoots.under(root), tmp_path / "state.json")
    server = serve(services, tmp_path / "msixd.sock")
    yield root, tmp_path / "msixd.sock"
    server.stop(None)


def run(socket_path: Path, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["--socket", str(socket_path), *args])
    if isinstance(result.exception, ClientError):
        return result.exception.exit_code, str(result.exception)
    return result.exit_code, result.stdout


def affinity_of(root: Path, irq: int) -> str:
    return (root / f"proc/irq/{irq}/smp_affinity_list").read_text().strip()


def test_dry_run_changes_nothing_and_says_what_would_happen(served: tuple[Path, Path]) -> None:
    root, socket_path = served
    assert affinity_of(root, 42) == "0-1"
    code, out = run(socket_path, "affinity", BDF, "2", "0", "--dry-run")
    assert code == 0, out
    assert affinity_of(root, 42) == "0-1", "a dry run moved the vector"
    assert out.strip() == f"{BDF} vector 2 (IRQ 42): would set affinity 0 (now 0-1, effective 1); nothing changed"
    code, out = run(socket_path, "affinity", BDF, "2", "0", "--dry-run", "-o", "json")
    answer = json.loads(out)
    assert answer["dry_run"] is True and answer["affinity"] == [0] and answer["previous_affinity"] == [0, 1]
    assert affinity_of(root, 42) == "0-1"


def test_dry_run_refuses_what_the_real_call_refuses(served: tuple[Path, Path]) -> None:
    root, socket_path = served
    for args, says in ((["2", "7"], "not online"), (["9", "0"], "has no MSI-X vector 9"),
                       (["2", "1" * 5000], "too long"), (["2", ""], "empty")):
        code, message = run(socket_path, "affinity", BDF, *args, "--dry-run")
        assert code == 1 and says in message, message
    assert affinity_of(root, 42) == "0-1"


def test_a_real_call_answers_what_it_replaced(served: tuple[Path, Path]) -> None:
    root, socket_path = served
    with grpc.insecure_channel(f"unix:{socket_path}") as channel:
        answer = msix_pb2_grpc.MsixServiceStub(channel).SetAffinity(pb.SetAffinityRequest(bdf=BDF, vector=2, cpus="1"))
    assert list(answer.previous_affinity) == [0, 1] and list(answer.affinity) == [1] and not answer.dry_run
    assert affinity_of(root, 42) == "1"


def test_cpus_without_spread_is_bad_usage(served: tuple[Path, Path]) -> None:
    root, socket_path = served
    code, _ = run(socket_path, "affinity", BDF, "2", "0", "--cpus", "1")
    assert code == 2
    assert affinity_of(root, 42) == "0-1", "refused before anything is sent"
