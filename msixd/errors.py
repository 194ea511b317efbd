"""Domain errors shared by the kernel and service layers.

Each way to fail has its own class with typed fields; the transport maps
classes to its status codes in one table (msixd/rpc/errors.py).
"""

from __future__ import annotations


class MsixdError(Exception):
    """Base of every error msixd reports to a client."""


class InvalidArgument(MsixdError):
    """The request itself is wrong; nothing was touched."""


class InvalidBdf(InvalidArgument):
    def __init__(self, text: str) -> None:
        super().__init__(f"invalid PCI address {text!r}: expected DDDD:BB:DD.F or BB:DD.F (hex)")
        self.text = text


class InvalidCpuList(InvalidArgument):
    def __init__(self, text: str, reason: str) -> None:
        super().__init__(f"invalid CPU list {text!r}: {reason}")
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
