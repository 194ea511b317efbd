"""The link to irqbalance: bans what msixd places, keeps what others banned, follows restarts."""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from msixd.kernel.roots import KernelRoots
from msixd.service.irqbalance import IrqbalanceLink, LinkState
from tests.fakes.irqbalance import FakeIrqbalance, fake_process, socket_dir


@pytest.fixture
def root() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="ibl-", dir="/tmp") as directory:
        yield Path(directory)


def running(root: Path, pid: int, start_time: int = 100, old: bool = False) -> FakeIrqbalance:
    roots = KernelRoots.under(root)
    fake_process(roots.procfs, pid, start_time=start_time)
    return FakeIrqbalance(str(socket_dir(roots.run) / f"irqbalance{pid}.sock"), old=old)


def link(root: Path, enabled: bool = True) -> IrqbalanceLink:
    return IrqbalanceLink(KernelRoots.under(root), root / "state/irqbalance.json", enabled, abstract_fallback=False)


def test_bans_what_msixd_places_and_keeps_the_operators_bans(root: Path) -> None:
    fake = running(root, 700)
    fake.banned = [5]  # irqbalance --banirq=5
    try:
        ours = link(root)
        ours._load_ours()
        ours.want(frozenset({40, 41}))
        ours.step()
        assert sorted(fake.banned) == [5, 40, 41]
        status = ours.status()
        assert (status.state, status.pid, status.banned) == (LinkState.BANNED, 700, {5, 40, 41})
        ours.want(frozenset({41}))
        ours.step()
        assert sorted(fake.banned) == [5, 41], "what leaves the policy comes off the list; the operator's stays"
        fake.banned = [5]  # someone replaced the list through irqbalance-ui
        ours.step()
        assert sorted(fake.banned) == [5, 41], "msixd's ban is put back"
        sent = len(fake.commands)
        ours.step()
        assert [c for c in fake.commands[sent:] if c.startswith(b"settings")] == [], "in line: nothing sent"
    finally:
        fake.close()


def test_a_restarted_msixd_takes_back_its_own_bans(root: Path) -> None:
    fake = running(root, 700)
    try:
        first = link(root)
        first._load_ours()
        first.want(frozenset({40, 41}))
        first.step()
        again = link(root)  # msixd restarted; irqbalance did not
        again._load_ours()
        again.want(frozenset({41}))
        again.step()
        assert fake.banned == [41], "40 was msixd's: it comes off, not kept as someone else's"
    finally:
        fake.close()


def test_a_restarted_irqbalance_gets_the_list_again(root: Path) -> None:
    fake = running(root, 700)
    ours = link(root)
    ours._load_ours()
    ours.want(frozenset({40}))
    ours.step()
    fake.close()
    (root / "proc/700").rename(root / "gone-700")
    fresh = running(root, 701, start_time=200)  # a new irqbalance, with an empty list
    try:
        ours.step()
        assert fresh.banned == [40] and ours.status().pid == 701
    finally:
        fresh.close()


def test_an_irqbalance_with_a_socket_is_found_at_the_next_check(root: Path) -> None:
    ours = link(root)
    ours.step()
    fake = running(root, 900)  # within SCAN_SECONDS of the last look through /proc
    try:
        ours.want(frozenset({40}))
        ours.step()
        assert ours.status().pid == 900 and fake.banned == [40]
    finally:
        fake.close()


def test_the_same_pid_started_again_is_a_new_irqbalance(root: Path) -> None:
    fake = running(root, 700, start_time=100)
    ours = link(root)
    ours._load_ours()
    ours.want(frozenset({40}))
    ours.step()
    fake.close()
    fresh = running(root, 700, start_time=999)
    try:
        ours.step()
        assert fresh.banned == [40]
    finally:
        fresh.close()


def test_no_irqbalance_and_one_without_a_socket(root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ours = link(root)
    ours.step()
    assert ours.status().state is LinkState.NOT_RUNNING
    fake_process(KernelRoots.under(root).procfs, 800)
    ours.step()
    assert ours.status().state is LinkState.NOT_RUNNING, "all of /proc is read only every SCAN_SECONDS"
    monkeypatch.setattr("msixd.service.irqbalance.SCAN_SECONDS", 0.0)
    ours.step()
    assert ours.status().state is LinkState.STARTING, "its socket may not be there yet"
    monkeypatch.setattr("msixd.service.irqbalance.SOCKET_GRACE_SECONDS", 0.0)
    ours.step()
    status = ours.status()
    assert status.state is LinkState.NO_SOCKET
    for fallback in ("IRQBALANCE_BANNED_CPULIST", "--banirq", "ban=true"):
        assert fallback in status.detail


def test_an_old_irqbalance_keeping_part_of_the_list_is_said(root: Path) -> None:
    fake = running(root, 700, old=True)
    try:
        ours = link(root)
        ours.want(frozenset(range(1000, 1400)))
        ours.step()
        status = ours.status()
        assert status.state is LinkState.PARTIAL and "before 1.9.4 reads 500 bytes" in status.detail
    finally:
        fake.close()


def test_ignore_leaves_irqbalance_alone(root: Path) -> None:
    fake = running(root, 700)
    try:
        ours = link(root, enabled=False)
        ours.want(frozenset({40}))
        ours.step()
        assert ours.status().state is LinkState.DISABLED and fake.commands == []
    finally:
        fake.close()
