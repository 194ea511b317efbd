"""The one table from domain errors to gRPC codes, and what a held VFIO group answers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import grpc
import pytest
from typer.testing import CliRunner

from msixctl.client import ClientError
from msixctl.main import app
from msixd.api.msix.v1 import msix_pb2 as pb
from msixd.api.msix.v1 import msix_pb2_grpc
from msixd.errors import GroupHeld
from msixd.kernel.roots import KernelRoots
from msixd.kernel.vfio import VfioBusy
from msixd.rpc.errors import STATUS_CODES, status_code
from msixd.service.services import Services
from tests.fakes.vfio import FakeDevice, FakeVfio
from tests.fixturetree import move_to_vfio
from tests.serving import serve

BDF = "0000:00:03.0"


def test_a_held_group_is_a_failed_precondition_not_unavailable() -> None:
    assert status_code(GroupHeld(BDF, 7, [(4242, "qemu-system-x86")])) == grpc.StatusCode.FAILED_PRECONDITION
    assert status_code(VfioBusy("open vfio group", 16)) == grpc.StatusCode.FAILED_PRECONDITION


def test_no_domain_error_answers_unavailable() -> None:
    """UNAVAILABLE is what gRPC itself says when msixd cannot be reached; msixd never answers it."""
    assert grpc.StatusCode.UNAVAILABLE not in STATUS_CODES.values()


def test_enable_on_a_held_group_is_answered_as_such(tree: Callable[[str], Path], tmp_path: Path) -> None:
    root = tree("host-6.18")
    move_to_vfio(root, BDF)
    fake = FakeVfio({BDF: FakeDevice(table_size=8, dynamic=True)})
    fake.open_groups.add(7)  # another process has /dev/vfio/7 open
    services = Services.build(KernelRoots.under(root), tmp_path / "state.json", vfio_api=fake)  # type: ignore[arg-type]
    socket_path = tmp_path / "msixd.sock"
    server = serve(services, socket_path)
    try:
        with grpc.insecure_channel(f"unix:{socket_path}") as channel:
            with pytest.raises(grpc.RpcError) as err:
                msix_pb2_grpc.MsixServiceStub(channel).Enable(pb.EnableRequest(bdf=BDF, vectors=2))
        assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "VFIO group 7 is held by" in err.value.details()
        result = CliRunner().invoke(app, ["--socket", str(socket_path), "enable", BDF, "--vectors", "2"])
        assert isinstance(result.exception, ClientError)
        assert result.exception.exit_code == 1, "msixd answered: it was reached"
        assert "VFIO group 7 is held by" in str(result.exception) and "cannot reach" not in str(result.exception)
    finally:
        server.stop(None)
