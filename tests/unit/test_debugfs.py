from __future__ import annotations

from msixd.kernel.debugfs import parse_irq
from tests.fixturetree import FIXTURES

SAMPLES = FIXTURES / "debugfs-irqs"


def test_x86_global_domain_chain() -> None:
    info = parse_irq(133, (SAMPLES / "x86-global-pci-msi.txt").read_text())
    assert info.device == "0000:32:00.0"
    assert info.chain == (("PCI-MSI-3", "PCI-MSI", 0x1900003), ("VECTOR", "APIC", 0x85))
    assert not info.managed
    # The global domain's hwirq encodes the device and the vector index.
    assert info.chain[0][2] >> 11 == 0x3200 and info.chain[0][2] & 0x7FF == 3


def test_arm64_its_managed_chain() -> None:
    info = parse_irq(87, (SAMPLES / "arm64-its-managed.txt").read_text())
    assert info.device == "0000:91:00.0"
    assert [link[1] for link in info.chain] == ["ITS-MSI", "ITS", "GICv3"]
    assert info.chain[0][0] == ":soc@0:interrupt-controller@0e001000:its@0e050000-3"
    assert info.managed


def test_empty_text() -> None:
    info = parse_irq(1, "")
    assert info.chain == () and info.device == "" and not info.managed
