"""A started msixd Server for tests, exactly as the daemon builds it (minus the config file)."""

from __future__ import annotations

from pathlib import Path

from msixd.rpc.access import Access, PeerRegistry
from msixd.rpc.gateway import Limits
from msixd.rpc.server import Server
from msixd.rpc.servicer import MsixServicer
from msixd.service.services import Services


def serve(services: Services, socket_path: Path, socket_group: str = "msixd", admin_group: str = "msixd-admin",
          limits: Limits | None = None, **server_args: str) -> Server:
    access = Access(PeerRegistry(), socket_group=socket_group, admin_group=admin_group)
    server = Server(MsixServicer(services), socket_path, access, limits or Limits(), **server_args)  # type: ignore[arg-type]
    server.start()
    return server
