"""bench/inventory.py and bench/report.py measure and report what they say, on a small tree."""

from __future__ import annotations

import json
from pathlib import Path

from bench import inventory, report


def test_inventory_against_the_floor_and_its_goals(tmp_path: Path) -> None:
    rows = inventory.run([64], [64], rounds=1)
    assert [(r["cpus"], r["irqs"]) for r in rows] == [(64, 64)]
    row = rows[0]
    for key in ("ratio_inventory", "ratio_get_device", "ratio_list_devices_rpc", "ratio_get_device_rpc"):
        assert row[key]["median"] > 0, key  # type: ignore[index]
    (tmp_path / "inventory.json").write_text(json.dumps({"grid": rows, "scaling": {"inventory": {
        "vs_irqs": {}, "vs_cpus": {}}}}))
    summary = report.write(tmp_path)
    assert "**Goals of the read path**" in summary and "every grid point" in summary
    assert (tmp_path / "inventory.png").is_file()


def test_breakdown_names_every_step() -> None:
    text = inventory.breakdown(64, 64, rounds=1)
    assert "64 CPUs, 64 IRQs" in text and "x floor" in text
    assert len([line for line in text.splitlines() if " ms " in line]) == 6
