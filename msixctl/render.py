"""Output: tables for people, the API message as JSON for scripts."""

from __future__ import annotations

import enum
import sys
from collections.abc import Iterable

from google.protobuf import json_format
from google.protobuf.message import Message
from rich.console import Console
from rich.table import Table

from msixd.api.msix.v1 import msix_pb2 as pb


class Output(str, enum.Enum):
    table = "table"
    json = "json"


def console() -> Console:
    # Piped: no colour, no wrapping, no truncation, so grep and awk see whole lines.
    if sys.stdout.isatty():
        return Console()
    return Console(width=10_000, no_color=True, highlight=False, soft_wrap=True)


def to_json(message: Message, indent: int | None = 2) -> str:
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


def enum_name(enum_type: object, value: int, prefix: str) -> str:
    return enum_type.Name(value).removeprefix(prefix).lower().replace("_", "-")  # type: ignore[attr-defined]


def table(*columns: str) -> Table:
    grid = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        grid.add_column(column, no_wrap=True)
    return grid


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
    console().print(grid)
    unreadable = sum(d.msix_probe == pb.MSIX_PROBE_UNREADABLE for d in response.devices)
    if unreadable:
        print(
            f"note: the MSI-X capability of {unreadable} devices could not be read: config space beyond "
            "64 bytes needs root (CAP_SYS_ADMIN)",
            file=sys.stderr,
        )


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
    out = console()
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
    for label, text in lines:
        out.print(f"{label + ':':<13}{text}", highlight=False)
    if value.msix_probe == pb.MSIX_PROBE_UNREADABLE:
        print("note: the MSI-X capability could not be read: config space beyond 64 bytes needs root", file=sys.stderr)
    if not value.vectors:
        out.print("no vectors allocated")
        return
    out.print()
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
    out.print(grid)


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
    console().print(grid)


def status(value: pb.Status) -> None:
    out = console()
    cpus = value.cpus
    out.print(f"msixd {value.daemon_version} on Linux {value.kernel_release}, up {value.uptime_seconds:.0f} s", highlight=False)
    out.print(
        f"cpus: online {cpulist(cpus.online)}, isolated {cpulist(cpus.isolated)}, nohz_full {cpulist(cpus.nohz_full)}",
        highlight=False,
    )
    grid = table("FEATURE", "STATE", "DETAIL")
    for field, feature in value.features.ListFields():
        grid.add_row(field.name.replace("_", "-"), enum_name(pb.FeatureState, feature.state, "FEATURE_STATE_"), feature.detail)
    out.print(grid)
