"""Interrupts fired from outside msixd, and counted, while msixd restarts: python3 -m tests.vm.systemd.firing BDF.

It leases vectors 0 and 1 of the e1000e with its VFIO device file, and every
10 ms fires one loopback interrupt on vector 0 (SET_IRQS DATA_NONE|TRIGGER
through the leased device file) and one real e1000e interrupt on vector 1
(through the device file's BAR0, tests/vm/rawvfio.py), counting what each
leased eventfd receives. Lines on stdin, each answered with one JSON line:

    mark N   answer once N more rounds have been fired: {"rounds": total}
    stop     stop firing, wait (at most 10 s) until every interrupt fired has been
             received and the eventfds have counted every interrupt the kernel took on the
             real vector's IRQ since the lease began, answer {"fired": {...}, "received": {...},
             "taken": n, "errors": [...]}, both counts read at one moment
    end      (or end of input, after stop) end the lease: msixd gives the vectors fresh eventfds

The first line it prints is the lease: {"lease": id, "vectors": [...], "irqs": [...]},
or {"refused": code, "error": text}. Standard library and the project's own modules only.
"""

from __future__ import annotations

import json
import os
import select
import sys
import time

from msixctl.lease import LeaseError, request_lease
from tests.vm import rawvfio

PERIOD = 0.010
LOOPBACK, REAL = 0, 1


def say(value: object) -> None:
    print(json.dumps(value), flush=True)


def taken(irq: int) -> int:
    """Interrupts the kernel handled on an IRQ, summed over CPUs (/proc/interrupts)."""
    with open("/proc/interrupts") as table:
        for line in table:
            head, _, rest = line.partition(":")
            if head.strip() == str(irq):
                return sum(int(word) for word in rest.split() if word.isdigit())
    return -1


def main(argv: list[str]) -> int:
    bdf = argv[0]
    socket_path = argv[1] if len(argv) > 1 else "/run/msixd/msixd-lease.sock"
    try:
        held = request_lease(bdf, vectors=f"{LOOPBACK},{REAL}", device_fd=True, socket_path=socket_path)
    except LeaseError as err:
        say({"refused": err.code, "error": str(err)})
        return 1
    assert held.device_fd is not None
    fds = dict(zip(held.vectors, held.eventfds, strict=True))
    real_irq = dict(zip(held.vectors, held.irqs, strict=True))[REAL]
    taken_at_start = taken(real_irq)
    say({"lease": held.id, "vectors": held.vectors, "irqs": held.irqs})
    fired = dict.fromkeys(fds, 0)
    received = dict.fromkeys(fds, 0)
    errors: list[str] = []
    rounds, wanted = 0, -1

    def drain() -> None:
        for index, fd in fds.items():
            try:
                received[index] += os.eventfd_read(fd)
            except BlockingIOError:
                pass

    following = time.monotonic()
    stopping = False
    while not stopping:
        ready, _, _ = select.select([sys.stdin, *fds.values()], [], [], max(0.0, following - time.monotonic()))
        drain()
        if sys.stdin in ready:
            words = sys.stdin.readline().split()
            if not words or words[0] == "stop":
                stopping = True
                break
            if words[0] == "mark":
                wanted = rounds + int(words[1])
        if time.monotonic() >= following:
            following += PERIOD
            try:
                rawvfio.msix_trigger(held.device_fd, LOOPBACK)
                fired[LOOPBACK] += 1
            except OSError as err:
                errors.append(f"loopback round {rounds}: {err}")
            try:
                rawvfio.raise_e1000e_interrupt(held.device_fd, REAL)
                fired[REAL] += 1
            except OSError as err:
                errors.append(f"e1000e round {rounds}: {err}")
            rounds += 1
            if rounds == wanted:
                say({"rounds": rounds})
                wanted = -1
    deadline = time.monotonic() + 10
    while True:
        drain()  # before reading the kernel's count: the kernel counts an interrupt before signalling it
        kernel = taken(real_irq) - taken_at_start
        settled = received[LOOPBACK] == fired[LOOPBACK] and received[REAL] == kernel
        if settled or time.monotonic() >= deadline:
            break
        select.select(list(fds.values()), [], [], min(0.1, max(0.0, deadline - time.monotonic())))
    rawvfio.quiesce_e1000e(held.device_fd)  # the device is released at the end of the test
    say({"fired": fired, "received": received, "taken": kernel, "rounds": rounds, "errors": errors[:20]})
    sys.stdin.readline()  # "end", or end of input: the lease is held until then
    held.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
