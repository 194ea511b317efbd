"""Placement-policy values to msix.v1 messages. One function per message, no logic."""

from __future__ import annotations

from msixd.api.msix.v1 import msix_pb2 as pb
from msixd.service.irqbalance import LinkState, LinkStatus
from msixd.service.policy import OnDrift, Place, Policy, Rule
from msixd.service.reconciler import Applied, Correction, Decision, Report, Stats, VectorState

ACTION = {
    Place.PIN: pb.POLICY_ACTION_PIN,
    Place.SPREAD: pb.POLICY_ACTION_SPREAD,
    Place.BALANCE: pb.POLICY_ACTION_BALANCE,
    Place.LEAVE: pb.POLICY_ACTION_LEAVE,
}
ON_DRIFT = {OnDrift.CORRECT: pb.ON_DRIFT_CORRECT, OnDrift.OBSERVE: pb.ON_DRIFT_OBSERVE}
STATE = {
    VectorState.IN_PLACE: pb.VECTOR_POLICY_STATE_IN_PLACE,
    VectorState.PENDING: pb.VECTOR_POLICY_STATE_PENDING,
    VectorState.DRIFTED: pb.VECTOR_POLICY_STATE_DRIFTED,
    VectorState.UNCHANGEABLE: pb.VECTOR_POLICY_STATE_UNCHANGEABLE,
    VectorState.NO_HANDLER: pb.VECTOR_POLICY_STATE_NO_HANDLER,
    VectorState.ERROR: pb.VECTOR_POLICY_STATE_ERROR,
    VectorState.LEFT_ALONE: pb.VECTOR_POLICY_STATE_LEFT_ALONE,
}
IRQBALANCE = {
    LinkState.DISABLED: pb.IRQBALANCE_STATE_DISABLED,
    LinkState.NOT_RUNNING: pb.IRQBALANCE_STATE_NOT_RUNNING,
    LinkState.STARTING: pb.IRQBALANCE_STATE_STARTING,
    LinkState.NO_SOCKET: pb.IRQBALANCE_STATE_NO_SOCKET,
    LinkState.BANNED: pb.IRQBALANCE_STATE_BANNED,
    LinkState.PARTIAL: pb.IRQBALANCE_STATE_PARTIAL,
    LinkState.FAILED: pb.IRQBALANCE_STATE_FAILED,
}
PROBLEMS = frozenset({VectorState.ERROR, VectorState.UNCHANGEABLE})


def rule(value: Rule) -> pb.PolicyRule:
    return pb.PolicyRule(
        name=value.name,
        file=value.source,
        line=value.line,
        order=value.order,
        match=value.selector.describe(),
        action=ACTION[value.place],
        cpus=sorted(value.cpus or ()),
        cpus_local=value.cpus is None and value.place is not Place.LEAVE,
        force=value.force,
        on_drift=ON_DRIFT[value.on_drift],
    )


def vector(value: Decision) -> pb.PolicyVector:
    return pb.PolicyVector(
        bdf=value.bdf,
        vector=value.index,
        irq=value.irq,
        rule=value.rule.name,
        shadowed=value.shadowed,
        affinity=sorted(value.affinity),
        target=sorted(value.target or ()),
        state=STATE[value.state],
        detail=value.detail,
    )


def irqbalance(value: LinkStatus) -> pb.IrqbalanceLink:
    return pb.IrqbalanceLink(
        state=IRQBALANCE[value.state],
        pid=value.pid,
        socket=value.address,
        wanted=sorted(value.wanted),
        banned=sorted(value.banned),
        detail=value.detail,
    )


def reconciler(interval: float, uevents: bool, stats: Stats) -> pb.ReconcilerStatus:
    return pb.ReconcilerStatus(
        interval_seconds=interval,
        uevents=uevents,
        passes=stats.passes,
        last_pass_seconds=stats.last_pass_seconds,
        last_pass_time=stats.last_pass_time,
        corrections=dict(stats.corrections),
        failures=stats.failures,
        drift_observed=stats.drift_observed,
    )


def report(value: Report) -> pb.PolicyReport:
    message = pb.PolicyReport(
        directory=value.policy.directory,
        files=value.policy.files,
        trial=value.policy.trial,
        rules=[rule(r) for r in value.policy.rules],
        vectors=[vector(d) for d in value.decisions],
        reconciler=reconciler(value.interval, value.uevents, value.stats),
    )
    if value.irqbalance is not None:
        message.irqbalance.CopyFrom(irqbalance(value.irqbalance))
    return message


def correction(value: Correction) -> pb.PolicyCorrection:
    return pb.PolicyCorrection(
        bdf=value.bdf,
        vector=value.index,
        irq=value.irq,
        rule=value.rule,
        previous=sorted(value.previous),
        target=sorted(value.target),
        effective=sorted(value.effective),
        error=value.error,
    )


def applied(value: Applied) -> pb.ApplyPolicyResponse:
    policy: Policy = value.policy
    return pb.ApplyPolicyResponse(
        dry_run=value.dry_run,
        rules=[rule(r) for r in policy.rules],
        files=policy.files,
        trial=policy.trial,
        pending=[vector(d) for d in value.decisions if value.dry_run and d.state is VectorState.PENDING],
        corrections=[correction(c) for c in value.corrections],
        problems=[vector(d) for d in value.decisions if d.state in PROBLEMS],
    )
