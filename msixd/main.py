"""msixd: the daemon's entry point. One function builds every component; signals only set events."""

from __future__ import annotations

import argparse
import gc
import grp
import os
import resource
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import structlog

from msixd import __version__, logs
from msixd.config import DEFAULT_PATH, Config, ConfigError, defaults, load, under_root
from msixd.errors import MsixdError
from msixd.kernel import sdnotify
from msixd.kernel.roots import KernelRoots
from msixd.kernel.uevent import UeventSocket
from msixd.liveness import Liveness, SelfProbe, heartbeat
from msixd.rpc.access import Access, PeerRegistry
from msixd.rpc.gateway import Limits
from msixd.rpc.httpserve import MetricsHttp
from msixd.rpc.leaseserve import LeaseServer, lease_socket
from msixd.rpc.limits import StreamLimiter
from msixd.rpc.metrics import Metrics
from msixd.rpc.server import Server, Tls, prepare_socket
from msixd.rpc.servicer import MsixServicer
from msixd.service.services import Services

log = structlog.get_logger("msixd")
# In-flight calls may finish within this; streams still open then are cancelled (a stop takes
# well under systemd's TimeoutStopSec).
STOP_GRACE_SECONDS = 3


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
    parser.add_argument("--policy-dir", type=Path, default=os.environ.get("MSIXD_POLICY_DIR") or None,
                        help="placement rules, *.toml (env MSIXD_POLICY_DIR; default /etc/msixd/policy.d, under "
                             "DIR with --root)")
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


def effective_config(args: argparse.Namespace, missing_ok: bool = True) -> Config:
    """The configuration file over the defaults, then the command line's options. missing_ok: an
    absent file means the defaults (at start); a reload refuses it."""
    config = load(args.config, missing_ok=missing_ok, base=defaults(args.root))
    overrides = {
        "socket": args.socket, "state_dir": args.state_dir, "log_format": args.log_format, "log_level": args.log_level,
        "policy_dir": args.policy_dir,
    }
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})


def chgrp_socket(path: Path, group: str) -> None:
    try:
        os.chown(path, -1, grp.getgrnam(group).gr_gid)
    except KeyError:
        log.warning("socket group does not exist; only root can connect", group=group, socket=str(path))
    except OSError as err:
        log.warning("cannot give the socket to its group; only root can connect", group=group, error=str(err))


