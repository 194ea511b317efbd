"""Domain errors shared by the kernel and service layers.

Each way to fail has its own class with typed fields; the transport maps
classes to its status codes in one table (msixd/rpc/errors.py).
"""

from __future__ import annotations


class MsixdError(Exception):
    """Base of every error msixd reports to a client."""


def shown(text: str, limit: int = 40) -> str:
    """A caller's text as an error message quotes it: repr'd, and cut short, because the message
    goes back to the caller and into the log whatever size the text was."""
    return repr(text) if len(text) <= limit else repr(text[:limit]) + f"... ({len(text)} characters)"


class InvalidArgument(MsixdError):
    """The request itself is wrong; nothing was touched."""


class InvalidBdf(InvalidArgument):
    def __init__(self, text: str) -> None:
        super().__init__(f"invalid PCI address {shown(text)}: expected DDDD:BB:DD.F or BB:DD.F (hex)")
        self.text = text


class InvalidCpuList(InvalidArgument):
    def __init__(self, text: str, reason: str) -> None:
        super().__init__(f"invalid CPU list {shown(text, 80)}: {reason}")
        self.text = text
        self.reason = reason


class DeviceNotFound(MsixdError):
    def __init__(self, bdf: str) -> None:
        super().__init__(f"no PCI device {bdf}")
        self.bdf = bdf


class KernelFormatError(MsixdError):
    """A kernel file held text that does not follow the kernel's own format."""

    def __init__(self, path: str, text: str, reason: str) -> None:
        shown = text if len(text) <= 80 else text[:77] + "..."
        super().__init__(f"{path}: {reason}: {shown!r}")
        self.path = path
        self.text = text
        self.reason = reason


class FailedPrecondition(MsixdError):
    """The request is well formed, but the system is not in a state that allows it."""


class ResourceExhausted(MsixdError):
    """Something the request needs is used up (file descriptors, interrupt vectors); nothing was lost."""


class VectorNotFound(MsixdError):
    def __init__(self, bdf: str, vector: int) -> None:
        super().__init__(f"{bdf} has no MSI-X vector {vector}")
        self.bdf = bdf
        self.vector = vector


class GroupHeld(MsixdError):
    """Another process has the device's VFIO group open."""

    def __init__(self, bdf: str, group: int, holders: list[tuple[int, str]]) -> None:
        who = ", ".join(f"pid {pid} ({command})" for pid, command in holders) or "an unknown process"
        super().__init__(f"{bdf}: VFIO group {group} is held by {who}")
        self.bdf = bdf
        self.group = group
        self.holders = holders


class LeaseHeld(FailedPrecondition):
    """Vectors the request would change are leased to another process; `holders` names who holds them."""

    def __init__(self, bdf: str, what: str, holders: dict[int, str],
                 hint: str = "; revoke the lease (msixctl revoke) or use --force") -> None:
        by_holder: dict[str, list[int]] = {}
        for vector, holder in sorted(holders.items()):
            by_holder.setdefault(holder, []).append(vector)
        named = "; ".join(f"vector{'s' if len(v) > 1 else ''} {','.join(map(str, v))} to {h}"
                          for h, v in by_holder.items())
        super().__init__(f"{bdf}: {what}, but {'they are' if len(holders) > 1 else 'it is'} leased ({named}){hint}")
        self.bdf = bdf
        self.what = what
        self.holders = holders


class LeaseNotPermitted(MsixdError):
    """The configuration grants the caller no lease on the device (or not its VFIO device file)."""


class LeaseNotFound(MsixdError):
    def __init__(self, lease: str) -> None:
        super().__init__(f"no lease {shown(lease)}")
        self.lease = lease
