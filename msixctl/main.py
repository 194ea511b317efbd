"""msixctl: the command-line client of msixd.

A command line msixctl/args.py can parse runs at once, without typer; any other
(--help, a mistake, an unusual form) goes to the typer app in msixctl/app.py,
which parses it again and says what is wrong the way it always does.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING

from msixctl import args
from msixctl.errors import BadUsage, ClientError

if TYPE_CHECKING:
    import typer


def __getattr__(name: str) -> typer.Typer:
    """msixctl.main.app: the typer app, imported when asked for."""
    if name == "app":
        from msixctl.app import app

        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def _fast(parsed: args.Parsed) -> bool:
    """Run a command line msixctl/args.py parsed; False when typer is to say why it is bad usage."""
    from msixctl import commands
    from msixctl.target import make_target

    options = parsed.globals
    try:
        target = make_target(options.socket, options.timeout, options.target, options.ca, options.cert, options.key)
        commands.COMMANDS[parsed.command](target, **parsed.values)
    except BadUsage:
        return False
    except KeyboardInterrupt:
        sys.exit(130)  # as typer exits on Ctrl-C
    except BrokenPipeError:
        # As typer does when the reader went away (msixctl list | head -1): exit 1, and nothing more
        # to say, not even the interpreter's complaint about flushing stdout at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(1)
    return True


def _typer(argv: list[str]) -> None:
    import typer

    from msixctl.app import app

    try:  # typer 0.26+ carries its own copy of click
        from typer._click.exceptions import UsageError
    except ImportError:  # older typer depends on click
        # Which of the two exists depends on typer's version: mypy sees one of them only.
        from click.exceptions import UsageError  # type: ignore[no-redef,import-not-found,unused-ignore]

    try:
        code = app(argv, standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except UsageError as err:
        command = err.ctx.command.name if err.ctx else None
        where = f"msixctl {command} --help" if command and command != "msixctl" else "msixctl --help"
        print(f"msixctl: {err.format_message()} (see {where})", file=sys.stderr)
        sys.exit(2)
    except typer.Abort:
        sys.exit(130)


def main() -> None:
    argv = sys.argv[1:] or ["--help"]  # no command: teach, do not complain
    try:
        parsed = args.parse(argv, os.environ)
        if parsed is not None and _fast(parsed):
            sys.exit(0)
        _typer(argv)
    except ClientError as err:
        print(f"msixctl: {err}", file=sys.stderr)
        sys.exit(err.exit_code)
    except Exception as err:  # noqa: BLE001 - never a traceback for the user
        if os.environ.get("MSIXCTL_DEBUG") == "1":
            raise
        print(
            f"msixctl: unexpected error: {type(err).__name__}: {err} (MSIXCTL_DEBUG=1 shows the traceback)",
            file=sys.stderr,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()
