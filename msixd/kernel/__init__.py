"""The only code in msixd that touches the operating system.

Every path is built from a KernelRoots value, so tests and benchmarks point the
readers at captured or generated trees instead of the live /sys and /proc.
"""
