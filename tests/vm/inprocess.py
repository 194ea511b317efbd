"""msixd in the test process, on the guest's real roots, served on a socket under the test's directory."""

from __future__ import annotations

from pathlib import Path

import grpc

from msixd.api.msix.v1 import msix_pb2_grpc
from msixd.kernel.roots import KernelRoots
from msixd.service.services import Services
from tests.serving import serve


class Msixd:
    """An in-process msixd on the guest's real roots."""

    def __init__(self, state_dir: Path) -> None:
        self.socket = state_dir / "msixd.sock"
        self.services = Services.build(KernelRoots(), state_dir / "state.json")
        self.services.owner.restore()
        self.services.keeper.start()
        self.server = serve(self.services, self.socket)
        self.channel = grpc.insecure_channel(f"unix:{self.socket}")
        self.stub = msix_pb2_grpc.MsixServiceStub(self.channel)

    def stop(self) -> None:
        self.channel.close()
        self.server.stop(None)
        self.services.keeper.stop()
        self.services.owner.close_all()
