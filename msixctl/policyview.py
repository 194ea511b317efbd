"""Placement policy for people: rules, vectors, changes, and what irqbalance was told."""

from __future__ import annotations

import time

from msixctl.render import Table, cpulist, emit, enum_name, table
from msixd.api.msix.v1 import msix_pb2 as pb

STATE_WORDS = {
    pb.VECTOR_POLICY_STATE_IN_PLACE: "in place",
    pb.VECTOR_POLICY_STATE_PENDING: "pending",
    pb.VECTOR_POLICY_STATE_DRIFTED: "drifted (observed)",
    pb.VECTOR_POLICY_STATE_UNCHANGEABLE: "unchangeable",
    pb.VECTOR_POLICY_STATE_NO_HANDLER: "no handler yet",
    pb.VECTOR_POLICY_STATE_ERROR: "error",
    pb.VECTOR_POLICY_STATE_LEFT_ALONE: "left alone",
}


def state(vector: pb.PolicyVector) -> str:
    return STATE_WORDS.get(vector.state, "?")


def rules(rules: list[pb.PolicyRule]) -> Table:
    grid = table("ORDER", "RULE", "FILE:LINE", "MATCH", "PLACE", "CPUS", "ON DRIFT")
    for rule in rules:
        cpus = "local" if rule.cpus_local else cpulist(rule.cpus)
        cpus += " (force)" if rule.force else ""
        grid.add_row(str(rule.order), rule.name, f"{rule.file}:{rule.line}", rule.match,
                     enum_name(pb.PolicyAction, rule.action, "POLICY_ACTION_"), cpus,
                     enum_name(pb.OnDrift, rule.on_drift, "ON_DRIFT_"))
    return grid


def vectors(vectors: list[pb.PolicyVector]) -> Table:
    grid = table("BDF", "VECTOR", "IRQ", "RULE", "STATE", "AFFINITY", "TARGET", "DETAIL")
    for vector in vectors:
        detail = vector.detail
        if vector.shadowed:
            detail = "; ".join(filter(None, [detail, f"shadows {', '.join(vector.shadowed)}"]))
        grid.add_row(vector.bdf, str(vector.vector), str(vector.irq), vector.rule, state(vector),
                     cpulist(vector.affinity), cpulist(vector.target) if vector.target else "-", detail or "")
    return grid


def irqbalance(link: pb.IrqbalanceLink) -> str:
    words = enum_name(pb.IrqbalanceState, link.state, "IRQBALANCE_STATE_").replace("-", " ")
    parts = [words]
    if link.pid:
        parts.append(f"pid {link.pid}")
    if link.state in (pb.IRQBALANCE_STATE_BANNED, pb.IRQBALANCE_STATE_PARTIAL):
        parts.append(f"msixd bans IRQ {cpulist(link.wanted)}" if link.wanted else "msixd bans nothing")
    text = ", ".join(parts)
    return f"{text}: {link.detail}" if link.detail else text


def report(value: pb.PolicyReport) -> None:
    status = value.reconciler
    made = ", ".join(f"{reason} {count}" for reason, count in sorted(status.corrections.items()) if count) or "none"
    when = time.strftime("%H:%M:%S", time.localtime(status.last_pass_time))
    last = f", last {status.last_pass_seconds * 1000:.1f} ms at {when}" if status.last_pass_time else ""
    lines = [
        ("policy", f"{value.directory}: {len(value.files)} files, {len(value.rules)} rules"),
        ("reconciler", f"every {status.interval_seconds:g} s, uevents {'on' if status.uevents else 'off'}, "
                       f"{status.passes} passes{last}"),
        ("placements", f"{made}; {status.failures} refused by the kernel; {status.drift_observed} moves observed"),
    ]
    if value.HasField("irqbalance"):
        lines.append(("irqbalance", irqbalance(value.irqbalance)))
    if value.trial:
        lines.append(("trial", f"{value.trial} (msixctl apply -f; not saved: the next reload reads policy.d)"))
    blocks: list[str | Table] = [f"{label + ':':<12}{text}" for label, text in lines]
    if not value.rules:
        emit(*blocks, "no rules: msixd places nothing on its own (see /etc/msixd/policy.d and the README)")
        return
    blocks += ["", rules(list(value.rules)), ""]
    blocks.append(vectors(list(value.vectors)) if value.vectors else "no vector is selected by any rule")
    emit(*blocks)


def diff(value: pb.DiffPolicyResponse) -> None:
    if not value.changes:
        emit("no changes: every vector is where the policy puts it")
        return
    grid = table("BDF", "VECTOR", "IRQ", "RULE", "FROM", "TO")
    for vector in value.changes:
        grid.add_row(vector.bdf, str(vector.vector), str(vector.irq), vector.rule, cpulist(vector.affinity),
                     cpulist(vector.target))
    emit(grid)


def applied(value: pb.ApplyPolicyResponse) -> None:
    head = f"{len(value.rules)} rules from {len(value.files)} files"
    blocks: list[str | Table] = []
    if value.dry_run:
        blocks.append(f"{head}: a dry run, nothing changed")
        if value.pending:
            grid = table("BDF", "VECTOR", "IRQ", "RULE", "FROM", "WOULD GO TO")
            for vector in value.pending:
                grid.add_row(vector.bdf, str(vector.vector), str(vector.irq), vector.rule, cpulist(vector.affinity),
                             cpulist(vector.target))
            blocks.append(grid)
        else:
            blocks.append("no vector would move")
    else:
        placed = sum(1 for c in value.corrections if not c.error)
        blocks.append(f"{head} applied: {placed} vectors placed")
        if value.corrections:
            grid = table("BDF", "VECTOR", "IRQ", "RULE", "FROM", "TO", "EFFECTIVE", "RESULT")
            for c in value.corrections:
                grid.add_row(c.bdf, str(c.vector), str(c.irq), c.rule, cpulist(c.previous), cpulist(c.target),
                             cpulist(c.effective), c.error or "placed")
            blocks.append(grid)
    if value.problems:
        blocks += ["", "vectors the policy cannot place:", vectors(list(value.problems))]
    if value.trial:
        blocks += ["", f"note: {value.trial} is not saved: copy it into policy.d to keep it across reloads and "
                   "restarts"]
    emit(*blocks)
