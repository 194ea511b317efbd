"""msixctl/args.py against typer: the same options, and never a different reading.

main() runs a command line msixctl/args.py parses without typer. That is only right
if every command line it takes, typer takes too, and hands the command the same
values; anything else it must give back (None) for typer to parse and explain.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import typer.main
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from msixctl import args, commands
from msixctl.app import app
from msixctl.target import make_target

CLICK = typer.main.get_command(app)


def test_every_typer_option_is_known_to_the_fast_parser() -> None:
    """Same names, kinds, defaults, bounds and environment variables, for every parameter typer has."""
    kinds = {bool: "flag", str: "str", int: "int", float: "float", args.Output: "output", list[str]: "words"}

    def described(param: Any) -> tuple[object, ...]:
        info = param.type_descriptor.parameter_info
        kind = kinds[param.type_descriptor.annotation]
        names = tuple(param.opts) if param.param_type_name == "option" else ()
        return (param.name, names, kind, param.default, param.required, info.min, info.max, param.envvar)

    def spec(entry: args.Option | args.Argument) -> tuple[object, ...]:
        if isinstance(entry, args.Argument):
            return (entry.dest, (), entry.kind, entry.default, entry.required, None, None, None)
        return (entry.dest, entry.names, entry.kind, entry.default, entry.required, entry.minimum, entry.maximum,
                entry.envvar)

    assert sorted(described(p) for p in CLICK.params if p.name != "help") == sorted(map(spec, args.GLOBAL_OPTIONS))
    assert sorted(CLICK.commands) == sorted(args.COMMANDS) == sorted(commands.COMMANDS)
    for name, command in CLICK.commands.items():
        ours = args.COMMANDS[name]
        assert sorted(described(p) for p in command.params if p.name != "help") == sorted(
            map(spec, (*ours.arguments, *ours.options))), name


class Called(Exception):
    def __init__(self, command: str, target: object, values: dict[str, object]) -> None:
        self.seen = (command, target, values)


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every command raises Called with what it was given, instead of calling msixd."""
    for name in commands.COMMANDS:
        def record(target: object, *, _name: str = name, **values: object) -> None:
            raise Called(_name, target, values)

        monkeypatch.setitem(commands.COMMANDS, name, record)
    yield


