"""Piped, msixctl prints its tables and lines itself, without rich: byte for byte what rich prints."""

from __future__ import annotations

import contextlib
import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from msixctl import render
from msixd.api.msix.v1 import msix_pb2 as pb
from tests.cli.conftest import DEVICE, UNREADABLE

printable = st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=24)
# What rich could take for markup or emoji codes, or trim, had it not been told to print text as it is.
awkward = st.sampled_from(["[bold]x[/]", ":100:", ":smile:", "a\\[b]", "  padded  ", "", " ", "~1", "0-3,8"])
cells = st.one_of(printable, awkward)


def rich_prints(*blocks: str | render.Table) -> str:
    """What rich's piped console, as render.console() makes it, prints for these blocks."""
    out = io.StringIO()
    console = Console(file=out, width=render.PIPED_WIDTH, no_color=True, highlight=False, soft_wrap=True,
                      markup=False, emoji=False)
    for block in blocks:
        console.print(block if isinstance(block, str) else block.to_rich(), highlight=False)
    return out.getvalue()


def plain_prints(*blocks: str | render.Table) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert render._plain(list(blocks)), "printable ASCII, piped: printed without rich"
        render.emit(*blocks)
    return out.getvalue()


@settings(max_examples=300, deadline=None)
@given(columns=st.lists(cells.filter(bool), min_size=1, max_size=6), data=st.data(), text=cells)
def test_tables_and_lines_as_rich_prints_them(columns: list[str], data: st.DataObject, text: str) -> None:
    rows = data.draw(st.lists(st.lists(cells, min_size=len(columns), max_size=len(columns)), max_size=5))
    grid = render.table(*columns)
    for row in rows:
        grid.add_row(*row)
    assert plain_prints(text, grid, "") == rich_prints(text, grid, "")


@pytest.mark.parametrize(
    "device", [DEVICE, UNREADABLE, pb.Device(bdf="0000:00:1f.7")], ids=["owned", "unreadable", "empty"]
)
def test_every_table_msixctl_prints(capsys: pytest.CaptureFixture[str], device: pb.Device) -> None:
    """list and show over the CLI tests' devices: the plain bytes are rich's."""
    render.devices(pb.ListDevicesResponse(devices=[DEVICE, device]))
    render.device(device)
    plain = capsys.readouterr().out
    to_rich = render._plain
    try:
        render._plain = lambda blocks: False  # type: ignore[assignment]
        render.devices(pb.ListDevicesResponse(devices=[DEVICE, device]))
        render.device(device)
    finally:
        render._plain = to_rich  # type: ignore[assignment]
    assert capsys.readouterr().out == plain


def test_what_is_not_plain_goes_to_rich(monkeypatch: pytest.MonkeyPatch) -> None:
    grid = render.table("NAME")
    assert render._plain(["x", grid])
    grid.add_row("caf\u00e9")  # two bytes, one column: rich measures it
    assert not render._plain([grid])
    assert not render._plain(["tab\there"])
    titled = render.table("A")
    titled.title = "title"
    assert not render._plain([titled])
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich then styles even piped output
    assert not render._plain(["x"])
