"""msixctl's command line without typer, for the command lines that need no help and no error.

typer builds its parser and checks every value through pydantic on each run: some
80 ms before a command starts, most of what msixctl would cost over a bare gRPC
client. So main() first tries this small parser, which knows the same options
(msixctl/app.py declares them for typer; tests/cli/test_args.py checks that both
agree, and that any command line this parser takes, typer takes with the same
values). It takes only plain forms: a value it does not read exactly as typer
would, an unknown or repeated option, --help, or anything to report as bad usage
makes it give up (None), and typer parses the whole command line instead, with
its own help and error messages.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

DEFAULT_SOCKET = "/run/msixd/msixd.sock"
DEFAULT_TIMEOUT = 10.0

# "words": every word left (a command to run), which this parser never reads: typer does.
Kind = Literal["flag", "str", "int", "float", "output", "words"]
_INT = re.compile(r"0|[1-9][0-9]{0,9}")
_FLOAT = re.compile(r"(0|[1-9][0-9]{0,9})(\.[0-9]{1,9})?")
_PRINTABLE = re.compile(r"[ -~]*")


class Output(str, enum.Enum):
    table = "table"
    json = "json"


@dataclass(frozen=True)
class Option:
    names: tuple[str, ...]
    dest: str
    kind: Kind
    default: object = None
    minimum: float | None = None
    maximum: float | None = None
    envvar: str | None = None
    required: bool = False


@dataclass(frozen=True)
class Argument:
    dest: str
    kind: Kind
    required: bool = True
    default: object = None


@dataclass(frozen=True)
class Command:
    arguments: tuple[Argument, ...]
    options: tuple[Option, ...]


OUTPUT = Option(("--output", "-o"), "output", "output", Output.table)
FORCE = Option(("--force",), "force", "flag", False)
BDF = Argument("bdf", "str")
GLOBAL_OPTIONS = (
    Option(("--socket",), "socket", "str", DEFAULT_SOCKET, envvar="MSIXD_SOCKET"),
    Option(("--target",), "target", "str", "", envvar="MSIXD_TARGET"),
    Option(("--ca",), "ca", "str", "", envvar="MSIXD_CA"),
    Option(("--cert",), "cert", "str", "", envvar="MSIXD_CERT"),
    Option(("--key",), "key", "str", "", envvar="MSIXD_KEY"),
    Option(("--timeout",), "timeout", "float", DEFAULT_TIMEOUT, minimum=0.1),
)
# Command name -> its arguments and options; msixctl.commands has a function of the same
# name (with "_devices" for list) taking the global Target and these as keywords.
COMMANDS: dict[str, Command] = {
    "list": Command((), (Option(("--all",), "all_devices", "flag", False), OUTPUT)),
    "show": Command((BDF,), (OUTPUT,)),
    "domains": Command((), (OUTPUT,)),
    "status": Command((), (OUTPUT,)),
    "bind": Command((BDF,), (OUTPUT,)),
    "release": Command((BDF,), (FORCE, OUTPUT)),
    "enable": Command(
        (BDF,), (Option(("--vectors", "-n"), "vectors", "int", minimum=1, required=True), FORCE, OUTPUT)
    ),
    "disable": Command((BDF,), (Option(("--vector",), "vector", "int", minimum=0), FORCE, OUTPUT)),
    "affinity": Command(
        (BDF, Argument("vector", "int", required=False), Argument("cpus", "str", required=False)),
        (
            Option(("--spread",), "spread", "flag", False),
            Option(("--cpus",), "spread_cpus", "str", ""),
            Option(("--dry-run",), "dry_run", "flag", False),
            Option(("--force",), "force", "flag", False),
            OUTPUT,
        ),
    ),
    "trigger": Command((BDF, Argument("vector", "int")), (OUTPUT,)),
    "watch": Command(
        (BDF,),
        (
            Option(("--interval",), "interval", "float", 1.0, minimum=0.1, maximum=60),
            Option(("--count",), "count", "int", 0, minimum=0),
            OUTPUT,
        ),
    ),
    "lease": Command(
        (BDF, Argument("command", "words")),
        (
            Option(("--vectors",), "vectors", "str", ""),
            Option(("--count",), "count", "int", 0, minimum=0),
            Option(("--grow",), "grow", "flag", False),
            Option(("--device-fd",), "device_fd", "flag", False),
            Option(("--release",), "release_after", "flag", False),
        ),
    ),
    "leases": Command((Argument("bdf", "str", required=False, default=""),), (OUTPUT,)),
    "revoke": Command((Argument("lease_id", "str"),), (Option(("--reason",), "reason", "str", ""), OUTPUT)),
    "policy": Command((), (Option(("--device", "-d"), "device", "str", ""), OUTPUT)),
    "diff": Command((), (OUTPUT,)),
    "apply": Command(
        (), (Option(("--file", "-f"), "file", "str", None), Option(("--dry-run",), "dry_run", "flag", False), OUTPUT)
    ),
}


@dataclass(frozen=True)
class Globals:
    """The global options, as msixctl/app.py's options() receives them."""

    socket: str
    target: str
    ca: str
    cert: str
    key: str
    timeout: float


