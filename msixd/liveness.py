"""Whether msixd is making progress: only then is systemd's watchdog fed.

A loop that merely runs is not proof of life: msixd counts as alive while
its accept path turns (the gateway's loop), a call through its own socket is
answered (accept, relay, identification and a worker of root's pool), no
call has been running for longer than the watchdog allows (a worker stuck on
a lock or in the kernel), and the keeper, which lets the kernel have devices
back, keeps polling. When one of them stops, the pings stop, and systemd
kills and restarts msixd (WatchdogSec=, sd_watchdog_enabled(3)).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import grpc
import structlog
from grpc_health.v1 import health_pb2, health_pb2_grpc

log = structlog.get_logger(__name__)
Check = Callable[[], str]  # "" when fine, else what is stuck


def heartbeat(name: str, beat: Callable[[], float], within: float) -> Check:
    """A component whose loop records time.monotonic() each turn."""

    def check() -> str:
        age = time.monotonic() - beat()
        return f"the {name} has not turned for {age:.0f} s" if age > within else ""

    return check


class SelfProbe:
    """Calls msixd's own health check through its public socket, every `every` seconds."""

    def __init__(self, socket_path: str, every: float = 2.0, timeout: float = 5.0) -> None:
        self._target = f"unix:{socket_path}"
        self._every = every
        self._timeout = timeout
        self.answered = time.monotonic()
        self.error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="self-probe", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=self._timeout + 1)

    def _run(self) -> None:
        while not self._stop.wait(self._every):
            try:
                with grpc.insecure_channel(self._target) as channel:
                    # types-grpcio-health-checking declares HealthStub without its methods.
                    check = health_pb2_grpc.HealthStub(channel).Check  # type: ignore[attr-defined]
                    check(health_pb2.HealthCheckRequest(), timeout=self._timeout)
                self.answered = time.monotonic()
                self.error = ""
            except grpc.RpcError as err:
                self.error = f"{err.code().name}: {err.details()}"

    def check(self, within: float) -> Check:
        def check() -> str:
            age = time.monotonic() - self.answered
            if age <= within:
                return ""
            return f"msixd's own socket has not answered for {age:.0f} s ({self.error or 'no answer'})"

        return check


class Liveness:
    def __init__(self, checks: list[Check]) -> None:
        self._checks = checks
        self._reported: tuple[str, ...] = ()

    def problems(self) -> list[str]:
        found = [problem for check in self._checks if (problem := check())]
        if tuple(found) != self._reported:
            if found:
                log.error("not responsive: the watchdog is no longer fed", problems=found)
            elif self._reported:
                log.info("responsive again: feeding the watchdog")
            self._reported = tuple(found)
        return found
