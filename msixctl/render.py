"""Output: tables for people, the API message as JSON for scripts.

On a terminal rich draws the tables (bold headers, fitted to the width). Piped,
rich would print plain columns, two spaces apart, each padded to its widest
cell; so does this module by itself when every cell is printable ASCII, without
importing rich (tests/cli/test_render.py checks the two print the same bytes).
Text is printed as it is: never read as rich markup or emoji codes.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable
from typing import TYPE_CHECKING

from msixd.api.msix.v1 import msix_pb2 as pb

if TYPE_CHECKING:
    from google.protobuf.internal.enum_type_wrapper import EnumTypeWrapper
    from google.protobuf.message import Message
    from rich.console import Console
    from rich.table import Table as RichTable

# What rich's piped console is given as its width: wider tables, and any text rich
# would not print as it is, go to rich.
PIPED_WIDTH = 10_000


class Table:
    """A table without borders: a header row, then one row of cells per item."""

    def __init__(self, *columns: str) -> None:
        self.columns = columns
        self.rows: list[tuple[str, ...]] = []
        self.title = ""

    def add_row(self, *cells: str) -> None:
        self.rows.append(cells)

    def widths(self) -> list[int]:
        return [max(len(cell) for cell in column) for column in zip(self.columns, *self.rows, strict=True)]

    def plain_lines(self) -> list[str]:
        widths = self.widths()
        return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                for row in (self.columns, *self.rows)]

    def to_rich(self) -> RichTable:
        from rich.table import Table as RichTable

        grid = RichTable(box=None, header_style="bold", pad_edge=False, title=self.title or None)
        for column in self.columns:
            grid.add_column(column, no_wrap=True)
        for row in self.rows:
            grid.add_row(*row)
        return grid


def table(*columns: str) -> Table:
    return Table(*columns)


def console() -> Console:
    from rich.console import Console

    # Piped: no colour, no wrapping, no truncation, so grep and awk see whole lines.
    if sys.stdout.isatty():
        return Console(markup=False, emoji=False)
    return Console(width=PIPED_WIDTH, no_color=True, highlight=False, soft_wrap=True, markup=False, emoji=False)


def _plain_text(text: str) -> bool:
    return text.isascii() and text.isprintable()


def _plain(blocks: list[str | Table]) -> bool:
    """Whether rich would print these exactly as they are: piped (as rich decides that), printable
    ASCII only (one column per character), and tables narrower than rich's piped width."""
    if sys.stdout.isatty() or "FORCE_COLOR" in os.environ or "TTY_COMPATIBLE" in os.environ:
        return False
    for block in blocks:
        if isinstance(block, str):
            if not _plain_text(block):
                return False
            continue
        cells = [*block.columns, *(cell for row in block.rows for cell in row)]
        if block.title or not all(map(_plain_text, cells)):
            return False
        widths = block.widths()
        if min(widths) == 0 or sum(widths) + 2 * (len(widths) - 1) > PIPED_WIDTH:
            return False
    return True


def emit(*blocks: str | Table) -> None:
    """Print lines of text and tables, in order, to stdout."""
    items = list(blocks)
    if _plain(items):
        lines = [line for item in items for line in ([item] if isinstance(item, str) else item.plain_lines())]
        sys.stdout.write("".join(f"{line}\n" for line in lines))
        return
    out = console()
    for item in items:
        out.print(item if isinstance(item, str) else item.to_rich(), highlight=False)


def to_json(message: Message, indent: int | None = 2) -> str:
    from google.protobuf import json_format

    return json_format.MessageToJson(
        message, preserving_proto_field_name=True, always_print_fields_with_no_presence=True, indent=indent
    )


def print_json(message: Message) -> None:
    print(to_json(message))


def cpulist(cpus: Iterable[int]) -> str:
    """Compact CPU list, "0-3,8"; "-" for none."""
    ordered = sorted(set(cpus))
    parts = []
    i = 0
    while i < len(ordered):
        j = i
        while j + 1 < len(ordered) and ordered[j + 1] == ordered[j] + 1:
            j += 1
        parts.append(str(ordered[i]) if i == j else f"{ordered[i]}-{ordered[j]}")
        i = j + 1
    return ",".join(parts) or "-"


