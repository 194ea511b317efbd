"""msixd: the daemon's entry point. One function builds every component; signals only set an event."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

import structlog

from msixd import __version__, logs
from msixd.errors import MsixdError
from msixd.kernel.roots import KernelRoots
from msixd.rpc.server import create_server, set_serving
from msixd.rpc.servicer import MsixServicer
from msixd.service.services import Services

DEFAULT_SOCKET = "/run/msixd/msixd.sock"
DEFAULT_STATE_DIR = "/var/lib/msixd"
log = structlog.get_logger("msixd")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="msixd",
        description="Serve the host's MSI-X vectors, IRQs and irq domains over gRPC on a Unix socket.",
    )
    parser.add_argument(
        "--socket",
        type=Path,
        default=Path(os.environ.get("MSIXD_SOCKET", DEFAULT_SOCKET)),
        help=f"Unix socket to serve on (env MSIXD_SOCKET; default {DEFAULT_SOCKET})",
    )
    parser.add_argument(
        "--state-dir",
        type=Path,
        default=Path(os.environ.get("MSIXD_STATE_DIR", DEFAULT_STATE_DIR)),
        help=f"where the desired state is kept across restarts (env MSIXD_STATE_DIR; default {DEFAULT_STATE_DIR})",
    )
    parser.add_argument(
        "--root",
        type=Path,
        help="read sys/, proc/ and dev/ under this directory instead of / (a captured tree)",
    )
    parser.add_argument("--sysfs", type=Path, help="sysfs mount (default /sys)")
    parser.add_argument("--procfs", type=Path, help="procfs mount (default /proc)")
    parser.add_argument("--debugfs", type=Path, help="debugfs mount (default /sys/kernel/debug)")
    parser.add_argument(
        "--log-format", choices=("auto", "json", "console"), default="auto",
        help="auto: console lines on a terminal, JSON otherwise",
    )
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--version", action="version", version=f"msixd {__version__}")
    return parser.parse_args(argv)


def roots_from(args: argparse.Namespace) -> KernelRoots:
    roots = KernelRoots.under(args.root) if args.root else KernelRoots()
    overrides = {name: getattr(args, name) for name in ("sysfs", "procfs", "debugfs") if getattr(args, name)}
    return KernelRoots(**{**roots.__dict__, **overrides})


def run(args: argparse.Namespace, stop: threading.Event) -> None:
    roots = roots_from(args)
    services = Services.build(roots, args.state_dir / "state.json")
    server, health = create_server(MsixServicer(services), args.socket)
    services.owner.restore()
    server.start()
    set_serving(health, True)
    log.info("serving", socket=str(args.socket), version=__version__, sysfs=str(roots.sysfs))
    stop.wait()
    log.info("stopping")
    set_serving(health, False)
    server.stop(grace=5).wait()
    services.owner.close_all()
    args.socket.unlink(missing_ok=True)
    log.info("stopped")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logs.configure(args.log_format, args.log_level)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    try:
        run(args, stop)
    except MsixdError as err:
        log.error("cannot start", error=str(err))
        return 1
    except PermissionError as err:
        log.error("cannot start", error=str(err), hint="msixd needs root (or CAP_SYS_ADMIN for config space)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
