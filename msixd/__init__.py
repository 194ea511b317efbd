"""msixd: places MSI-X vectors on CPUs and reports their irq state over gRPC."""

__version__ = "0.1.0"
