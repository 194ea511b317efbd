"""A lease holder for the vm tests, run as an unprivileged user:
python3 -m tests.vm.leaseholder SOCKET BDF VECTORS [device_fd].

It leases the vectors and prints one JSON line: {"lease": id, "vectors": [...], "irqs": [...], "pid": n}, or
{"refused": code, "error": text}. Then it obeys one command per line on stdin, answering one JSON line each:

    wait I N     until vector I's eventfd has counted N interrupts since the lease began: {"count": n}
    loopback I   a loopback interrupt on vector I through the leased device file (SET_IRQS DATA_NONE|TRIGGER)
    raise I      a real e1000e interrupt on vector I through the leased device file's BAR0, then wait for it
    exit         end the lease (close its connection) and exit

Nothing here needs privileges: everything goes through the descriptors msixd passed.
"""

from __future__ import annotations

import json
import os
import select
import sys
import time

from msixctl.lease import LeaseError, request_lease
from tests.vm import rawvfio

DEADLINE = 30.0


def say(value: object) -> None:
    print(json.dumps(value), flush=True)


def main(argv: list[str]) -> int:
    socket_path, bdf, vectors = argv[:3]
    try:
        held = request_lease(bdf, vectors=vectors, device_fd="device_fd" in argv[3:], socket_path=socket_path)
    except LeaseError as err:
        say({"refused": err.code, "error": str(err)})
        return 0
    say({"lease": held.id, "vectors": held.vectors, "irqs": held.irqs, "pid": os.getpid()})
    counted = dict.fromkeys(held.vectors, 0)
    fd_of = dict(zip(held.vectors, held.eventfds, strict=True))

    def wait(index: int, total: int) -> int:
        deadline = time.monotonic() + DEADLINE
        while counted[index] < total and time.monotonic() < deadline:
            ready, _, _ = select.select([fd_of[index]], [], [], deadline - time.monotonic())
            if ready:
                try:
                    counted[index] += os.eventfd_read(fd_of[index])
                except BlockingIOError:  # msixd's eventfds are non-blocking, for every holder
                    pass
        return counted[index]

    raised = False
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == "exit":
            break
        index = int(words[1])
        if words[0] == "wait":
            say({"count": wait(index, int(words[2]))})
        elif words[0] == "loopback":
            assert held.device_fd is not None
            rawvfio.msix_trigger(held.device_fd, index)
            say({"done": True})
        elif words[0] == "raise":
            assert held.device_fd is not None
            before = counted[index]
            rawvfio.raise_e1000e_interrupt(held.device_fd, index)
            say({"count": wait(index, before + 1)})
            raised = True
    if raised and held.device_fd is not None:
        rawvfio.quiesce_e1000e(held.device_fd)  # msixd may disable the vectors once the lease ends
    held.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
