"""msixctl: the command-line client of msixd."""

from __future__ import annotations

import os
import sys
import time
from typing import Annotated, Optional

import grpc
import typer

from msixctl import policyview, render
from msixctl.client import DEFAULT_SOCKET, EXIT_USAGE, ClientError, Target, Tls, call, connect, translate
from msixctl.render import Output
from msixd.api.msix.v1 import msix_pb2 as pb

try:  # typer 0.2x carries its own copy of click
    from typer._click.exceptions import UsageError
except ImportError:  # older typer depends on click
    from click.exceptions import UsageError  # type: ignore[no-redef]

app = typer.Typer(
    name="msixctl",
    help=(
        "Show and place the MSI-X vectors of this host's PCI devices.\n\n"
        "msixctl is a client of msixd, the daemon that reads them from the kernel and owns devices "
        "through VFIO; it talks to msixd over gRPC on a Unix socket. Every command takes -o json, "
        "which prints the API message itself, for scripts."
    ),
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    rich_markup_mode=None,
)

OutputOption = Annotated[Output, typer.Option("--output", "-o", help="table for people, json for scripts")]
BdfArgument = Annotated[
    str, typer.Argument(metavar="BDF", help="PCI address, DDDD:BB:DD.F (or BB:DD.F for domain 0000)", show_default=False)
]


class State:
    target = Target(DEFAULT_SOCKET, 10.0)


@app.callback()
def options(
    socket: Annotated[str, typer.Option(envvar="MSIXD_SOCKET", help="msixd's Unix socket")] = DEFAULT_SOCKET,
    target: Annotated[str, typer.Option(envvar="MSIXD_TARGET", help="host:port of a remote msixd (mutual TLS)")] = "",
    ca: Annotated[str, typer.Option(envvar="MSIXD_CA", help="with --target: CA certificate that signed msixd's")] = "",
    cert: Annotated[str, typer.Option(envvar="MSIXD_CERT", help="with --target: this client's certificate")] = "",
    key: Annotated[str, typer.Option(envvar="MSIXD_KEY", help="with --target: this client's private key")] = "",
    timeout: Annotated[float, typer.Option(help="seconds to wait for an answer", min=0.1)] = 10.0,
) -> None:
    tls = Tls(ca, cert, key) if ca and cert and key else None
    if target and tls is None:
        raise typer.BadParameter("--target needs --ca, --cert and --key (msixd's TCP listener is mutual TLS only)")
    State.target = Target(socket, timeout, target, tls)


def _rpc(name: str, request: object) -> object:
    target = State.target
    return call(target, lambda stub: getattr(stub, name)(request, timeout=target.timeout))


@app.command("list")
def list_devices(
    all_devices: Annotated[bool, typer.Option("--all", help="also PCI functions without MSI-X")] = False,
    output: OutputOption = Output.table,
) -> None:
    """List PCI devices with an MSI-X capability: table size, enabled, vectors, domain.

    Example: msixctl list
    """
    response = _rpc("ListDevices", pb.ListDevicesRequest(all_devices=all_devices))
    render.print_json(response) if output is Output.json else render.devices(response)  # type: ignore[arg-type]


@app.command()
def show(bdf: BdfArgument, output: OutputOption = Output.table) -> None:
    """Show one device and every vector: index, IRQ, chip, actions, affinity, counts per CPU.

    Example: msixctl show 0000:00:03.0
    """
    device = _rpc("GetDevice", pb.GetDeviceRequest(bdf=bdf))
    if output is Output.json:
        render.print_json(device)  # type: ignore[arg-type]
        return
    try:  # the rule that places each vector, when msixd can say
        placed = _rpc("GetPolicy", pb.GetPolicyRequest(bdf=device.bdf))  # type: ignore[attr-defined]
        rules = {v.vector: v for v in placed.vectors}  # type: ignore[attr-defined]
    except ClientError:
        rules = None
    render.device(device, rules)  # type: ignore[arg-type]


