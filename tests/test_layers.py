"""The architecture, checked: who may import whom."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def imports(package: str) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in (REPO / package).rglob("*.py"):
        names: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
        found[str(path.relative_to(REPO))] = names
    return found


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("msixd/kernel", ("grpc", "msixd.service", "msixd.rpc", "msixd.api", "structlog")),
        ("msixd/service", ("grpc", "grpc_health", "grpc_reflection", "msixd.rpc", "msixd.api")),
    ],
)
def test_layer_does_not_import(package: str, forbidden: tuple[str, ...]) -> None:
    for path, names in imports(package).items():
        bad = {n for n in names if any(n == f or n.startswith(f + ".") for f in forbidden)}
        assert not bad, f"{path} imports {bad}"
