"""msixctl's commands and options as typer declares them: its help, and its usage errors.

Each command hands its values to msixctl.commands, as msixctl/args.py does for
the command lines it parses itself. Importing this module imports typer but not
gRPC, protobuf or rich: --help costs what typer costs.
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from msixctl.args import DEFAULT_SOCKET, DEFAULT_TIMEOUT, Output
from msixctl.errors import BadUsage
from msixctl.target import Target, make_target

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
ForceOption = Annotated[bool, typer.Option("--force", help="revoke the leases of vectors this changes")]
BdfArgument = Annotated[
    str,
    typer.Argument(metavar="BDF", help="PCI address, DDDD:BB:DD.F (or BB:DD.F for domain 0000)", show_default=False),
]


class State:
    target = Target(DEFAULT_SOCKET, DEFAULT_TIMEOUT)


@app.callback()
def options(
    socket: Annotated[str, typer.Option(envvar="MSIXD_SOCKET", help="msixd's Unix socket")] = DEFAULT_SOCKET,
    target: Annotated[str, typer.Option(envvar="MSIXD_TARGET", help="host:port of a remote msixd (mutual TLS)")] = "",
    ca: Annotated[str, typer.Option(envvar="MSIXD_CA", help="with --target: CA certificate that signed msixd's")] = "",
    cert: Annotated[str, typer.Option(envvar="MSIXD_CERT", help="with --target: this client's certificate")] = "",
    key: Annotated[str, typer.Option(envvar="MSIXD_KEY", help="with --target: this client's private key")] = "",
    timeout: Annotated[float, typer.Option(help="seconds to wait for an answer", min=0.1)] = DEFAULT_TIMEOUT,
) -> None:
    try:  # a bad combination is bad usage before any command runs
        State.target = make_target(socket, timeout, target, ca, cert, key)
    except BadUsage as err:
        raise typer.BadParameter(str(err)) from None


def _run(name: str, /, **values: object) -> None:
    """Run the command as main() does for the command lines msixctl/args.py parses; its BadUsage
    is typer's bad usage."""
    from msixctl import commands

    try:
        commands.COMMANDS[name](State.target, **values)
    except BadUsage as err:
        raise typer.BadParameter(str(err)) from None


@app.command("list")
def list_devices(
    all_devices: Annotated[bool, typer.Option("--all", help="also PCI functions without MSI-X")] = False,
    output: OutputOption = Output.table,
) -> None:
    """List PCI devices with an MSI-X capability: table size, enabled, vectors, domain.

    \b
    Example: msixctl list
    """
    _run("list", all_devices=all_devices, output=output)


@app.command()
def show(bdf: BdfArgument, output: OutputOption = Output.table) -> None:
    """Show one device and every vector: index, IRQ, chip, actions, affinity, counts per CPU.

    \b
    Example: msixctl show 0000:00:03.0
    """
    _run("show", bdf=bdf, output=output)


@app.command()
def domains(output: OutputOption = Output.table) -> None:
    """List the irq domains MSI-X vectors live in, with their parents.

    \b
    Example: msixctl domains
    """
    _run("domains", output=output)


@app.command()
def status(output: OutputOption = Output.table) -> None:
    """Show msixd's version, the kernel, its CPUs, and which kernel features are present.

    \b
    Example: msixctl status
    """
    _run("status", output=output)


@app.command()
def bind(bdf: BdfArgument, output: OutputOption = Output.table) -> None:
    """Hand a device to vfio-pci (its driver is remembered for release).

    Refused while other devices of its IOMMU group are bound to host drivers.

    \b
    Example: msixctl bind 0000:00:0a.0
    """
    _run("bind", bdf=bdf, output=output)


@app.command()
def release(bdf: BdfArgument, force: ForceOption = False, output: OutputOption = Output.table) -> None:
    """Release what msixd enabled on a device and give it back to its driver.

    \b
    Example: msixctl release 0000:00:0a.0
    """
    _run("release", bdf=bdf, force=force, output=output)


@app.command()
def enable(
    bdf: BdfArgument,
    vectors: Annotated[int, typer.Option("--vectors", "-n", help="vectors 0..N-1 get an eventfd each", min=1)],
    force: ForceOption = False,
    output: OutputOption = Output.table,
) -> None:
    """Own a vfio-pci device and give it exactly N MSI-X vectors; run again to resize.

    With dynamic MSI-X (Linux 6.5+) vectors are added or removed alone; without
    it, growing disables and re-enables MSI-X and re-applies every affinity.

    \b
    Example: msixctl enable 0000:00:0a.0 --vectors 5
    """
    _run("enable", bdf=bdf, vectors=vectors, force=force, output=output)


@app.command()
def disable(
    bdf: BdfArgument,
    vector: Annotated[Optional[int], typer.Option("--vector", help="release only this vector", min=0)] = None,
    force: ForceOption = False,
    output: OutputOption = Output.table,
) -> None:
    """Release one vector, or all of them (MSI-X off, device no longer owned).

    \b
    Example: msixctl disable 0000:00:0a.0 --vector 2
    """
    _run("disable", bdf=bdf, vector=vector, force=force, output=output)