@app.command()
def domains(output: OutputOption = Output.table) -> None:
    """List the irq domains MSI-X vectors live in, with their parents.

    Example: msixctl domains
    """
    response = _rpc("ListDomains", pb.ListDomainsRequest())
    render.print_json(response) if output is Output.json else render.domains(response)  # type: ignore[arg-type]


@app.command()
def status(output: OutputOption = Output.table) -> None:
    """Show msixd's version, the kernel, its CPUs, and which kernel features are present.

    Example: msixctl status
    """
    response = _rpc("GetStatus", pb.GetStatusRequest())
    render.print_json(response) if output is Output.json else render.status(response)  # type: ignore[arg-type]


@app.command()
def bind(bdf: BdfArgument, output: OutputOption = Output.table) -> None:
    """Hand a device to vfio-pci (its driver is remembered for release).

    Refused while other devices of its IOMMU group are bound to host drivers.
    Example: msixctl bind 0000:00:0a.0
    """
    answer = _rpc("Bind", pb.BindRequest(bdf=bdf))
    if output is Output.json:
        render.print_json(answer)  # type: ignore[arg-type]
    elif answer.unchanged:  # type: ignore[attr-defined]
        print(f"{answer.bdf} is already bound to vfio-pci")  # type: ignore[attr-defined]
    else:
        print(f"{answer.bdf}: {answer.previous_driver or 'no driver'} -> {answer.driver} (IOMMU group {answer.iommu_group})")  # type: ignore[attr-defined]


@app.command()
def release(bdf: BdfArgument, output: OutputOption = Output.table) -> None:
    """Release what msixd enabled on a device and give it back to its driver.

    Example: msixctl release 0000:00:0a.0
    """
    answer = _rpc("Release", pb.ReleaseRequest(bdf=bdf))
    if output is Output.json:
        render.print_json(answer)  # type: ignore[arg-type]
    else:
        print(f"{answer.bdf}: {answer.vectors_released} vectors released, now on {answer.driver or 'no driver'}")  # type: ignore[attr-defined]


@app.command()
def enable(
    bdf: BdfArgument,
    vectors: Annotated[int, typer.Option("--vectors", "-n", help="vectors 0..N-1 get an eventfd each", min=1)],
    output: OutputOption = Output.table,
) -> None:
    """Own a vfio-pci device and give it exactly N MSI-X vectors; run again to resize.

    With dynamic MSI-X (Linux 6.5+) vectors are added or removed alone; without
    it, growing disables and re-enables MSI-X and re-applies every affinity.
    Example: msixctl enable 0000:00:0a.0 --vectors 5
    """
    answer = _rpc("Enable", pb.EnableRequest(bdf=bdf, vectors=vectors))
    if output is Output.json:
        render.print_json(answer)  # type: ignore[arg-type]
        return
    path = render.enum_name(pb.ResizePath, answer.path, "RESIZE_PATH_")  # type: ignore[attr-defined]
    print(f"{bdf}: {answer.vectors_before} -> {vectors} vectors ({path})")  # type: ignore[attr-defined]


@app.command()
def disable(
    bdf: BdfArgument,
    vector: Annotated[Optional[int], typer.Option("--vector", help="release only this vector", min=0)] = None,
    output: OutputOption = Output.table,
) -> None:
    """Release one vector, or all of them (MSI-X off, device no longer owned).

    Example: msixctl disable 0000:00:0a.0 --vector 2
    """
    request = pb.DisableRequest(bdf=bdf)
    if vector is not None:
        request.vector = vector
    answer = _rpc("Disable", request)
    if output is Output.json:
        render.print_json(answer)  # type: ignore[arg-type]
    else:
        print(f"{bdf}: released vectors {render.cpulist(answer.released)}")  # type: ignore[attr-defined]


