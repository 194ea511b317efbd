"""Policy files: what they say, the order rules apply in, and errors that name file and line."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from msixd.service.policy import DeviceFacts, OnDrift, Place, PolicyError, check_file_name, load, parse

EXAMPLE = """\
# Pin the NIC's receive queues, spread the rest.
[[rule]]
name = "nic-rx"
match = { interface = "eth*", actions = "*-rx-*" }
place = "pin"
cpus = "2-3"

[[rule]]
name = "nvme"
place = "balance"
on_drift = "observe"

[rule.match]
driver = "nvme"
vectors = "1-7"
class = "0x0108"
numa_node = [0, 1]
"""

NIC = DeviceFacts("0000:3b:00.0", 0x8086, 0x10D3, 0x020000, "e1000e", 0, frozenset({"eth0"}))
NVME = DeviceFacts("0000:00:04.0", 0x1B36, 0x0010, 0x010802, "nvme", 1, block_devices=frozenset({"nvme0n1"}))


def write(directory: Path, name: str, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    return path


def test_a_complete_file(tmp_path: Path) -> None:
    write(tmp_path, "10-example.toml", EXAMPLE)
    policy = load(tmp_path)
    rx, nvme = policy.rules
    assert (rx.name, rx.place, rx.cpus, rx.line, rx.order) == ("nic-rx", Place.PIN, frozenset({2, 3}), 2, 1)
    assert rx.selector.interface == ("eth*",) and rx.selector.actions == ("*-rx-*",)
    assert (nvme.place, nvme.cpus, nvme.on_drift, nvme.line) == (Place.BALANCE, None, OnDrift.OBSERVE, 8)
    assert nvme.selector.vectors == frozenset(range(1, 8)) and nvme.selector.class_prefix == ("0108",)
    assert nvme.selector.numa_node == (0, 1)
    assert policy.files == (str(tmp_path / "10-example.toml"),)


def test_selectors() -> None:
    (rule,) = parse('[[rule]]\nname = "x"\nplace = "leave"\nmatch = { device = "8086:*", bdf = "0000:3b:*" }\n', "f")
    assert rule.selector.selects_device(NIC) and not rule.selector.selects_device(NVME)
    (rule,) = parse('[[rule]]\nname = "x"\nplace = "leave"\nmatch = { block = "nvme0n1", class = "01" }\n', "f")
    assert rule.selector.selects_device(NVME) and not rule.selector.selects_device(NIC)
    (rule,) = parse('[[rule]]\nname = "x"\nplace = "leave"\nmatch = { vectors = "0,2", actions = ["a*", "b"] }\n', "f")
    assert rule.selector.selects_vector(0, ("ab",)) and rule.selector.selects_vector(2, ("b",))
    assert not rule.selector.selects_vector(1, ("ab",)) and not rule.selector.selects_vector(0, ("c",))
    assert not rule.selector.selects_vector(0, ()), "a vector without a handler has no name to match"
    (everything,) = parse('[[rule]]\nname = "all"\nplace = "spread"\n', "f")
    assert everything.selector.selects_device(NIC) and everything.selector.selects_vector(9, ())


def test_first_rule_wins_in_file_name_order(tmp_path: Path) -> None:
    write(tmp_path, "20-b.toml", '[[rule]]\nname = "later"\nplace = "spread"\n')
    write(tmp_path, "10-a.toml", '[[rule]]\nname = "first"\nplace = "pin"\ncpus = "1"\nmatch = { driver = "nvme" }\n'
                                 '[[rule]]\nname = "second"\nplace = "leave"\n')
    write(tmp_path, "notes.txt", "not a policy")
    write(tmp_path, ".10-a.toml.swp", "an editor's")
    policy = load(tmp_path)
    assert [r.name for r in policy.rules] == ["first", "second", "later"]
    assert [r.order for r in policy.rules] == [1, 2, 3]
    chosen, shadowed = policy.first(NVME, 1, ())
    assert chosen is not None and chosen.name == "first" and [r.name for r in shadowed] == ["second", "later"]
    chosen, shadowed = policy.first(NIC, 0, ())
    assert chosen is not None and chosen.name == "second" and [r.name for r in shadowed] == ["later"]


def test_a_missing_directory_is_no_rules(tmp_path: Path) -> None:
    assert load(tmp_path / "absent").rules == ()


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ('[[rule]]\nname = "x"\nplace = "pin"\ncpus = "1"\ncolor = "red"\n', 5, "unknown key 'color'"),
        ('[[rule]]\nname = "x"\nplace = "pin"\ncpus = "1"\n\n[[rule]]\nname = "y"\nplace = "sprad"\n', 8,
         "place must be pin, spread, balance or leave"),
        ('[[rule]]\nname = "x"\nplace = "pin"\n', 1, "needs cpus"),
        ('[[rule]]\nname = "x"\nplace = "leave"\ncpus = "1"\n', 4, "takes no cpus"),
        ('[[rule]]\nname = "x"\nplace = "pin"\ncpus = "3-1"\n', 4, "reversed"),
        ('[[rule]]\nplace = "spread"\n', 1, "has no name"),
        ('[[rule]]\nname = "a b"\nplace = "spread"\n', 2, "name must be"),
        ('[[rule]]\nname = "x"\nplace = "spread"\n\n[rule.match]\ndriver = "nvme"\nslot = "3"\n', 7,
         "unknown selector 'slot'"),
        ('[[rule]]\nname = "x"\nplace = "spread"\nmatch = { class = "0x1" }\n', 4, "2, 4 or 6 hex digits"),
        ('[[rule]]\nname = "x"\nplace = "spread"\nmatch = { device = "intel" }\n', 4, "vendor:device"),
        ('[[rule]]\nname = "x"\nplace = "spread"\nmatch = { vectors = "a" }\n', 4, "match.vectors"),
        ('[[rule]]\nname = "x"\nplace = "spread"\nmatch = { numa_node = "0" }\n', 4, "node number"),
        ('[[rule]]\nname = "x"\nplace = "spread"\nmatch = { driver = 3 }\n', 4, "non-empty string"),
        ('[[rule]]\nname = "x"\nplace = "spread"\nforce = "yes"\n', 4, "true or false"),
        ('[[rule]]\nname = "x"\nplace = "spread"\non_drift = "ignore"\n', 4, "correct or observe"),
        ('[[rule]]\nname = "x"\nplace = "spread"\nmatch = "nvme"\n', 4, "match must be a table"),
        ('[[rule]]\nname = "x"\nplace = "spread"\ncpus = ""\n', 4, "cpus is empty"),
        ('[[rule]]\nname = "x"\nplace = "spread"\n\n[defaults]\nplace = "pin"\n', 5, "[[rule]] tables only"),
        ('[[rule]]\nname = "x"\nplace = = "spread"\n', 3, "line 3"),
    ],
)
def test_errors_name_the_file_and_line(tmp_path: Path, text: str, line: int, words: str) -> None:
    write(tmp_path, "50-bad.toml", text)
    with pytest.raises(PolicyError) as caught:
        load(tmp_path)
    assert f"{tmp_path / '50-bad.toml'}, line {line}" in str(caught.value)
    assert words in str(caught.value)


def test_a_name_used_twice_names_both_places(tmp_path: Path) -> None:
    write(tmp_path, "10-a.toml", '[[rule]]\nname = "nic"\nplace = "spread"\n')
    write(tmp_path, "20-b.toml", '\n[[rule]]\nname = "nic"\nplace = "leave"\n')
    with pytest.raises(PolicyError, match=r"20-b.toml, line 2: rule name 'nic' is used already at .*10-a.toml, line 1"):
        load(tmp_path)


def test_not_utf8_names_the_line(tmp_path: Path) -> None:
    (tmp_path / "10-a.toml").write_bytes(b'[[rule]]\nname = "\xff"\n')
    with pytest.raises(PolicyError, match=r"10-a.toml, line 2: not UTF-8"):
        load(tmp_path)


def test_a_trial_file_replaces_its_namesake_or_is_added(tmp_path: Path) -> None:
    write(tmp_path, "10-a.toml", '[[rule]]\nname = "old"\nplace = "spread"\n')
    replaced = load(tmp_path, ("10-a.toml", b'[[rule]]\nname = "new"\nplace = "leave"\n'))
    assert [r.name for r in replaced.rules] == ["new"] and "in place of" in replaced.trial
    added = load(tmp_path, ("05-first.toml", b'[[rule]]\nname = "new"\nplace = "leave"\n'))
    assert [r.name for r in added.rules] == ["new", "old"] and "added to" in added.trial
    assert added.rules[0].source == "05-first.toml (applied by msixctl)"
    with pytest.raises(PolicyError, match="05-first.toml .applied by msixctl., line 1"):
        load(tmp_path, ("05-first.toml", b"[[rule]]\n"))


@pytest.mark.parametrize("name", ["../etc/passwd.toml", "a/b.toml", "policy.txt", ".hidden.toml", "", "x" * 300])
def test_a_trial_file_name_is_a_plain_toml_name(name: str) -> None:
    with pytest.raises(PolicyError, match="plain file name"):
        check_file_name(name)


def test_the_readme_example_is_a_valid_policy() -> None:
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("## Placement policy", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    rules = parse(example, "50-example.toml")
    assert [(r.name, r.place) for r in rules] == [("nic-queues", Place.SPREAD), ("nic-rest", Place.LEAVE),
                                                  ("nvme", Place.PIN), ("mlx-node1", Place.BALANCE)]


VALUES = st.one_of(st.text(max_size=12), st.integers(-3, 70000), st.booleans(), st.floats(allow_nan=True),
                   st.lists(st.one_of(st.text(max_size=6), st.integers(-1, 3)), max_size=3),
                   st.sampled_from(["pin", "spread", "balance", "leave", "local", "0-3", "3-1", "0x02", "8086:*",
                                    "correct", "observe", "*-rx-*", "0000:00:04.0"]))
KEYS = st.sampled_from(["name", "place", "cpus", "force", "on_drift", "match", "colour"])
SELECTORS = st.sampled_from(["bdf", "device", "driver", "class", "numa_node", "interface", "block", "vectors",
                             "actions", "slot"])


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value) if value == value and abs(value) != float("inf") else "nan"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(item) for item in value) + "]"
    return '"' + str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


@st.composite
def policy_files(draw: st.DrawFn) -> str:
    rules = []
    for _ in range(draw(st.integers(0, 3))):
        lines = ["[[rule]]"]
        for key in draw(st.lists(KEYS, max_size=6, unique=True)):
            if key == "match":
                selectors = draw(st.dictionaries(SELECTORS, VALUES, max_size=3))
                lines.append("match = { " + ", ".join(f"{k} = {toml_value(v)}" for k, v in selectors.items()) + " }")
            else:
                lines.append(f"{key} = {toml_value(draw(VALUES))}")
        rules.append("\n".join(lines))
    text = "\n\n".join(rules) + "\n"
    if draw(st.booleans()):  # and then damage it
        cut = draw(st.integers(0, len(text)))
        text = text[:cut] + draw(st.text(max_size=4)) + text[cut:]
    return text


@settings(max_examples=400, deadline=None)
@given(policy_files())
def test_any_policy_file_is_rules_or_one_error_naming_file_and_line(text: str) -> None:
    try:
        rules = parse(text, "90-fuzz.toml")
    except PolicyError as err:
        assert str(err).startswith("90-fuzz.toml"), str(err)
        assert str(err).startswith("90-fuzz.toml, line "), str(err)
        return
    assert all(rule.name and rule.source == "90-fuzz.toml" and rule.line >= 1 for rule in rules)