@app.command()
def affinity(
    bdf: BdfArgument,
    vector: Annotated[
        Optional[int], typer.Argument(metavar="VECTOR", help="MSI-X table index", show_default=False)
    ] = None,
    cpus: Annotated[
        Optional[str], typer.Argument(metavar="CPULIST", help='CPU list, e.g. "1" or "0-3,8"', show_default=False)
    ] = None,
    spread: Annotated[bool, typer.Option("--spread", help="one vector per CPU, round-robin")] = False,
    spread_cpus: Annotated[
        str, typer.Option("--cpus", help="with --spread: the CPUs (default: local, not isolated)")
    ] = "",
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="check and show what would be done, change nothing")
    ] = False,
    force: Annotated[bool, typer.Option("--force", help="allow isolated and nohz_full CPUs")] = False,
    output: OutputOption = Output.table,
) -> None:
    """Place a vector on CPUs, or spread all of a device's vectors.

    Works for every MSI-X vector the kernel lets user space move (kernel-driver
    vectors too).

    \b
    Examples:
      msixctl affinity 0000:00:0a.0 3 1
      msixctl affinity 0000:00:0a.0 3 1 --dry-run
      msixctl affinity 0000:00:0b.0 --spread --dry-run
    """
    _run("affinity", bdf=bdf, vector=vector, cpus=cpus, spread=spread, spread_cpus=spread_cpus, dry_run=dry_run,
         force=force, output=output)


@app.command()
def trigger(
    bdf: BdfArgument,
    vector: Annotated[int, typer.Argument(metavar="VECTOR", help="MSI-X table index")],
    output: OutputOption = Output.table,
) -> None:
    """Inject a loopback interrupt on a vector msixd owns (tests the path end to end).

    \b
    Example: msixctl trigger 0000:00:0a.0 3
    """
    _run("trigger", bdf=bdf, vector=vector, output=output)


@app.command()
def watch(
    bdf: BdfArgument,
    interval: Annotated[float, typer.Option(help="seconds between samples", min=0.1, max=60)] = 1.0,
    count: Annotated[int, typer.Option(help="stop after N samples (0: until Ctrl-C)", min=0)] = 0,
    output: OutputOption = Output.table,
) -> None:
    """Interrupt counts and rates of a device's vectors, live, until Ctrl-C.

    With -o json, one JSON sample per line.

    \b
    Example: msixctl watch 0000:00:0a.0 --interval 0.5
    """
    _run("watch", bdf=bdf, interval=interval, count=count, output=output)


@app.command()
def lease(
    bdf: BdfArgument,
    command: Annotated[
        list[str],
        typer.Argument(metavar="-- COMMAND [ARGS]...", help="the program to run", show_default=False),
    ],
    vectors: Annotated[str, typer.Option("--vectors", help='MSI-X indexes, e.g. "0-3"')] = "",
    count: Annotated[int, typer.Option("--count", help="N vectors: the first enabled ones not leased", min=0)] = 0,
    grow: Annotated[bool, typer.Option("--grow", help="enable vectors that have no eventfd yet")] = False,
    device_fd: Annotated[bool, typer.Option("--device-fd", help="also pass the device's VFIO file")] = False,
    release_after: Annotated[
        bool, typer.Option("--release", help="release the vectors when the lease ends (default: msixd takes them back)")
    ] = False,
) -> None:
    """Run COMMAND with leased vectors: their eventfds from descriptor 3 on, described in MSIXD_LEASE_*.

    The lease ends when COMMAND exits, and this command exits with its status. Python programs
    read the lease with from_environment() of the module msixctl.lease.

    \b
    Example: msixctl lease 0000:00:0a.0 --vectors 0-1 -- my-driver --queues 2
    """
    _run("lease", bdf=bdf, command=command, vectors=vectors, count=count, grow=grow, device_fd=device_fd,
         release_after=release_after)


@app.command("leases")
def list_leases(
    bdf: Annotated[str, typer.Argument(metavar="[BDF]", help="only this device's", show_default=False)] = "",
    output: OutputOption = Output.table,
) -> None:
    """List the leases held now: vectors, holder, since when.

    \b
    Example: msixctl leases 0000:00:0a.0
    """
    _run("leases", bdf=bdf, output=output)


@app.command()
def revoke(
    lease_id: Annotated[str, typer.Argument(metavar="LEASE", help="the lease's id (msixctl leases)")],
    reason: Annotated[str, typer.Option(help="told to the holder and written to the audit log")] = "",
    output: OutputOption = Output.table,
) -> None:
    """End a lease: its holder is told why, its vectors return to msixd (or are released).

    \b
    Example: msixctl revoke 3fa2c1d09b7e --reason maintenance
    """
    _run("revoke", lease_id=lease_id, reason=reason, output=output)


@app.command("policy")
def policy_command(
    device: Annotated[str, typer.Option("--device", "-d", metavar="BDF", help="only this device's vectors")] = "",
    output: OutputOption = Output.table,
) -> None:
    """Show the placement policy: its rules in the order they apply, and each vector they select.

    Also the reconciler (interval, uevents, placements made) and irqbalance (what msixd banned).

    \b
    Example: msixctl policy --device 0000:00:0a.0
    """
    _run("policy", device=device, output=output)


@app.command()
def diff(output: OutputOption = Output.table) -> None:
    """Show what the reconciler would move now to match the running policy; change nothing.

    Empty once every vector is where the policy puts it. To see what an edited policy.d would do,
    use msixctl apply --dry-run.

    \b
    Example: msixctl diff
    """
    _run("diff", output=output)


@app.command()
def apply(
    file: Annotated[
        Optional[str],
        typer.Option("--file", "-f", metavar="FILE", help="a policy file to apply with policy.d's (added, or in "
                     "place of the file of its name); not saved"),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="check and show what would change, change nothing")
    ] = False,
    output: OutputOption = Output.table,
) -> None:
    """Read /etc/msixd/policy.d again and place every vector as it says, now.

    With -f FILE, FILE is used as if it were in policy.d (in place of a file of its name); the
    next reload reads policy.d as it is. Errors name the file and line.

    \b
    Examples:
      msixctl apply --dry-run
      msixctl apply -f 50-nic.toml --dry-run
    """
    _run("apply", file=file, dry_run=dry_run, output=output)