@app.command()
def affinity(
    bdf: BdfArgument,
    vector: Annotated[Optional[int], typer.Argument(metavar="VECTOR", help="MSI-X table index", show_default=False)] = None,
    cpus: Annotated[Optional[str], typer.Argument(metavar="CPULIST", help='CPU list, e.g. "1" or "0-3,8"', show_default=False)] = None,
    spread: Annotated[bool, typer.Option("--spread", help="one vector per CPU, round-robin")] = False,
    spread_cpus: Annotated[str, typer.Option("--cpus", help="with --spread: the CPUs (default: local, not isolated)")] = "",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="check and show what would be done, change nothing")] = False,
    force: Annotated[bool, typer.Option("--force", help="allow isolated and nohz_full CPUs")] = False,
    output: OutputOption = Output.table,
) -> None:
    """Place a vector on CPUs, or spread all of a device's vectors.

    Works for every MSI-X vector the kernel lets user space move (kernel-driver
    vectors too). Examples: msixctl affinity 0000:00:0a.0 3 1
    msixctl affinity 0000:00:0a.0 3 1 --dry-run
    msixctl affinity 0000:00:0b.0 --spread --dry-run
    """
    if spread:
        if vector is not None or cpus is not None:
            raise typer.BadParameter("--spread places every vector: give only the BDF (and --cpus)")
        answer = _rpc("Spread", pb.SpreadRequest(bdf=bdf, cpus=spread_cpus, dry_run=dry_run, force=force))
        if output is Output.json:
            render.print_json(answer)  # type: ignore[arg-type]
            return
        grid = render.table("VECTOR", "IRQ", "CPU", "EFFECTIVE", "RESULT")
        for p in answer.placements:  # type: ignore[attr-defined]
            result = p.error or ("planned" if dry_run else "placed")
            grid.add_row(str(p.vector), str(p.irq), str(p.cpu), render.cpulist(p.effective_affinity), result)
        render.console().print(grid)
        return
    if vector is None or cpus is None:
        raise typer.BadParameter("give VECTOR and CPULIST, or --spread")
    if spread_cpus:
        raise typer.BadParameter("--cpus goes with --spread; for one vector, CPULIST names the CPUs")
    request = pb.SetAffinityRequest(bdf=bdf, vector=vector, cpus=cpus, force=force, dry_run=dry_run)
    answer = _rpc("SetAffinity", request)
    if output is Output.json:
        render.print_json(answer)  # type: ignore[arg-type]
    elif dry_run:
        print(
            f"{answer.bdf} vector {answer.vector} (IRQ {answer.irq}): would set affinity "  # type: ignore[attr-defined]
            f"{render.cpulist(answer.affinity)} (now {render.cpulist(answer.previous_affinity)}, "  # type: ignore[attr-defined]
            f"effective {render.cpulist(answer.effective_affinity)}); nothing changed"  # type: ignore[attr-defined]
        )
    else:
        print(
            f"{answer.bdf} vector {answer.vector} (IRQ {answer.irq}): affinity {render.cpulist(answer.affinity)}, "  # type: ignore[attr-defined]
            f"effective {render.cpulist(answer.effective_affinity)}"  # type: ignore[attr-defined]
        )


@app.command()
def trigger(bdf: BdfArgument, vector: Annotated[int, typer.Argument(metavar="VECTOR", help="MSI-X table index")], output: OutputOption = Output.table) -> None:
    """Inject a loopback interrupt on a vector msixd owns (tests the path end to end).

    Example: msixctl trigger 0000:00:0a.0 3
    """
    answer = _rpc("Trigger", pb.TriggerRequest(bdf=bdf, vector=vector))
    if output is Output.json:
        render.print_json(answer)  # type: ignore[arg-type]
    else:
        print(f"{bdf} vector {vector}: eventfd count {answer.eventfd_count}")  # type: ignore[attr-defined]


