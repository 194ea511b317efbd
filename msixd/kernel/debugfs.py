"""CONFIG_GENERIC_IRQ_DEBUGFS files: <debugfs>/irq/irqs/<irq> and irq/domains/<name>.

Optional by nature: Debian's 6.1 and 6.12 kernels are built without them, and
debugfs may not be mounted. Readers return None when a file is absent.
Formats follow kernel/irq/debugfs.c (irq_debug_show, irq_debug_show_data) and
kernel/irq/irqdomain.c (irq_domain_debug_show_one); the parent chain is the
sequence of "domain:" lines, each nested four columns deeper.
"""

from __future__ import annotations

from dataclasses import dataclass

from msixd.kernel.files import U32_MAX, decimal, list_dir, read_text
from msixd.kernel.roots import KernelRoots


@dataclass(frozen=True)
class DebugfsIrq:
    irq: int
    device: str
    # (domain name, chip name, hwirq) from the IRQ's own domain up to the root.
    chain: tuple[tuple[str, str, int], ...]
    managed: bool


def parse_irq(irq: int, text: str) -> DebugfsIrq:
    device = ""
    chain: list[tuple[str, str, int]] = []
    domain, chip, hwirq = "", "", 0
    managed = False
    for line in text.splitlines():
        key, _, value = line.strip().partition(":")
        value = value.strip()
        if key == "device" and not chain and not domain:
            device = value
        elif key == "IRQD_AFFINITY_MANAGED":
            managed = True
        elif key == "domain":
            if domain:
                chain.append((domain, chip, hwirq))
            domain, chip, hwirq = value, "", 0
        elif key == "hwirq" and domain:
            try:  # "0x%lx" in every kernel seen; anything else is not a number we can trust
                hwirq = int(value, 16) if value.startswith("0x") else int(value)
            except ValueError:
                pass
        elif key == "chip" and domain and not chip:
            chip = value
    if domain:
        chain.append((domain, chip, hwirq))
    return DebugfsIrq(irq=irq, device=device, chain=tuple(chain), managed=managed)


def available(roots: KernelRoots) -> bool:
    return bool(list_dir(f"{roots.debugfs}/irq/irqs"))


def read_irq(roots: KernelRoots, irq: int) -> DebugfsIrq | None:
    text = read_text(f"{roots.debugfs}/irq/irqs/{irq}")
    return None if text is None else parse_irq(irq, text)


@dataclass(frozen=True)
class DebugfsDomain:
    name: str
    size: int
    mapped: int


def read_domain(roots: KernelRoots, name: str) -> DebugfsDomain | None:
    """irq/domains/<name> ("/" in fwnode names is shown as ":")."""
    text = read_text(f"{roots.debugfs}/irq/domains/{name.replace('/', ':')}")
    if text is None:
        return None
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("    "):  # the parent domain's block
            break
        key, _, value = line.strip().partition(":")
        fields.setdefault(key, value.strip())
    size, mapped = fields.get("size", "0"), fields.get("mapped", "0")
    return DebugfsDomain(
        name=fields.get("name", name),
        size=decimal(size, 0, U32_MAX) or 0,
        mapped=decimal(mapped, 0, U32_MAX) or 0,
    )
