"""What each msixctl command does, once its command line is parsed (by msixctl/args.py or typer).

Every function takes the Target the global options name, then the command's
values as keywords; every output names a device by the BDF msixd answered with,
its canonical form, whatever form the user typed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, TypeVar

import grpc

from msixctl import render
from msixctl.args import Output
from msixctl.client import call, connect, translate
from msixctl.errors import EXIT_UNREACHABLE, EXIT_USAGE, BadUsage, ClientError
from msixctl.target import Target
from msixd.api.msix.v1 import msix_pb2 as pb

if TYPE_CHECKING:
    from msixd.api.msix.v1.msix_pb2_grpc import MsixServiceStub

Request = TypeVar("Request")
Response = TypeVar("Response")


def _rpc(
    target: Target,
    method: Callable[[MsixServiceStub], grpc.UnaryUnaryMultiCallable[Request, Response]],
    request: Request,
) -> Response:
    """One unary call: _rpc(target, lambda stub: stub.GetDevice, request) answers what GetDevice answers."""
    return call(target, lambda stub: method(stub)(request, timeout=target.timeout))


def list_devices(target: Target, *, all_devices: bool, output: Output) -> None:
    response = _rpc(target, lambda stub: stub.ListDevices, pb.ListDevicesRequest(all_devices=all_devices))
    render.print_json(response) if output is Output.json else render.devices(response)


def show(target: Target, *, bdf: str, output: Output) -> None:
    device = _rpc(target, lambda stub: stub.GetDevice, pb.GetDeviceRequest(bdf=bdf))
    if output is Output.json:
        render.print_json(device)
        return
    rules: dict[int, pb.PolicyVector] | None
    try:  # the rule that places each vector, when msixd can say
        placed = _rpc(target, lambda stub: stub.GetPolicy, pb.GetPolicyRequest(bdf=device.bdf))
        rules = {v.vector: v for v in placed.vectors}
    except ClientError:
        rules = None
    render.device(device, rules)


def domains(target: Target, *, output: Output) -> None:
    response = _rpc(target, lambda stub: stub.ListDomains, pb.ListDomainsRequest())
    render.print_json(response) if output is Output.json else render.domains(response)


def status(target: Target, *, output: Output) -> None:
    response = _rpc(target, lambda stub: stub.GetStatus, pb.GetStatusRequest())
    render.print_json(response) if output is Output.json else render.status(response)


def bind(target: Target, *, bdf: str, output: Output) -> None:
    answer = _rpc(target, lambda stub: stub.Bind, pb.BindRequest(bdf=bdf))
    if output is Output.json:
        render.print_json(answer)
    elif answer.unchanged:
        print(f"{answer.bdf} is already bound to vfio-pci")
    else:
        previous = answer.previous_driver or "no driver"
        print(f"{answer.bdf}: {previous} -> {answer.driver} (IOMMU group {answer.iommu_group})")


def release(target: Target, *, bdf: str, force: bool, output: Output) -> None:
    answer = _rpc(target, lambda stub: stub.Release, pb.ReleaseRequest(bdf=bdf, force=force))
    if output is Output.json:
        render.print_json(answer)
    else:
        print(f"{answer.bdf}: {answer.vectors_released} vectors released, now on {answer.driver or 'no driver'}")


def enable(target: Target, *, bdf: str, vectors: int, force: bool, output: Output) -> None:
    answer = _rpc(target, lambda stub: stub.Enable, pb.EnableRequest(bdf=bdf, vectors=vectors, force=force))
    if output is Output.json:
        render.print_json(answer)
        return
    path = render.enum_name(pb.ResizePath, answer.path, "RESIZE_PATH_")
    print(f"{answer.device.bdf}: {answer.vectors_before} -> {vectors} vectors ({path})")


def disable(target: Target, *, bdf: str, vector: int | None, force: bool, output: Output) -> None:
    request = pb.DisableRequest(bdf=bdf, force=force)
    if vector is not None:
        request.vector = vector
    answer = _rpc(target, lambda stub: stub.Disable, request)
    if output is Output.json:
        render.print_json(answer)
    else:
        print(f"{answer.device.bdf}: released vectors {render.cpulist(answer.released)}")


def affinity(
    target: Target,
    *,
    bdf: str,
    vector: int | None,
    cpus: str | None,
    spread: bool,
    spread_cpus: str,
    dry_run: bool,
    force: bool,
    output: Output,
) -> None:
    if spread:
        if vector is not None or cpus is not None:
            raise BadUsage("--spread places every vector: give only the BDF (and --cpus)")
        planned = pb.SpreadRequest(bdf=bdf, cpus=spread_cpus, dry_run=dry_run, force=force)
        plan = _rpc(target, lambda stub: stub.Spread, planned)
        if output is Output.json:
            render.print_json(plan)
            return
        grid = render.table("VECTOR", "IRQ", "CPU", "EFFECTIVE", "RESULT")
        for p in plan.placements:
            result = p.error or ("planned" if dry_run else "placed")
            grid.add_row(str(p.vector), str(p.irq), str(p.cpu), render.cpulist(p.effective_affinity), result)
        render.emit(grid)
        return
    if vector is None or cpus is None:
        raise BadUsage("give VECTOR and CPULIST, or --spread")
    if spread_cpus:
        raise BadUsage("--cpus goes with --spread; for one vector, CPULIST names the CPUs")
    request = pb.SetAffinityRequest(bdf=bdf, vector=vector, cpus=cpus, force=force, dry_run=dry_run)
    answer = _rpc(target, lambda stub: stub.SetAffinity, request)
    if output is Output.json:
        render.print_json(answer)
    elif dry_run:
        print(
            f"{answer.bdf} vector {answer.vector} (IRQ {answer.irq}): would set affinity "
            f"{render.cpulist(answer.affinity)} (now {render.cpulist(answer.previous_affinity)}, "
            f"effective {render.cpulist(answer.effective_affinity)}); nothing changed"
        )
    else:
        print(
            f"{answer.bdf} vector {answer.vector} (IRQ {answer.irq}): affinity {render.cpulist(answer.affinity)}, "
            f"effective {render.cpulist(answer.effective_affinity)}"
        )


def trigger(target: Target, *, bdf: str, vector: int, output: Output) -> None:
    answer = _rpc(target, lambda stub: stub.Trigger, pb.TriggerRequest(bdf=bdf, vector=vector))
    if output is Output.json:
        render.print_json(answer)
    else:
        print(f"{answer.bdf} vector {vector}: eventfd count {answer.eventfd_count}")


def watch(target: Target, *, bdf: str, interval: float, count: int, output: Output) -> None:
    request = pb.WatchRequest(bdf=bdf, interval_ms=int(interval * 1000), count=count)
    with connect(target) as stub:
        stream = stub.Watch(request)
        try:
            if output is Output.json:
                for sample in stream:
                    print(render.to_json(sample, indent=None), flush=True)
                return
            from rich.live import Live

            with Live(console=render.console(), auto_refresh=False) as live:
                for sample in stream:
                    live.update(_watch_table(sample).to_rich(), refresh=True)
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.CANCELLED:
                return
            raise translate(target, err) from None
        except KeyboardInterrupt:
            stream.cancel()


def lease(
    target: Target,
    *,
    bdf: str,
    command: list[str],
    vectors: str,
    count: int,
    grow: bool,
    device_fd: bool,
    release_after: bool,
) -> None:
    """Run command with the lease; exits with its status (SystemExit)."""
    from msixctl import leasecmd
    from msixctl.lease import LeaseError, lease_socket, request_lease

    if bool(vectors) == bool(count):
        raise BadUsage("give --vectors or --count")
    if not command:
        raise BadUsage("give the command to run after --")
    if target.tcp:
        raise BadUsage("leases pass file descriptors: only over msixd's local socket, not --target")
    try:
        held = request_lease(bdf, vectors=vectors or None, count=count or None, grow=grow, device_fd=device_fd,
                             on_return="release" if release_after else "own",
                             socket_path=lease_socket(target.socket), timeout=target.timeout)
    except LeaseError as err:
        if err.code == "UNAVAILABLE":
            raise ClientError(str(err), EXIT_UNREACHABLE) from None
        raise ClientError(f"{err} [{err.code}]") from None
    try:
        status = leasecmd.run(held, command)
    finally:
        held.close()
    raise SystemExit(status)


def list_leases(target: Target, *, bdf: str, output: Output) -> None:
    response = _rpc(target, lambda stub: stub.ListLeases, pb.ListLeasesRequest(bdf=bdf))
    render.print_json(response) if output is Output.json else render.leases(response)


def revoke(target: Target, *, lease_id: str, reason: str, output: Output) -> None:
    answer = _rpc(target, lambda stub: stub.RevokeLease, pb.RevokeLeaseRequest(lease=lease_id, reason=reason))
    if output is Output.json:
        render.print_json(answer)
    else:
        gone = answer.lease
        print(f"lease {gone.id} of {gone.bdf} vectors {render.cpulist(gone.vectors)} (uid {gone.holder_uid} "
              f"pid {gone.holder_pid}) revoked")


def policy(target: Target, *, device: str, output: Output) -> None:
    from msixctl import policyview

    report = _rpc(target, lambda stub: stub.GetPolicy, pb.GetPolicyRequest(bdf=device))
    render.print_json(report) if output is Output.json else policyview.report(report)


def diff(target: Target, *, output: Output) -> None:
    from msixctl import policyview

    changes = _rpc(target, lambda stub: stub.DiffPolicy, pb.DiffPolicyRequest())
    render.print_json(changes) if output is Output.json else policyview.diff(changes)


MAX_POLICY_FILE = 60 * 1024  # msixd takes requests of up to 64 KiB


def apply(target: Target, *, file: str | None, dry_run: bool, output: Output) -> None:
    from msixctl import policyview

    request = pb.ApplyPolicyRequest(dry_run=dry_run)
    if file is not None:
        try:
            with open(file, "rb") as stream:
                content = stream.read(MAX_POLICY_FILE + 1)
        except OSError as err:
            raise ClientError(f"cannot read {file}: {err.strerror}", EXIT_USAGE) from None
        if len(content) > MAX_POLICY_FILE:
            raise ClientError(f"{file} is larger than {MAX_POLICY_FILE // 1024} KiB: put it in policy.d instead",
                              EXIT_USAGE)
        request.file_name = os.path.basename(file)
        request.file_content = content
    answer = _rpc(target, lambda stub: stub.ApplyPolicy, request)
    render.print_json(answer) if output is Output.json else policyview.applied(answer)


def _watch_table(sample: pb.WatchSample) -> render.Table:
    grid = render.table("VECTOR", "IRQ", "TOTAL", "RATE/s", "SOURCE", "PER-CPU")
    for v in sample.vectors:
        source = "eventfd" if v.source == pb.COUNT_SOURCE_EVENTFD else "per_cpu_count"
        grid.add_row(str(v.vector), str(v.irq), str(v.total), f"{v.rate:.1f}", source, render.per_cpu(v.per_cpu_count))
    grid.title = f"{sample.bdf}  {time.strftime('%H:%M:%S', time.localtime(sample.time))}"
    return grid


# Each command's function, by the name msixctl/args.py and msixctl/app.py give it.
COMMANDS: dict[str, Callable[..., None]] = {
    "list": list_devices,
    "show": show,
    "domains": domains,
    "status": status,
    "bind": bind,
    "release": release,
    "enable": enable,
    "disable": disable,
    "affinity": affinity,
    "trigger": trigger,
    "watch": watch,
    "lease": lease,
    "leases": list_leases,
    "revoke": revoke,
    "policy": policy,
    "diff": diff,
    "apply": apply,
}
