"""The per-CPU fields filled from wire bytes give the very messages that setting them value by value gives."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from bench.synth import generate
from msixd.api.msix.v1 import msix_pb2 as pb
from msixd.kernel.irq import CpuCounts, IndexSource, _counts
from msixd.kernel.roots import KernelRoots
from msixd.rpc import convert
from msixd.service.inventory import Inventory
from msixd.service.model import Device, Vector
from msixd.service.session import LeaseTag
from msixd.service.watch import Sample, VectorSample
from tests.fixturetree import fixture_names

CASES = settings(max_examples=300, deadline=None)
cpu_sets = st.one_of(st.frozensets(st.integers(0, 8191), max_size=40),
                     st.integers(1, 2048).map(lambda n: frozenset(range(n))))


def _spread(n: int, hits: dict[int, int]) -> list[int]:
    """n CPUs' counts, zero but for hits (CPU -> count): how a busy host's lines look."""
    return [hits.get(cpu, 0) for cpu in range(n)]


count_lists = st.one_of(
    st.lists(st.integers(0, 2**64 - 1), max_size=64),
    st.integers(1, 8192).flatmap(
        lambda n: st.dictionaries(st.integers(0, n - 1), st.integers(1, 2**64 - 1), max_size=6).map(
            lambda hits: _spread(n, hits))),
)


def counts_of(values: list[int]) -> CpuCounts:
    """As the kernel reader makes them: sparse or dense, as the text is."""
    return _counts("per_cpu_count", ",".join(map(str, values)))


leases = st.none() | st.builds(LeaseTag, st.text(max_size=40), st.integers(0, 2**32 - 1),
                               st.integers(0, 2**32 - 1), st.floats(0, 2e9))


@CASES
@given(cpu_sets, cpu_sets, count_lists, leases)
def test_vector(affinity: frozenset[int], effective: frozenset[int], values: list[int], lease: LeaseTag | None) -> None:
    assume(sum(values) < 2**64)  # the reader refuses more (tests/robustness/test_inventory_faults.py)
    counts = counts_of(values)
    assert counts == tuple(values) and counts.total == sum(values)
    value = Vector(index=3, index_source=IndexSource.HWIRQ, irq=40, chip="IR-PCI-MSIX-0000:00:0a.0", hwirq=3,
                   actions=("e1000e-rx",), type="edge", affinity=affinity, effective_affinity=effective,
                   affinity_settable=True, affinity_reason="", node=0, per_cpu_count=counts, eventfd_count=7,
                   lease=lease)
    plain = pb.Vector(index=3, index_source=pb.INDEX_SOURCE_HWIRQ, irq=40, chip="IR-PCI-MSIX-0000:00:0a.0", hwirq=3,
                      actions=["e1000e-rx"], type="edge", affinity=sorted(affinity),
                      effective_affinity=sorted(effective), affinity_settable=True, node=0,
                      total_count=sum(values), per_cpu_count=values, eventfd_count=7,
                      lease=None if lease is None else pb.LeaseHolder(lease=lease.lease, uid=lease.uid,
                                                                       pid=lease.pid, since=lease.since))
    message = convert.vector(value)
    assert message == plain
    assert pb.Vector.FromString(message.SerializeToString()) == plain


@CASES
@given(count_lists)
def test_watch_sample(values: list[int]) -> None:
    assume(sum(values) < 2**64)
    sample = Sample("0000:00:0a.0", 12.5, (VectorSample(1, 41, 9, 0.5, False, counts_of(values)),))
    plain = pb.WatchSample(bdf="0000:00:0a.0", time=12.5, vectors=[pb.VectorSample(
        vector=1, irq=41, total=9, rate=0.5, source=pb.COUNT_SOURCE_PER_CPU_COUNT, per_cpu_count=values)])
    assert convert.sample(sample) == plain


def test_counts_kept_sparse_and_dense() -> None:
    sparse = counts_of([0] * 1000 + [5] + [0] * 23)
    assert sparse.dense is None and sparse.nonzero == ((1000, 5),) and len(sparse) == 1024
    assert sparse[1000] == 5 and sparse[-1] == 0 and list(sparse)[1000] == 5
    values = [n % 3 for n in range(64)]
    dense = counts_of(values)
    assert dense.dense == tuple(values) and dense.nonzero == tuple((c, n) for c, n in enumerate(values) if n)
    assert dense == CpuCounts(64, dense.nonzero) and hash(dense) == hash(CpuCounts.of(values))
    short = counts_of([1, 2, 0, 4])  # a short line is kept as pairs, however few zeros it has
    assert short.dense is None and short == (1, 2, 0, 4) and short.total == 7


def plain_vector(v: Vector) -> pb.Vector:
    return pb.Vector(index=v.index, index_source=convert.INDEX_SOURCE[v.index_source], irq=v.irq, chip=v.chip,
                     hwirq=v.hwirq or 0, actions=v.actions, type=v.type, affinity=sorted(v.affinity),
                     effective_affinity=sorted(v.effective_affinity), affinity_settable=v.affinity_settable,
                     affinity_reason=v.affinity_reason, node=v.node, total_count=sum(v.per_cpu_count),
                     per_cpu_count=list(v.per_cpu_count), eventfd_count=v.eventfd_count,
                     lease=None if v.lease is None else convert.lease_holder(v.lease))


def plain_device(d: Device) -> pb.Device:
    """Every field set the plain way, one value at a time."""
    message = pb.Device(
        bdf=d.pci.bdf, vendor_id=d.pci.vendor_id, device_id=d.pci.device_id, class_code=d.pci.class_code,
        subsystem_vendor_id=d.pci.subsystem_vendor_id, subsystem_device_id=d.pci.subsystem_device_id,
        driver=d.pci.driver or "", iommu_group=-1 if d.pci.iommu_group is None else d.pci.iommu_group,
        numa_node=d.pci.numa_node, local_cpus=sorted(d.pci.local_cpus), msix_probe=convert.MSIX_PROBE[d.pci.msix_probe],
        irq_mode=convert.IRQ_MODE[d.irq_mode], vectors_allocated=d.vectors_allocated,
        vectors=[plain_vector(v) for v in d.vectors])
    if d.pci.msix is not None:
        m = d.pci.msix
        message.msix.CopyFrom(pb.MsixCapability(
            offset=m.offset, table_size=m.table_size, enabled=m.enabled, function_masked=m.function_masked,
            table_bir=m.table_bir, table_offset=m.table_offset, pba_bir=m.pba_bir, pba_offset=m.pba_offset))
    if d.domain is not None:
        message.domain.CopyFrom(convert.domain_ref(d.domain))
    return message


@pytest.mark.parametrize("name", fixture_names())
def test_devices_of_captured_trees(tree: Callable[[str], Path], name: str) -> None:
    inventory = Inventory(KernelRoots.under(tree(name)))
    found = inventory.list_devices(all_devices=True, include_vectors=True)
    assert found and any(d.vectors for d in found)
    plain = pb.ListDevicesResponse(devices=[plain_device(d) for d in found])
    assert convert.devices(found) == plain
    for device in found:
        assert convert.device(device) == plain_device(device)
        assert pb.Device.FromString(convert.device(device).SerializeToString()) == plain_device(device)


def test_a_thousand_cpus(tmp_path: Path) -> None:
    """Long CPU lists and long count lists, as a synthetic 1024-CPU host has them."""
    generate(tmp_path / "tree", 1024, 600)
    found = Inventory(KernelRoots.under(tmp_path / "tree")).list_devices(all_devices=True, include_vectors=True)
    assert [len(d.pci.local_cpus) for d in found] == [512] and len(found[0].vectors) == 600
    assert all(len(v.per_cpu_count) == 1024 and v.per_cpu_count.dense is None for v in found[0].vectors)
    plain = pb.ListDevicesResponse(devices=[plain_device(d) for d in found])
    assert convert.devices(found) == plain


EDGES = {
    "nothing": ([], frozenset(), frozenset()),
    "one count at the top of uint64": ([2**64 - 1], frozenset({0}), frozenset({0})),
    "8192 CPUs, all zero": ([0] * 8192, frozenset(range(8192)), frozenset({8191})),
    "8192 CPUs, the last at 2^64-2": ([0] * 8191 + [2**64 - 2], frozenset(range(0, 8192, 2)), frozenset({0})),
    "16 CPUs, dense": (list(range(1, 17)), frozenset(range(16)), frozenset(range(16))),
    "17 CPUs (a list packed by hand)": ([1] * 17, frozenset(range(17)), frozenset(range(17))),
}


@pytest.mark.parametrize("name", EDGES)
def test_edges_decode_to_what_plain_serialization_gives(name: str) -> None:
    """The hand-packed bytes, decoded by the generated class, serialize to exactly the bytes the
    message built field by field serializes to."""
    values, affinity, effective = EDGES[name]
    value = Vector(index=0, index_source=IndexSource.ORDER, irq=24, chip="PCI-MSIX", hwirq=None, actions=(),
                   type="edge", affinity=affinity, effective_affinity=effective, affinity_settable=False,
                   affinity_reason="managed", node=-1, per_cpu_count=counts_of(values), eventfd_count=0)
    plain = pb.Vector(index=0, index_source=pb.INDEX_SOURCE_ORDER, irq=24, chip="PCI-MSIX", type="edge",
                      affinity=sorted(affinity), effective_affinity=sorted(effective), affinity_reason="managed",
                      node=-1, total_count=sum(values), per_cpu_count=values)
    assert convert.vector(value).SerializeToString(deterministic=True) == plain.SerializeToString(deterministic=True)


def test_no_devices_and_a_device_without_vectors(tree: Callable[[str], Path]) -> None:
    assert convert.devices([]).SerializeToString() == pb.ListDevicesResponse().SerializeToString() == b""
    found = Inventory(KernelRoots.under(tree("host-6.18"))).list_devices(all_devices=True)
    bare = [d for d in found if not d.vectors]
    assert bare, "the captured host has functions without vectors"
    assert convert.devices(bare).SerializeToString(deterministic=True) == pb.ListDevicesResponse(
        devices=[plain_device(d) for d in bare]).SerializeToString(deterministic=True)
