"""The committed generated API is what proto/ generates today."""

from __future__ import annotations

import filecmp
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    subprocess.run([sys.executable, str(REPO / "proto/generate.py"), "--out", str(tmp_path)], check=True)
    committed = REPO / "msixd/api"
    fresh = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    assert fresh, "the generator wrote nothing"
    stale = [str(rel) for rel in fresh if not filecmp.cmp(tmp_path / rel, committed / rel, shallow=False)]
    assert not stale, f"regenerate with: python proto/generate.py ({stale} differ)"