@app.command()
def watch(
    bdf: BdfArgument,
    interval: Annotated[float, typer.Option(help="seconds between samples", min=0.1, max=60)] = 1.0,
    count: Annotated[int, typer.Option(help="stop after N samples (0: until Ctrl-C)", min=0)] = 0,
    output: OutputOption = Output.table,
) -> None:
    """Interrupt counts and rates of a device's vectors, live, until Ctrl-C.

    With -o json, one JSON sample per line. Example: msixctl watch 0000:00:0a.0 --interval 0.5
    """
    from rich.live import Live

    target = State.target
    request = pb.WatchRequest(bdf=bdf, interval_ms=int(interval * 1000), count=count)
    with connect(target) as stub:
        stream = stub.Watch(request)
        try:
            if output is Output.json:
                for sample in stream:
                    print(render.to_json(sample, indent=None), flush=True)
                return
            with Live(console=render.console(), auto_refresh=False) as live:
                for sample in stream:
                    live.update(_watch_table(sample), refresh=True)
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.CANCELLED:
                return
            raise translate(target, err) from None
        except KeyboardInterrupt:
            stream.cancel()


def _watch_table(sample: pb.WatchSample) -> object:
    grid = render.table("VECTOR", "IRQ", "TOTAL", "RATE/s", "SOURCE", "PER-CPU")
    for v in sample.vectors:
        source = "eventfd" if v.source == pb.COUNT_SOURCE_EVENTFD else "per_cpu_count"
        grid.add_row(str(v.vector), str(v.irq), str(v.total), f"{v.rate:.1f}", source, render.per_cpu(v.per_cpu_count))
    grid.title = f"{sample.bdf}  {time.strftime('%H:%M:%S', time.localtime(sample.time))}"
    return grid


@app.command("policy")
def policy_command(
    device: Annotated[str, typer.Option("--device", "-d", metavar="BDF", help="only this device's vectors")] = "",
    output: OutputOption = Output.table,
) -> None:
    """Show the placement policy: its rules in the order they apply, and each vector they select.

    Also the reconciler (interval, uevents, placements made) and irqbalance (what msixd banned).
    Example: msixctl policy --device 0000:00:0a.0
    """
    report = _rpc("GetPolicy", pb.GetPolicyRequest(bdf=device))
    render.print_json(report) if output is Output.json else policyview.report(report)  # type: ignore[arg-type]


@app.command()
def diff(output: OutputOption = Output.table) -> None:
    """Show what the reconciler would move now to match the running policy; change nothing.

    Empty once every vector is where the policy puts it. To see what an edited policy.d would do,
    use msixctl apply --dry-run. Example: msixctl diff
    """
    changes = _rpc("DiffPolicy", pb.DiffPolicyRequest())
    render.print_json(changes) if output is Output.json else policyview.diff(changes)  # type: ignore[arg-type]


MAX_POLICY_FILE = 60 * 1024  # msixd takes requests of up to 64 KiB


@app.command()
def apply(
    file: Annotated[Optional[str], typer.Option("--file", "-f", metavar="FILE",
                                                help="a policy file to apply with policy.d's (added, or in place "
                                                     "of the file of its name); not saved")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run",
                                          help="check and show what would change, change nothing")] = False,
    output: OutputOption = Output.table,
) -> None:
    """Read /etc/msixd/policy.d again and place every vector as it says, now.

    With -f FILE, FILE is used as if it were in policy.d (in place of a file of its name); the
    next reload reads policy.d as it is. Errors name the file and line.
    Examples: msixctl apply --dry-run      msixctl apply -f 50-nic.toml --dry-run
    """
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
    answer = _rpc("ApplyPolicy", request)
    render.print_json(answer) if output is Output.json else policyview.applied(answer)  # type: ignore[arg-type]


def main() -> None:
    if len(sys.argv) == 1:
        sys.argv.append("--help")  # no command: teach, do not complain
    try:
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except UsageError as err:
        where = f"msixctl {err.ctx.command.name} --help" if err.ctx and err.ctx.command.name != "msixctl" else "msixctl --help"
        print(f"msixctl: {err.format_message()} (see {where})", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        sys.exit(130)
    except ClientError as err:
        print(f"msixctl: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except Exception as err:  # noqa: BLE001 - never a traceback for the user
        if os.environ.get("MSIXCTL_DEBUG") == "1":
            raise
        print(f"msixctl: unexpected error: {type(err).__name__}: {err} (MSIXCTL_DEBUG=1 shows the traceback)", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