def enum_name(enum_type: EnumTypeWrapper, value: int, prefix: str) -> str:
    return enum_type.Name(value).removeprefix(prefix).lower().replace("_", "-")


def domain_text(device: pb.Device) -> str:
    if not device.HasField("domain"):
        return "-"
    inferred = " (inferred)" if device.domain.source == pb.DOMAIN_SOURCE_INFERRED else ""
    return device.domain.name + inferred


def msix_cells(device: pb.Device) -> tuple[str, str]:
    if device.msix_probe == pb.MSIX_PROBE_UNREADABLE:
        return "?", "?"
    if device.msix_probe != pb.MSIX_PROBE_PRESENT:
        return "-", "-"
    return str(device.msix.table_size), "yes" if device.msix.enabled else "no"


def devices(response: pb.ListDevicesResponse) -> None:
    grid = table("BDF", "DRIVER", "VENDOR:DEVICE", "TABLE", "ENABLED", "VECTORS", "OWNED", "DOMAIN")
    for device in response.devices:
        size, enabled = msix_cells(device)
        grid.add_row(
            device.bdf,
            device.driver or "-",
            f"{device.vendor_id:04x}:{device.device_id:04x}",
            size,
            enabled,
            str(device.vectors_allocated),
            str(device.ownership.vectors_enabled) if device.ownership.owned else "-",
            domain_text(device),
        )
    emit(grid)
    unreadable = sum(d.msix_probe == pb.MSIX_PROBE_UNREADABLE for d in response.devices)
    if unreadable:
        print(
            f"note: the MSI-X capability of {unreadable} devices could not be read: config space beyond "
            "64 bytes needs root (CAP_SYS_ADMIN)",
            file=sys.stderr,
        )


def since(seconds: float) -> str:
    """A time msixd reported (seconds since the epoch), as local date and time."""
    import time

    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds)) if seconds else "-"


def holder(value: pb.LeaseHolder) -> str:
    return f"uid {value.uid} pid {value.pid} since {since(value.since)} (lease {value.lease})"


def leases(response: pb.ListLeasesResponse) -> None:
    grid = table("LEASE", "BDF", "VECTORS", "IRQS", "HOLDER", "SINCE", "DEVICE-FD", "ON-RETURN")
    for lease in response.leases:
        grid.add_row(
            lease.id,
            lease.bdf,
            cpulist(lease.vectors),
            ",".join(map(str, lease.irqs)),
            f"uid {lease.holder_uid} pid {lease.holder_pid}",
            since(lease.since),
            "yes" if lease.device_fd else "no",
            enum_name(pb.LeaseReturn, lease.on_return, "LEASE_RETURN_"),
        )
    emit(grid)
    if not response.leases:
        print("no leases", file=sys.stderr)


def per_cpu(counts: Iterable[int]) -> str:
    values = list(counts)
    if len(values) <= 8:
        return " ".join(str(c) for c in values)
    busy = [f"{cpu}:{count}" for cpu, count in enumerate(values) if count]
    return " ".join(busy) or "0"


def rule_cell(placed: pb.PolicyVector | None) -> str:
    """The rule that places a vector, and how it stands when it is not in place."""
    if placed is None:
        return "-"
    if placed.state in (pb.VECTOR_POLICY_STATE_IN_PLACE, pb.VECTOR_POLICY_STATE_LEFT_ALONE):
        return placed.rule
    words = enum_name(pb.VectorPolicyState, placed.state, "VECTOR_POLICY_STATE_").replace("-", " ")
    return f"{placed.rule} ({words})"


