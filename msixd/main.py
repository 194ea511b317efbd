"""msixd: the daemon's entry point. One function builds every component; signals only set events."""

from __future__ import annotations

import argparse
import gc
import grp
import os
import signal
import sys
import threading
from dataclasses import replace
from pathlib import Path

import structlog

from msixd import __version__, logs
from msixd.config import DEFAULT_PATH, Config, ConfigError, defaults, load, under_root
from msixd.errors import MsixdError
from msixd.kernel import sdnotify
from msixd.kernel.roots import KernelRoots
from msixd.rpc.access import Access, PeerRegistry
from msixd.rpc.metrics import Metrics
from msixd.rpc.server import Server, Tls
from msixd.rpc.servicer import MsixServicer
from msixd.service.services import Services

log = structlog.get_logger("msixd")
STOP_GRACE_SECONDS = 10


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="msixd",
        description="Serve the host's MSI-X vectors, IRQs and irq domains over gRPC, and place them on CPUs.",
        epilog="Settings come from the configuration file; the options below override it. SIGHUP reloads the file.",
    )
    parser.add_argument("--config", type=Path, default=os.environ.get("MSIXD_CONFIG") or None,
                        help=f"configuration file (env MSIXD_CONFIG; default {DEFAULT_PATH}, under DIR with "
                             "--root; absent: defaults)")
    parser.add_argument("--socket", type=Path, default=os.environ.get("MSIXD_SOCKET") or None,
                        help="Unix socket to serve on (env MSIXD_SOCKET; default /run/msixd/msixd.sock, under "
                             "DIR with --root)")
    parser.add_argument("--state-dir", type=Path, default=os.environ.get("MSIXD_STATE_DIR") or None,
                        help="where the desired state is kept (env MSIXD_STATE_DIR; default /var/lib/msixd, "
                             "under DIR with --root)")
    parser.add_argument("--root", type=Path, metavar="DIR",
                        help="serve a captured tree: read sys/, proc/ and dev/ under DIR instead of /, and keep "
                             "msixd's own configuration, state and socket under DIR too unless named")
    parser.add_argument("--log-format", choices=("auto", "json", "console"),
                        help="auto: console lines on a terminal, JSON otherwise")
    parser.add_argument("--log-level", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--version", action="version", version=f"msixd {__version__}")
    args = parser.parse_args(argv)
    if args.config is None:
        args.config = under_root(DEFAULT_PATH, args.root)
    return args


def effective_config(args: argparse.Namespace) -> Config:
    config = load(args.config, base=defaults(args.root))
    overrides = {
        "socket": args.socket, "state_dir": args.state_dir, "log_format": args.log_format, "log_level": args.log_level,
    }
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})


def chgrp_socket(path: Path, group: str) -> None:
    try:
        os.chown(path, -1, grp.getgrnam(group).gr_gid)
    except KeyError:
        log.warning("socket group does not exist; only root can connect", group=group, socket=str(path))
    except OSError as err:
        log.warning("cannot give the socket to its group; only root can connect", group=group, error=str(err))


def serve_metrics(metrics: Metrics, listen: str) -> int:
    """Serve Prometheus metrics on listen ("host:port"); the port served."""
    try:
        return metrics.serve(listen)
    except OSError as err:  # in use, an address not on this host, a name that does not resolve
        raise MsixdError(f"cannot serve metrics on {listen}: {err.strerror or err}") from None


class Daemon:
    """Everything msixd runs, built from one Config."""

    def __init__(self, config: Config, roots: KernelRoots) -> None:
        self.config = config
        self.services = Services.build(roots, config.state_dir / "state.json")
        self.services.placement.banned = config.banned_cpus
        self.access = Access(PeerRegistry(), config.socket_group, config.admin_group)
        self.metrics = Metrics(self.services.inventory)
        # Before any other listener: a port that cannot be served ends start-up before the socket exists.
        self.metrics_port = serve_metrics(self.metrics, config.metrics_listen) if config.metrics_listen else None
        tls = None
        if config.tls_cert and config.tls_key and config.tls_client_ca:
            tls = Tls(config.tls_cert, config.tls_key, config.tls_client_ca)
        self.server = Server(
            MsixServicer(self.services, self.access, self.metrics),
            config.socket, self.access.registry, config.tcp_listen, tls,
        )

    def start(self) -> None:
        outcome = self.services.owner.restore()
        self.services.keeper.start()
        self.server.start()
        chgrp_socket(self.config.socket, self.config.socket_group)
        log.info("serving", socket=str(self.config.socket), tcp_port=self.server.tcp_port or None,
                 metrics_port=self.metrics_port, version=__version__, restored=len(outcome),
                 not_restored={bdf: why for bdf, why in outcome.items() if why} or None)

    def reload(self, path: Path) -> None:
        """Apply what can change while running; a broken file changes nothing."""
        try:
            new = replace(load(path, missing_ok=False), socket=self.config.socket, state_dir=self.config.state_dir)
        except ConfigError as err:
            log.error("reload refused; the running configuration stays", error=str(err))
            return
        applied, need_restart = self.config.reload_changes(new)
        self.services.placement.banned = new.banned_cpus
        self.access.set_groups(new.socket_group, new.admin_group)
        chgrp_socket(new.socket, new.socket_group)
        logs.configure(new.log_format, new.log_level)
        kept = {name: getattr(self.config, name) for name in need_restart}
        self.config = replace(new, **kept)
        log.info("configuration reloaded", applied=applied or None, need_restart=need_restart or None)

    def stop(self) -> None:
        """In-flight RPCs finish, every vector is released; the desired state stays saved."""
        sdnotify.notify("STOPPING=1")
        self.server.stop(STOP_GRACE_SECONDS)
        self.services.keeper.stop()
        self.services.owner.close_all()
        log.info("stopped")


def run(args: argparse.Namespace, config: Config) -> None:
    stop, reload = threading.Event(), threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    signal.signal(signal.SIGHUP, lambda *_: (reload.set(), stop.set()))
    roots = KernelRoots.under(args.root) if args.root else KernelRoots()
    daemon = Daemon(config, roots)
    daemon.start()
    # Everything built so far (grpc, protobuf, the servicer) lives as long as the
    # process: keep it out of the collector's generations, so a collection during
    # a request walks only that request's objects (a p99 cost, see bench/rpc.py).
    gc.freeze()
    sdnotify.notify("READY=1")
    ping = sdnotify.watchdog_interval()
    while True:
        stop.wait(ping)
        if reload.is_set():
            reload.clear()
            stop.clear()
            daemon.reload(args.config)
            continue
        if stop.is_set():
            break
        sdnotify.notify("WATCHDOG=1")  # the loop is alive and nothing is stuck in it
    daemon.stop()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = effective_config(args)
    except ConfigError as err:
        logs.configure(args.log_format or "auto", "info")
        log.error("cannot start: bad configuration", error=str(err))
        return 1
    logs.configure(config.log_format, config.log_level)
    try:
        run(args, config)
    except MsixdError as err:
        log.error("cannot start", error=str(err))
        return 1
    except PermissionError as err:
        log.error("cannot start", error=str(err), hint="msixd runs as root (or with CAP_SYS_ADMIN)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