def through_typer(
    argv: list[str], environ: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> tuple[object, ...] | None:
    """What typer hands the command for argv; None when it reports bad usage or shows help."""
    for variable in ("MSIXD_SOCKET", "MSIXD_TARGET", "MSIXD_CA", "MSIXD_CERT", "MSIXD_KEY"):
        monkeypatch.delenv(variable, raising=False)
    for variable, value in environ.items():
        monkeypatch.setenv(variable, value)
    try:
        app(argv, standalone_mode=False)
    except Called as call:
        return call.seen
    except Exception:  # noqa: BLE001 - usage errors, of whichever class typer raises
        return None
    return None  # --help


def through_fast_parser(argv: list[str], environ: dict[str, str]) -> tuple[object, ...] | None:
    parsed = args.parse(argv, environ)
    if parsed is None:
        return None
    g = parsed.globals
    try:
        target = make_target(g.socket, g.timeout, g.target, g.ca, g.cert, g.key)
    except Exception:  # noqa: BLE001 - BadUsage: main() hands it to typer
        return None
    return (parsed.command, target, parsed.values)


# Words a user might type, right and wrong, for every option and argument msixctl has.
WORDS = [
    *args.COMMANDS, *(n for o in args.GLOBAL_OPTIONS for n in o.names),
    *(n for c in args.COMMANDS.values() for o in c.options for n in o.names),
    "0000:00:0a.0", "00:0a.0", "3", "0", "1", "05", "-1", "1e3", "0.1", "0.05", "60", "61", "2.5", " 4", "4 ",
    "4294967296", "0-3,8", "json", "table", "JSON", "yaml", "-", "--", "--help", "-h", "--no-all", "-o=json",
    "--output=json", "--output=", "-ojson", "--all=1", "--socket=/tmp/s", "/tmp/s", "", "caf\u00e9", "x\ty",
    "--vectors=4", "-n4", "--interval=0.5", "--count=2", "--timeout=0.1", "--timeout=0.09", "--spread=",
]
VALUES: dict[str, list[str]] = {
    "str": ["0000:00:0a.0", "00:0a.0", "/tmp/s", "0-3,8", "", "a b", "-x", "caf\u00e9", "[bold]", ":100:"],
    "int": ["0", "1", "3", "64", "05", "-1", "4294967296", "12345678901", "1e3", " 4", "4.0", "+4"],
    "float": ["0.1", "0.05", "2.5", "60", "60.0", "61", "10", "1e3", ".5", "5.", "-1", "0.100"],
    "output": ["json", "table", "JSON", "yaml", ""],
    "words": ["true", "--", "-x", "0000:00:0a.0"],
}


@st.composite
def command_lines(draw: st.DrawFn) -> list[str]:
    """Mostly well-formed msixctl command lines, options in any order, with odd values and words mixed in."""

    def given(option: args.Option) -> list[str]:
        if option.kind == "flag":
            return [draw(st.sampled_from([option.names[0], option.names[0], f"{option.names[0]}=1"]))]
        value = draw(st.sampled_from(VALUES[option.kind]))
        name = draw(st.sampled_from(option.names))
        if name.startswith("--") and draw(st.booleans()):
            return [f"{name}={value}"]
        return [name, value]

    line: list[str] = []
    for option in args.GLOBAL_OPTIONS:
        if draw(st.integers(0, 3)) == 0:
            line += given(option)
    name = draw(st.sampled_from(sorted(args.COMMANDS)))
    command = args.COMMANDS[name]
    words = [[draw(st.sampled_from(VALUES[a.kind]))] for a in command.arguments
             if a.required or draw(st.booleans())]
    for option in command.options:
        if option.required or draw(st.integers(0, 2)) == 0:
            words.insert(draw(st.integers(0, len(words))), given(option))
    if draw(st.integers(0, 4)) == 0:
        words.insert(draw(st.integers(0, len(words))), [draw(st.sampled_from(WORDS))])
    return [*line, name, *(token for group in words for token in group)]


environments = st.dictionaries(
    st.sampled_from(["MSIXD_SOCKET", "MSIXD_TARGET", "MSIXD_CA", "MSIXD_CERT", "MSIXD_KEY"]),
    st.sampled_from(["", "/run/other.sock", "h:7443", "ca.pem"]),
    max_size=3,
)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(argv=st.one_of(command_lines(), st.lists(st.sampled_from(WORDS), max_size=8)), environ=environments)
def test_the_fast_parser_reads_nothing_typer_reads_otherwise(
    recorded: None, monkeypatch: pytest.MonkeyPatch, argv: list[str], environ: dict[str, str]
) -> None:
    fast = through_fast_parser(argv, environ)
    event("taken" if fast is not None else "given to typer")
    if fast is not None:
        assert through_typer(argv, environ, monkeypatch) == fast, argv


@pytest.mark.parametrize(
    "argv",
    [
        ["list"], ["--socket", "/tmp/s", "--timeout", "2.5", "list", "--all", "-o", "json"],
        ["show", "00:0a.0", "--output=json"], ["enable", "-n", "4", "0000:00:0a.0"], ["enable", "x", "--vectors=4"],
        ["disable", "x"], ["disable", "x", "--vector", "0"], ["affinity", "x", "3", "0-3,8", "--force"],
        ["affinity", "x", "--spread", "--cpus", "0-1", "--dry-run"], ["trigger", "x", "0"],
        ["watch", "x", "--interval", "0.1", "--count", "0"], ["--target", "h:1", "--ca", "a", "--cert", "c",
                                                              "--key", "k", "status"],
    ],
)
def test_the_usual_command_lines_are_all_fast(recorded: None, monkeypatch: pytest.MonkeyPatch, argv: list[str]) -> None:
    fast = through_fast_parser(argv, {})
    assert fast is not None and through_typer(argv, {}, monkeypatch) == fast


@pytest.mark.parametrize(
    "argv",
    [["--help"], ["list", "--help"], [], ["bogus"], ["list", "extra"], ["show"], ["enable", "x"],
     ["enable", "x", "-n", "0"], ["list", "-o", "yaml"], ["list", "--socket", "/s"], ["show", "-x"],
     ["show", "--", "x"], ["list", "--all", "--all"], ["--target", "h:1", "list"], ["watch", "x", "--interval", "61"]],
)
def test_help_and_bad_usage_go_to_typer(argv: list[str]) -> None:
    assert through_fast_parser(argv, {}) is None