def device(value: pb.Device, rules: dict[int, pb.PolicyVector] | None = None) -> None:
    """rules: MSI-X index -> what the policy says of the vector; None when msixd could not say."""
    msix = value.msix
    size, enabled = msix_cells(value)
    lines = [
        ("device", f"{value.bdf}  {value.vendor_id:04x}:{value.device_id:04x}  class {value.class_code:06x}"),
        ("driver", value.driver or "-"),
        ("iommu group", str(value.iommu_group) if value.iommu_group >= 0 else "-"),
        ("numa node", str(value.numa_node)),
        ("local cpus", cpulist(value.local_cpus)),
        ("msi-x", f"{size} entries, enabled {enabled}" + (
            f", masked {'yes' if msix.function_masked else 'no'}, table BAR{msix.table_bir}+{msix.table_offset:#x}, "
            f"PBA BAR{msix.pba_bir}+{msix.pba_offset:#x}" if value.msix_probe == pb.MSIX_PROBE_PRESENT else "")),
        ("irq mode", enum_name(pb.IrqMode, value.irq_mode, "IRQ_MODE_")),
        ("domain", domain_text(value)),
    ]
    if value.ownership.owned:
        kind = "dynamic MSI-X" if value.ownership.dynamic_msix else "no dynamic MSI-X (NORESIZE)"
        lines.append(("owned", f"by msixd, {value.ownership.vectors_enabled} vectors with eventfds, {kind}"))
    blocks: list[str | Table] = [f"{label + ':':<13}{text}" for label, text in lines]
    if value.msix_probe == pb.MSIX_PROBE_UNREADABLE:
        emit(*blocks)
        blocks = []
        print("note: the MSI-X capability could not be read: config space beyond 64 bytes needs root", file=sys.stderr)
    if not value.vectors:
        emit(*blocks, "no vectors allocated")
        return
    columns = ["INDEX", "IRQ", "CHIP", "ACTIONS", "AFFINITY", "EFFECTIVE", "MOVABLE", "TOTAL", "PER-CPU"]
    grid = table(*columns, *(["RULE"] if rules is not None else []))
    for vector in value.vectors:
        guessed = "~" if vector.index_source == pb.INDEX_SOURCE_ORDER else ""
        placed = [rule_cell(rules.get(vector.index))] if rules is not None else []
        grid.add_row(
            f"{guessed}{vector.index}",
            str(vector.irq),
            vector.chip,
            ",".join(vector.actions) or "-",
            cpulist(vector.affinity),
            cpulist(vector.effective_affinity),
            "yes" if vector.affinity_settable else f"no: {vector.affinity_reason}",
            str(vector.total_count),
            per_cpu(vector.per_cpu_count),
            *placed,
        )
    leased = [f"vector {v.index} (IRQ {v.irq}) leased to {holder(v.lease)}" for v in value.vectors
              if v.HasField("lease")]
    emit(*blocks, "", grid, *(["", *leased] if leased else []))


def domains(response: pb.ListDomainsResponse) -> None:
    grid = table("NAME", "SCHEME", "REMAPPED", "SOURCE", "SIZE", "MAPPED", "DEVICES", "PARENTS")
    for domain in response.domains:
        grid.add_row(
            domain.name,
            enum_name(pb.DomainScheme, domain.scheme, "DOMAIN_SCHEME_"),
            "yes" if domain.remapped else "no",
            enum_name(pb.DomainSource, domain.source, "DOMAIN_SOURCE_"),
            str(domain.size) if domain.size else "-",
            str(domain.mapped),
            ",".join(domain.bdfs),
            " > ".join(domain.parents) or "-",
        )
    emit(grid)


def status(value: pb.Status) -> None:
    cpus = value.cpus
    grid = table("FEATURE", "STATE", "DETAIL")
    for field, feature in value.features.ListFields():
        state = enum_name(pb.FeatureState, feature.state, "FEATURE_STATE_")
        grid.add_row(field.name.replace("_", "-"), state, feature.detail)
    emit(
        f"msixd {value.daemon_version} on Linux {value.kernel_release}, up {value.uptime_seconds:.0f} s",
        f"cpus: online {cpulist(cpus.online)}, isolated {cpulist(cpus.isolated)}, nohz_full {cpulist(cpus.nohz_full)}",
        grid,
    )