@dataclass(frozen=True)
class Parsed:
    command: str
    globals: Globals
    values: dict[str, object]  # keyword arguments of the command's function in msixctl.commands


def _value(kind: Kind, text: str, minimum: float | None = None, maximum: float | None = None) -> object | None:
    """The value as typer reads it, or None when this parser does not read it."""
    number: float
    if kind == "str":
        return text
    if kind == "output":
        return Output(text) if text in ("table", "json") else None
    if kind == "int" and _INT.fullmatch(text):
        number = int(text)
    elif kind == "float" and _FLOAT.fullmatch(text):
        number = float(text)
    else:
        return None
    if (minimum is not None and number < minimum) or (maximum is not None and number > maximum):
        return None
    return number


def _options(
    tokens: list[str], options: tuple[Option, ...], arguments: tuple[Argument, ...] = (), stop_at_word: bool = False
) -> tuple[dict[str, object], list[str], int] | None:
    """Options (anywhere) and positional words, until a word when stop_at_word; None to give up."""
    by_name = {name: option for option in options for name in option.names}
    values: dict[str, object] = {}
    words: list[str] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if not token.startswith("-") or token == "-":
            if token == "-":
                return None
            if stop_at_word:
                break
            words.append(token)
            i += 1
            continue
        name, equals, attached = token.partition("=")
        option = by_name.get(name)
        if option is None or option.dest in values or (equals and not name.startswith("--")):
            return None  # unknown (--help too), repeated, or -o=json: typer decides
        if option.kind == "flag":
            if equals:
                return None
            values[option.dest] = True
            i += 1
            continue
        if equals:
            text = attached
            i += 1
        elif i + 1 < len(tokens) and not tokens[i + 1].startswith("-"):
            text = tokens[i + 1]
            i += 2
        else:
            return None
        value = _value(option.kind, text, option.minimum, option.maximum)
        if value is None:
            return None
        values[option.dest] = value
    if len(words) > len(arguments):
        return None
    return values, words, i


def parse(argv: list[str], environ: Mapping[str, str]) -> Parsed | None:
    """The command and its values, exactly as typer would pass them; None: let typer parse it."""
    if any(not _PRINTABLE.fullmatch(token) for token in argv):
        return None
    found = _options(argv, GLOBAL_OPTIONS, stop_at_word=True)
    if found is None:
        return None
    given, _, position = found
    if position >= len(argv) or argv[position] not in COMMANDS:
        return None
    globals_: dict[str, object] = {}
    for option in GLOBAL_OPTIONS:
        from_env = environ.get(option.envvar, "") if option.envvar else ""
        if option.dest not in given and from_env:  # click reads a variable that is set and not empty
            if not _PRINTABLE.fullmatch(from_env):
                return None
            globals_[option.dest] = from_env
        else:
            globals_[option.dest] = given.get(option.dest, option.default)
    timeout = globals_["timeout"]
    assert isinstance(timeout, float)
    options = Globals(str(globals_["socket"]), str(globals_["target"]), str(globals_["ca"]), str(globals_["cert"]),
                      str(globals_["key"]), timeout)
    name = argv[position]
    command = COMMANDS[name]
    if any(argument.kind == "words" for argument in command.arguments):
        return None  # a command to run after "--": typer's to read
    found = _options(argv[position + 1 :], command.options, command.arguments)
    if found is None:
        return None
    values, words, _ = found
    for option in command.options:
        if option.dest not in values:
            if option.required:
                return None
            values[option.dest] = option.default
    for index, argument in enumerate(command.arguments):
        if index >= len(words):
            if argument.required:
                return None
            values[argument.dest] = argument.default
            continue
        value = _value(argument.kind, words[index])
        if value is None:
            return None
        values[argument.dest] = value
    return Parsed(name, options, values)
