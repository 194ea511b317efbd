"""No comment, docstring or fixture cites a document outside the repository or an issue number:
a reader of the repository cannot follow either. Cite the kernel, a man page or a public project."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
UNREACHABLE = re.compile(
    r"\bshared/[\w./-]+|\b(?:kernel-interfaces|real-kernel-bench|style)\.md\b|\b[Ii]ssues? #?\d+|\(issue\b"
)


def tracked_text_files() -> list[Path]:
    names = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True)
    files = []
    for name in names.stdout.split("\0"):
        path = REPO / name
        if not name or name.startswith("bench/results/") or not path.is_file():
            continue
        try:
            path.read_text()
        except UnicodeDecodeError:
            continue  # binary: captured config space, images
        files.append(path)
    return files


def test_nothing_cites_what_a_reader_cannot_open() -> None:
    files = tracked_text_files()
    assert len(files) > 100, "git ls-files found the repository"
    found = [
        f"{path.relative_to(REPO)}:{number}: {line.strip()}"
        for path in files if path != Path(__file__)
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if UNREACHABLE.search(line)
    ]
    assert not found, "\n".join(found)


def test_the_pattern_finds_what_it_is_for() -> None:
    # Built from parts, so that this file does not itself hold a citation of the kind it looks for.
    shared, issue, interfaces = "shared" + "/", "issue" + " 6", "kernel-interfaces" + ".md"
    for cited in (f"see {shared}{interfaces} §0", f"({issue})", f"{issue.capitalize()}: one line", f"{interfaces} §6"):
        assert UNREACHABLE.search(cited), cited
    for fine in ("drivers/vfio/group.c", "a shared directory", "t" + issue.replace("6", "3")):
        assert not UNREACHABLE.search(fine), fine
