"""msixctl as root's peers use it: a reader (group msixd), an admin (msixd and msixd-admin), a stranger.

Each command is allowed or refused as the README says; what a change did is read
from /proc/interrupts, /proc/irq and sysfs, not from msixd. The admin's commands
run in order on the e1000e: bind, enable, affinity, trigger, watch, disable, release.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.vm import guest
from tests.vm.systemd import system
from tests.vm.systemd.system import E1000E, VIRTIO_NET, indexes, irq_of, msixctl, must

pytestmark = pytest.mark.systemd_guest

CHANGES = ("bind", "enable", "affinity", "trigger", "disable", "release")


def change_args(command: str, bdf: str) -> list[str]:
    return {
        "bind": ["bind", bdf], "enable": ["enable", bdf, "--vectors", "2"], "affinity": ["affinity", bdf, "0", "1"],
        "trigger": ["trigger", bdf, "0"], "disable": ["disable", bdf], "release": ["release", bdf],
    }[command]


@pytest.fixture(scope="module")
def refusals(users: dict[str, list[str]]) -> dict[str, system.Done]:
    """The reader's and the stranger's calls, two at a time: each takes seconds under emulation."""
    bdf = system.device(E1000E)
    calls = {f"reader {c}": ("reader", change_args(c, bdf)) for c in CHANGES}
    calls["reader list"] = ("reader", ["list"])
    calls["reader show"] = ("reader", ["show", bdf])
    calls["reader watch"] = ("reader", ["watch", system.device(VIRTIO_NET), "--count", "2", "--interval", "0.2",
                                        "-o", "json"])
    calls["stranger list"] = ("stranger", ["list"])
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {name: pool.submit(msixctl, *args, user=user) for name, (user, args) in calls.items()}
    return {name: future.result() for name, future in futures.items()}


def test_reader_may_list(refusals: dict[str, system.Done]) -> None:
    done = must(refusals["reader list"])
    assert system.device(E1000E) in done.out


def test_reader_may_show(refusals: dict[str, system.Done]) -> None:
    done = must(refusals["reader show"])
    assert system.device(E1000E) in done.out


def test_reader_may_watch(refusals: dict[str, system.Done]) -> None:
    samples = [json.loads(line) for line in must(refusals["reader watch"]).out.splitlines()]
    assert len(samples) == 2 and samples[0]["bdf"] == system.device(VIRTIO_NET)


@pytest.mark.parametrize("command", CHANGES)
def test_reader_may_not_change(command: str, refusals: dict[str, system.Done]) -> None:
    done = refusals[f"reader {command}"]
    assert done.rc == 1 and "may not change anything" in done.err, str(done)
    bdf = system.device(E1000E)
    assert guest.driver_of(bdf) == "e1000e" and indexes(bdf) == [], "the kernel saw nothing of it"


def test_stranger_may_not_read(refusals: dict[str, system.Done]) -> None:
    done = refusals["stranger list"]
    assert done.rc in (1, 3) and done.out == "", str(done)
    assert "permission denied" in done.err.lower() or "may not read" in done.err, str(done)


class TestAdmin:
    """One device through every change, in order, as a member of msixd and msixd-admin."""

    cursor = ""

    def test_bind(self, users: dict[str, list[str]]) -> None:
        bdf = system.device(E1000E)
        TestAdmin.cursor = system.journal_cursor()
        must(msixctl("bind", bdf, user="admin"))
        assert guest.driver_of(bdf) == "vfio-pci"

    def test_bind_is_in_the_journal_with_rpc_peer_and_bdf(self) -> None:
        """JSON lines on stdout reach the journal as they are (journalctl -o json)."""
        bdf = system.device(E1000E)
        events = system.msixd_events(system.journal(TestAdmin.cursor))
        binds = [e for e in events if e.get("event") == "bind"]
        assert binds, events
        uid = system.run(["id", "-u", "admin"]).out
        assert binds[0]["rpc"] == "Bind" and binds[0]["bdf"] == bdf and f"uid {uid} " in str(binds[0]["peer"])

    def test_enable(self) -> None:
        bdf = system.device(E1000E)
        must(msixctl("enable", bdf, "--vectors", "4", user="admin"))
        assert indexes(bdf) == [0, 1, 2, 3]

    def test_affinity(self) -> None:
        bdf = system.device(E1000E)
        must(msixctl("affinity", bdf, "2", "1", user="admin"))
        assert system.affinity(irq_of(bdf, 2)) == ("1", "1")

    def test_trigger(self) -> None:
        bdf = system.device(E1000E)
        done = must(msixctl("trigger", bdf, "3", user="admin"))
        assert "eventfd count" in done.out

    def test_watch(self) -> None:
        """The loopback interrupt of the trigger is counted on its vector's eventfd."""
        bdf = system.device(E1000E)
        watched = must(msixctl("watch", bdf, "--count", "1", "-o", "json", user="admin"))
        (sample,) = [json.loads(line) for line in watched.out.splitlines()]
        totals = {v.get("vector", 0): int(v.get("total", 0)) for v in sample["vectors"]}
        assert totals[3] >= 1, sample

    def test_disable_one_vector(self) -> None:
        bdf = system.device(E1000E)
        must(msixctl("disable", bdf, "--vector", "2", user="admin"))
        assert indexes(bdf) == [0, 1, 3]

    def test_release(self) -> None:
        bdf = system.device(E1000E)
        must(msixctl("release", bdf, user="admin"))
        assert indexes(bdf) == [] and guest.driver_of(bdf) == "e1000e" and system.driver_override(bdf) == ""
