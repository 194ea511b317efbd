"""bench/cli.py measures what it says: each msixctl command and its floor both succeed against its server."""

from __future__ import annotations

import pytest

from bench import cli


def test_every_command_and_its_floor_run(capsys: pytest.CaptureFixture[str]) -> None:
    result = cli.run(runs=1, warm_up=0)  # a side that fails raises, with its stderr
    rows = [*result["commands"], *result["help"]]  # type: ignore[misc]
    assert [r["command"] for r in rows] == [c.name for c in cli.CASES] + ["--help", "show --help"]
    assert all(r["msixctl_ms"] > 0 and r["floor_ms"] > 0 for r in rows)