def raise_file_limit() -> int:
    """Raise the soft RLIMIT_NOFILE to the hard one (systemd gives services 1024 soft); return it.

    The limits on connections are sized from it (Limits.for_files).
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as err:
            log.warning("cannot raise the file descriptor limit", soft=soft, hard=hard, error=str(err))
    return soft


class Daemon:
    """Everything msixd runs, built from one Config."""

    def __init__(self, config: Config, roots: KernelRoots) -> None:
        self.config = config
        self.services = Services.build(roots, config.state_dir / "state.json", policy_dir=config.policy_dir,
                                       interval=config.policy_interval, irqbalance=config.irqbalance == "ban",
                                       uevents=open_uevents(roots))
        self.services.placement.banned = config.banned_cpus
        self.services.leases.rules = config.leases
        self.access = Access(PeerRegistry(), config.socket_group, config.admin_group,
                             config.tls_admins, config.tls_readers)
        self.limits = Limits.for_files(raise_file_limit(), config.client_idle_seconds)
        self.metrics = Metrics(self.services.inventory, self.services.leases, self.services.reconciler)
        # Before any other listener: a port that cannot be served ends start-up before the socket exists.
        self.metrics_http: MetricsHttp | None = None
        if config.metrics_listen:
            self.metrics_http = self.metrics.serve(config.metrics_listen, self.limits.metrics_connections)
        tls = None
        if config.tls_cert and config.tls_key and config.tls_client_ca:
            tls = Tls(config.tls_cert, config.tls_key, config.tls_client_ca)
        self.servicer = MsixServicer(self.services, self.metrics, StreamLimiter(self.limits.streams_per_caller))
        self.server = Server(self.servicer, config.socket, self.access, self.limits, config.tcp_listen, tls)
        prepare_socket(lease_socket(config.socket))
        self.lease_server = LeaseServer(lease_socket(config.socket), self.services.leases, self.access, self.limits)
        self.probe = SelfProbe(str(self.server.admin_socket_path))

    def start(self) -> None:
        outcome = self.services.owner.restore()
        self.services.keeper.start()
        try:
            policy = self.services.reconciler.load_policy()
            log.info("policy loaded", directory=str(self.config.policy_dir), rules=len(policy.rules),
                     files=list(policy.files))
        except MsixdError as err:
            log.error("policy not loaded: msixd places nothing until it is fixed (then systemctl reload msixd)",
                      error=str(err))
        self.services.irqbalance.start()
        self.services.reconciler.start()
        self.server.start()
        self.lease_server.start()
        chgrp_socket(self.config.socket, self.config.socket_group)
        chgrp_socket(self.server.admin_socket_path, self.config.admin_group)
        chgrp_socket(self.lease_server.path, self.config.socket_group)
        self.probe.start()
        log.info("serving", socket=str(self.config.socket), admin_socket=str(self.server.admin_socket_path),
                 lease_socket=str(self.lease_server.path),
                 tcp_port=self.server.tcp_port or None,
                 metrics_port=self.metrics_http.port if self.metrics_http else None, version=__version__,
                 restored=len(outcome), not_restored={bdf: why for bdf, why in outcome.items() if why} or None)

    def liveness(self, stuck_after: float) -> Liveness:
        def calls() -> str:
            name, seconds = self.servicer.longest_call()
            return f"a {name} call has run for {seconds:.0f} s" if seconds > stuck_after else ""

        checks = [
            heartbeat("gateway", lambda: self.server.gateway.heartbeat, 5.0),
            heartbeat("lease socket", lambda: self.lease_server.heartbeat, 5.0),
            heartbeat("keeper", lambda: self.services.keeper.heartbeat, stuck_after),
            heartbeat("placement reconciler", lambda: self.services.reconciler.heartbeat, stuck_after),
            self.probe.check(stuck_after),
            calls,
        ]
        if self.metrics_http is not None:
            http = self.metrics_http
            checks.append(heartbeat("metrics server", lambda: http.heartbeat, 5.0))
        return Liveness(checks)

    def reload(self, read: Callable[[], Config]) -> None:
        """Apply what can change while running; a broken file changes nothing.

        read() gives the configuration as at start: the file, then the command line's options.
        """
        try:
            new = replace(read(), socket=self.config.socket, state_dir=self.config.state_dir)
        except ConfigError as err:
            log.error("reload refused; the running configuration stays", error=str(err))
            self.services.reconciler.reload()  # the policy is its own files: re-read them all the same
            return
        applied, need_restart = self.config.reload_changes(new)
        self.services.placement.banned = new.banned_cpus
        self.services.reconciler.policy_dir = new.policy_dir
        self.services.reconciler.interval = new.policy_interval
        self.services.irqbalance.enabled = new.irqbalance == "ban"
        self.services.irqbalance.poke()
        self.services.reconciler.reload()
        self.services.leases.rules = new.leases
        self.access.set_policy(new.socket_group, new.admin_group, new.tls_admins, new.tls_readers)
        chgrp_socket(new.socket, new.socket_group)
        chgrp_socket(self.lease_server.path, new.socket_group)
        chgrp_socket(self.server.admin_socket_path, new.admin_group)
        logs.configure(new.log_format, new.log_level)
        kept = {name: getattr(self.config, name) for name in need_restart}
        self.config = replace(new, **kept)
        log.info("configuration reloaded", applied=applied or None, need_restart=need_restart or None)

    def stop(self) -> None:
        """In-flight RPCs finish (streams are cut after the grace), every vector is released;
        the desired state stays saved."""
        sdnotify.notify("STOPPING=1")
        self.servicer.end_streams()
        self.probe.stop()
        self.server.stop(STOP_GRACE_SECONDS)
        self.lease_server.stop()
        if self.metrics_http is not None:
            self.metrics_http.stop()
        self.services.keeper.stop()
        self.services.reconciler.stop()
        self.services.irqbalance.stop()
        self.services.owner.close_all()
        log.info("stopped")


def open_uevents(roots: KernelRoots) -> UeventSocket | None:
    """The kernel's uevents, for the machine's own roots (a captured tree has none); None when the
    socket cannot be had (no AF_NETLINK in the sandbox): the reconciler then looks periodically."""
    if roots != KernelRoots():
        return None
    try:
        return UeventSocket()
    except OSError as err:
        log.warning("no kernel uevents: device changes are seen by periodic passes only", error=str(err))
        return None


STOP_SIGNALS = frozenset({signal.SIGTERM, signal.SIGINT})
HANDLED_SIGNALS = STOP_SIGNALS | {signal.SIGHUP}


def run(args: argparse.Namespace, config: Config) -> None:
    """Serve until SIGTERM/SIGINT; SIGHUP reloads.

    The signals are blocked in every thread (the mask is set before the first one
    starts, and threads inherit it) and taken synchronously by the main loop with
    sigtimedwait(2): the kernel queues them, in order, so none is lost, not even a
    SIGTERM arriving together with a SIGHUP. (A Python-level handler would run
    only when the main thread next runs bytecode, and a signal delivered to
    another thread does not wake it.)
    """
    signal.pthread_sigmask(signal.SIG_BLOCK, HANDLED_SIGNALS)
    roots = KernelRoots.under(args.root) if args.root else KernelRoots()
    daemon = Daemon(config, roots)
    daemon.start()
    # Everything built so far (grpc, protobuf, the servicer) lives as long as the
    # process: keep it out of the collector's generations, so a collection during
    # a request walks only that request's objects (a p99 cost, see bench/rpc.py).
    gc.freeze()
    sdnotify.notify("READY=1")
    ping = sdnotify.watchdog_interval()
    liveness = daemon.liveness(stuck_after=max(2 * ping, 10.0) if ping else 10.0)
    next_ping = time.monotonic()
    while True:
        timeout = max(0.0, next_ping - time.monotonic()) if ping else 3600.0
        received = signal.sigtimedwait(HANDLED_SIGNALS, timeout)
        if received is not None and received.si_signo == signal.SIGHUP:
            daemon.reload(lambda: effective_config(args, missing_ok=False))
        elif received is not None:
            log.info("stopping", signal=signal.Signals(received.si_signo).name)
            break
        if ping and time.monotonic() >= next_ping:
            if not liveness.problems():
                sdnotify.notify("WATCHDOG=1")
            next_ping = time.monotonic() + ping
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
