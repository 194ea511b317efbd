"""The state file is checked field by field; anything else is moved aside and msixd starts empty."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from msixd.kernel.cpulist import MAX_CPUS
from msixd.kernel.roots import KernelRoots
from msixd.service.services import Services
from msixd.service.state import DeviceState, StateStore

MSIX_TABLE_MAX = 2048  # PCI_MSIX_FLAGS_QSIZE: 11 bits
from tests.fakes.vfio import FakeDevice, FakeVfio
from tests.fixturetree import materialise, move_to_vfio

BDF = "0000:00:03.0"
GOOD = {"version": 1, "devices": {BDF: {"vectors": 4, "affinities": {"1": [0, 1]}, "previous_driver": "virtio-pci"}}}


def corrupt_files(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.name.startswith("state.json.corrupt-"))


def test_the_good_file_loads(tmp_path: Path) -> None:
    (tmp_path / "state.json").write_text(json.dumps(GOOD))
    assert StateStore(tmp_path / "state.json").load() == {BDF: DeviceState(4, {1: [0, 1]}, "virtio-pci")}


def test_what_save_writes_load_reads(tmp_path: Path) -> None:
    devices = {BDF: DeviceState(2048, {0: [MAX_CPUS - 1], 2047: [0, 5]}, None), "0001:ff:1f.7": DeviceState()}
    StateStore(tmp_path / "state.json").save(devices)
    assert StateStore(tmp_path / "state.json").load() == devices


# json.dumps cannot write a number int() cannot convert: the placeholder is replaced in the text.
LONG = "\0LONG\0"
LONG_NUMBER = "9" * 5000


def dumps(document: Any) -> str:
    return json.dumps(document, allow_nan=True).replace(json.dumps(LONG), LONG_NUMBER)


def damaged(path: str, value: Any) -> str:
    """GOOD with the value at path ("devices/<bdf>/vectors") replaced; None as the value removes it."""
    document = json.loads(json.dumps(GOOD))
    *parents, last = path.split("/")
    node = document
    for name in parents:
        node = node[name]
    if value is None:
        del node[last]
    else:
        node[last] = value
    return dumps(document)


BAD = {
    "vectors Infinity": damaged(f"devices/{BDF}/vectors", math.inf),
    "vectors NaN": damaged(f"devices/{BDF}/vectors", math.nan),
    "vectors -Infinity": damaged(f"devices/{BDF}/vectors", -math.inf),
    "vectors 4.5": damaged(f"devices/{BDF}/vectors", 4.5),
    "vectors a string": damaged(f"devices/{BDF}/vectors", "4"),
    "vectors true": damaged(f"devices/{BDF}/vectors", True),
    "vectors -1": damaged(f"devices/{BDF}/vectors", -1),
    "vectors past the MSI-X maximum": damaged(f"devices/{BDF}/vectors", 2049),
    "vectors of 5,000 digits": damaged(f"devices/{BDF}/vectors", LONG),
    "no vectors": damaged(f"devices/{BDF}/vectors", None),
    "a CPU past MAX_CPUS": damaged(f"devices/{BDF}/affinities", {"1": [MAX_CPUS]}),
    "a negative CPU": damaged(f"devices/{BDF}/affinities", {"1": [-1]}),
    "a CPU as text": damaged(f"devices/{BDF}/affinities", {"1": ["1"]}),
    "a CPU Infinity": damaged(f"devices/{BDF}/affinities", {"1": [math.inf]}),
    "no CPU": damaged(f"devices/{BDF}/affinities", {"1": []}),
    "a CPU twice": damaged(f"devices/{BDF}/affinities", {"1": [1, 1]}),
    "CPUs not a list": damaged(f"devices/{BDF}/affinities", {"1": 1}),
    "a vector past the table": damaged(f"devices/{BDF}/affinities", {"2048": [1]}),
    "a vector that is not a number": damaged(f"devices/{BDF}/affinities", {"x": [1]}),
    "a vector with a sign": damaged(f"devices/{BDF}/affinities", {"-1": [1]}),
    "a vector of 5,000 digits": damaged(f"devices/{BDF}/affinities", {LONG_NUMBER: [1]}),
    "a CPU of 5,000 digits": damaged(f"devices/{BDF}/affinities", {"1": [LONG]}),
    "affinities a list": damaged(f"devices/{BDF}/affinities", [[1]]),
    "a driver with a slash": damaged(f"devices/{BDF}/previous_driver", "../../bus"),
    "an empty driver": damaged(f"devices/{BDF}/previous_driver", ""),
    "a driver that is a number": damaged(f"devices/{BDF}/previous_driver", 5),
    "a driver with a newline": damaged(f"devices/{BDF}/previous_driver", "e1000e\nvfio-pci"),
    "an unknown field": damaged(f"devices/{BDF}/owner", "me"),
    "a BDF with a path": json.dumps({"version": 1, "devices": {"0000:00:03.0/../x": {"vectors": 1}}}),
    "a BDF not in canonical form": damaged("devices/00:03.0", {"vectors": 1}),
    "a BDF that is not one": damaged("devices/zz", {"vectors": 1}),
    "devices a list": damaged("devices", [GOOD["devices"]]),
    "version 2": damaged("version", 2),
    "version true": damaged("version", True),
    "version as text": damaged("version", "1"),
    "no version": damaged("version", None),
    "an unknown top-level field": damaged("owner", "me"),
    "a list": "[]",
    "null": "null",
    "JSON nested 100,000 deep": '{"version": 1, "devices": ' + "[" * 100_000 + "]" * 100_000 + "}",
    "a device nested 100,000 deep": json.dumps(GOOD)[:-2] + ', "x": ' + '{"a": ' * 100_000 + "1" + "}" * 100_000 + "}}",
    "not UTF-8": json.dumps(GOOD).replace("virtio-pci", "virtio-pci\udcff"),
    "torn": json.dumps(GOOD)[:30],
    "empty": "",
}


@pytest.mark.parametrize("text", BAD.values(), ids=BAD.keys())
def test_a_file_that_is_not_state_is_moved_aside(tmp_path: Path, text: str) -> None:
    path = tmp_path / "state.json"
    path.write_bytes(text.encode(errors="surrogateescape"))
    assert StateStore(path).load() == {}
    assert not path.exists()
    assert len(corrupt_files(tmp_path)) == 1


def test_two_corrupt_files_in_one_second_are_both_kept(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    for text in ("[]", "null"):
        path.write_text(text)
        assert StateStore(path).load() == {}
    assert sorted(p.read_text() for p in corrupt_files(tmp_path)) == ["[]", "null"]


def test_a_directory_in_its_place_is_moved_aside(tmp_path: Path) -> None:
    (tmp_path / "state.json").mkdir()
    assert StateStore(tmp_path / "state.json").load() == {}
    assert len(corrupt_files(tmp_path)) == 1


# Damage: a valid state file, then one of its values replaced by anything JSON can say (and more),
# or its text cut, or bytes written into it.
json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True),
              st.sampled_from([math.inf, -math.inf, LONG, 2048, 2049, MAX_CPUS, "", "0000:00:03.0", "../x"]),
              st.text(max_size=12)),
    lambda children: st.one_of(
        st.lists(children, max_size=3), st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=8,
)
bdfs = st.one_of(st.just(BDF), st.from_regex(r"[0-9a-f]{4}:[0-9a-f]{2}:[01][0-9a-f]\.[0-7]", fullmatch=True))
device_states = st.fixed_dictionaries(
    {"vectors": st.integers(0, 16)},  # up to MSIX_TABLE_MAX: test_what_save_writes_load_reads
    optional={
        "affinities": st.dictionaries(st.integers(0, MSIX_TABLE_MAX - 1).map(str),
                                      st.sets(st.integers(0, MAX_CPUS - 1), min_size=1, max_size=4).map(sorted),
                                      max_size=4),
        "previous_driver": st.one_of(st.none(), st.sampled_from(["e1000e", "nvme", "virtio-pci", "snd_hda_intel"])),
    },
)
documents = st.fixed_dictionaries({"version": st.just(1), "devices": st.dictionaries(bdfs, device_states, max_size=3)})


def paths_in(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix]
    children = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else []
    for key, child in children:
        found += paths_in(child, (*prefix, key))
    return found


@st.composite
def damaged_files(draw: st.DrawFn) -> bytes:
    document: Any = draw(documents)
    how = draw(st.sampled_from(["none", "replace", "nest", "cut", "insert"]))
    if how == "none":  # undamaged: start-up restores it (the device in the tree is owned through the fake)
        return json.dumps(document).encode()
    if how in ("replace", "nest"):
        path = draw(st.sampled_from(paths_in(document)[1:] or [("devices",)]))
        depth = draw(st.integers(900, 50_000))
        node = document
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = draw(json_values) if how == "replace" else "\0NEST\0"
        text = dumps(document).replace('"\\u0000NEST\\u0000"', "[" * depth + "]" * depth)
        return text.encode()
    data = json.dumps(document).encode()
    at = draw(st.integers(0, len(data)))
    if how == "cut":
        return data[:at]
    return data[:at] + draw(st.binary(min_size=1, max_size=8)) + data[at:]


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tree = materialise("host-6.18", tmp_path_factory.mktemp("tree"))
    move_to_vfio(tree, BDF)
    return tree


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(damaged_files())
def test_start_up_survives_any_damage(root: Path, tmp_path_factory: pytest.TempPathFactory, data: bytes) -> None:
    """What start-up does with the state file (load it, re-apply it) never raises, whatever it holds."""
    directory = tmp_path_factory.mktemp("state")
    path = directory / "state.json"
    path.write_bytes(data)
    fake = FakeVfio({BDF: FakeDevice(table_size=16, dynamic=True)})
    services = Services.build(KernelRoots.under(root), path, vfio_api=fake)  # type: ignore[arg-type]
    loaded = services.owner.desired()
    outcome = services.owner.restore()
    services.owner.close_all()
    if loaded:
        assert path.exists() and not corrupt_files(directory)
        for bdf, state in loaded.items():
            assert isinstance(bdf, str) and 0 <= state.vectors <= MSIX_TABLE_MAX
            assert all(0 <= index < MSIX_TABLE_MAX and cpus and all(0 <= c < MAX_CPUS for c in cpus)
                       for index, cpus in state.affinities.items())
        assert set(outcome) <= set(loaded)
    else:
        assert corrupt_files(directory) or json.loads(data) == {"version": 1, "devices": {}}

