"""irqbalance's control socket, against a stand-in that behaves as irqbalance.c (the real one: tests/vm)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from msixd.kernel import irqbalance as kib
from msixd.kernel.roots import KernelRoots
from tests.fakes.irqbalance import FakeIrqbalance, fake_process, socket_dir, strtoul


@pytest.fixture
def root() -> Iterator[Path]:
    # Short: a Unix socket's path must fit in 108 bytes.
    with tempfile.TemporaryDirectory(prefix="ib-", dir="/tmp") as directory:
        yield Path(directory)


def test_strtoul_is_c_strtoul() -> None:
    assert strtoul("  12 34", 0) == (12, 4)
    assert strtoul("  12 34", 4) == (34, 7)
    assert strtoul("   ", 0) == (0, 0)


def test_found_as_irqbalance_ui_finds_it(root: Path) -> None:
    roots = KernelRoots.under(root)
    fake_process(roots.procfs, 300, "/usr/sbin/irqbalance-ui")
    fake_process(roots.procfs, 200, "/usr/sbin/irqbalance", start_time=77)
    fake_process(roots.procfs, 100, "/usr/bin/python3")
    (roots.procfs / "400").mkdir()  # a kernel thread: empty cmdline
    (roots.procfs / "400/cmdline").write_bytes(b"")
    assert kib.find(roots) == [kib.Instance(200, 77)]
    assert kib.alive(roots, kib.Instance(200, 77)) and not kib.alive(roots, kib.Instance(200, 78))


def test_setup_and_ban_replace_the_whole_list(root: Path) -> None:
    roots = KernelRoots.under(root)
    path = socket_dir(roots.run) / "irqbalance321.sock"
    fake = FakeIrqbalance(str(path), sleep=10)
    try:
        fake.banned = [7]  # --banirq=7 on its command line
        where = kib.address(roots, 321, abstract_fallback=False)
        assert where == str(path)
        assert kib.setup(where, 5) == kib.Setup(10, frozenset({7}), frozenset())
        assert kib.ban(where, {40, 41, 7}, 5) == {7, 40, 41}
        assert kib.setup(where, 5).banned_irqs == {7, 40, 41}
        kib.ban(where, set(), 5)
        assert kib.setup(where, 5).banned_irqs == frozenset()
        assert fake.commands[-2] == b"settings ban irqs NONE"
        assert fake.refused == 0
    finally:
        fake.close()


def test_no_socket_file_and_no_abstract_socket_is_none(root: Path) -> None:
    assert kib.address(KernelRoots.under(root), 321, abstract_fallback=True) is None


def test_the_abstract_fallback_is_found_in_proc_net_unix(root: Path) -> None:
    roots = KernelRoots.under(root)
    (roots.procfs / "net").mkdir(parents=True)
    (roots.procfs / "net/unix").write_text(
        "Num       RefCount Protocol Flags    Type St Inode Path\n"
        f"000000008b5e3042: 00000002 00000000 00010000 0001 01 682825 {'@' * 108}\n")
    assert kib.address(roots, 321, abstract_fallback=True) == kib.ABSTRACT_ADDRESS
    assert kib.address(roots, 321, abstract_fallback=False) is None


def test_a_refusal_is_said_plainly(root: Path) -> None:
    roots = KernelRoots.under(root)
    path = socket_dir(roots.run) / "irqbalance5.sock"
    fake = FakeIrqbalance(str(path), root_uid=os.geteuid() + 1)  # takes us for a stranger
    try:
        with pytest.raises(kib.IrqbalanceError, match="only from root"):
            kib.setup(str(path), 5)
        assert fake.refused == 1
    finally:
        fake.close()


def test_a_long_list_never_straddles_an_old_daemons_buffer(root: Path) -> None:
    """Before 1.9.4 irqbalance reads 500 bytes: it keeps a prefix of whole numbers, never a cut one."""
    roots = KernelRoots.under(root)
    path = socket_dir(roots.run) / "irqbalance9.sock"
    fake = FakeIrqbalance(str(path), old=True)
    try:
        wanted = set(range(1000, 1400))
        command, carried = kib.ban_command(wanted)
        assert carried == wanted and len(command) < kib.BUFFER
        kib.ban(str(path), wanted, 5)
        kept = kib.setup(str(path), 5).banned_irqs
        assert kept and kept < wanted, "a prefix, all of it numbers asked for"
        assert kept == set(range(1000, 1000 + len(kept)))
    finally:
        fake.close()


def test_a_newer_daemon_takes_up_to_its_buffer(root: Path) -> None:
    roots = KernelRoots.under(root)
    path = socket_dir(roots.run) / "irqbalance10.sock"
    fake = FakeIrqbalance(str(path))
    try:
        wanted = set(range(10000, 14000))  # 4000 IRQs of 6 bytes: more than 16 KiB
        command, carried = kib.ban_command(wanted)
        assert len(command) < kib.BUFFER and carried < wanted
        kib.ban(str(path), wanted, 5)
        assert kib.setup(str(path), 5).banned_irqs == carried
    finally:
        fake.close()


@pytest.mark.parametrize("answer", ["", "SLEEP x BANNED 0", "hello", "SLEEP 10 IRQ 5 BANNED 0"])
def test_a_setup_answer_in_another_format_is_an_error(answer: str) -> None:
    with pytest.raises(kib.IrqbalanceError, match="format"):
        kib.parse_setup(answer)


def test_setup_parses_banned_cpus() -> None:
    setup = kib.parse_setup("SLEEP 1 IRQ 40 LOAD 3 DIFF 0 CLASS 4 IRQ 41 LOAD 0 DIFF 0 CLASS -1 BANNED 00000002")
    assert setup == kib.Setup(1, frozenset({40, 41}), frozenset({1}))
