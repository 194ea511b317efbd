from __future__ import annotations

import ast
import json
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from google.protobuf import json_format
from typer.testing import CliRunner

from msixctl.errors import ClientError
from msixctl.main import app, main
from msixd.api.msix.v1 import msix_pb2 as pb
from msixd.api.msix.v1 import msix_pb2_grpc
from tests.cli.conftest import FakeServicer
from tests.e2e.test_tls_and_reload import make_pki

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


Run = Callable[..., tuple[int, str, str]]


@pytest.fixture(params=["main", "typer"])
def run(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> Run:
    """run(socket_path, *args) -> exit code, stdout, stderr (an error without its "msixctl: ").

    "main": what a user runs, main(), in this process: the command lines msixctl/args.py parses
    run without typer. "typer": the same command line through typer's app and test runner;
    ClientError is what main() turns into a line and an exit code.
    """

    def through_main(socket_path: Path, *args: str) -> tuple[int, str, str]:
        monkeypatch.setattr(sys, "argv", ["msixctl", "--socket", str(socket_path), *args])
        with pytest.raises(SystemExit) as done:
            main()
        out, err = capsys.readouterr()
        code = done.value.code if isinstance(done.value.code, int) else 1
        if code != 0 and err.startswith("msixctl: ") and err.count("\n") == 1:
            err = err.removeprefix("msixctl: ").removesuffix("\n")
        return code, out, err

    def through_typer(socket_path: Path, *args: str) -> tuple[int, str, str]:
        result = runner.invoke(app, ["--socket", str(socket_path), *args])
        if isinstance(result.exception, ClientError):
            return result.exception.exit_code, result.stdout, str(result.exception)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        return result.exit_code, result.stdout, result.stderr

    return through_main if request.param == "main" else through_typer


def test_list_table(run: Run, socket_path: Path) -> None:
    code, out, err = run(socket_path, "list")
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith("0000:00:0a.0"))
    assert row.split()[:7] == ["0000:00:0a.0", "vfio-pci", "8086:10d3", "5", "yes", "2", "-"]
    assert "IR-PCI-MSIX-0000:00:0a.0 (inferred)" in row
    unreadable = next(line for line in out.splitlines() if line.startswith("0000:00:01.0"))
    assert unreadable.split()[3:5] == ["?", "?"]
    assert "could not be read" in err and "CAP_SYS_ADMIN" in err


def test_list_all_passes_the_flag(run: Run, socket_path: Path, fake: FakeServicer) -> None:
    run(socket_path, "list", "--all")
    assert fake.requests[-1] == pb.ListDevicesRequest(all_devices=True)


@pytest.mark.parametrize(
    ("args", "message_type"),
    [
        (["list"], pb.ListDevicesResponse),
        (["show", "0000:00:0a.0"], pb.Device),
        (["domains"], pb.ListDomainsResponse),
        (["status"], pb.Status),
        (["affinity", "0000:00:0a.0", "3", "1"], pb.SetAffinityResponse),
        (["enable", "0000:00:0a.0", "--vectors", "5"], pb.EnableResponse),
        (["leases"], pb.ListLeasesResponse),
        (["revoke", "3fa2c1d09b7e"], pb.RevokeLeaseResponse),
    ],
)
def test_json_is_the_api_message_with_every_field(
    run: Run, socket_path: Path, args: list[str], message_type: type
) -> None:
    code, out, _ = run(socket_path, *args, "-o", "json")
    assert code == 0
    document = json.loads(out)
    json_format.Parse(out, message_type())  # round-trips into the message
    if message_type is pb.Device:
        assert document["vectors"][1]["actions"] == [] and document["vectors"][1]["eventfd_count"] == "0"
        assert document["msix"]["function_masked"] is False


def test_show_table(run: Run, socket_path: Path) -> None:
    code, out, _ = run(socket_path, "show", "0000:00:0a.0")
    assert code == 0
    assert "5 entries, enabled yes, masked no, table BAR3+0x0, PBA BAR3+0x2000" in out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["0"], ["~1"])]
    assert rows[0][:6] == ["0", "41", "IR-PCI-MSIX-0000:00:0a.0", "vfio-msix[0](0000:00:0a.0)", "0-1", "0"]
    assert rows[1][:7] == ["~1", "42", "IR-PCI-MSIX-0000:00:0a.0", "-", "1", "1", "no:"]


def test_leases_show_and_revoke(run: Run, socket_path: Path, fake: FakeServicer) -> None:
    code, out, _ = run(socket_path, "leases", "0000:00:0a.0")
    assert code == 0 and fake.requests[-1] == pb.ListLeasesRequest(bdf="0000:00:0a.0")
    row = next(line.split() for line in out.splitlines() if line.startswith("3fa2c1d09b7e"))
    assert row[:4] == ["3fa2c1d09b7e", "0000:00:0a.0", "0", "41"] and row[-2:] == ["no", "own"]
    code, out, _ = run(socket_path, "show", "0000:00:0a.0")
    assert "vector 0 (IRQ 41) leased to uid 4242 pid 777 since " in out and "(lease 3fa2c1d09b7e)" in out
    code, out, _ = run(socket_path, "revoke", "3fa2c1d09b7e", "--reason", "maintenance")
    assert code == 0 and fake.requests[-1] == pb.RevokeLeaseRequest(lease="3fa2c1d09b7e", reason="maintenance")
    assert out.strip() == "lease 3fa2c1d09b7e of 0000:00:0a.0 vectors 0 (uid 4242 pid 777) revoked"
    code, _, err = run(socket_path, "revoke", "nope")
    assert code == 1 and err == "no lease 'nope' [NOT_FOUND]"


def test_force_is_passed_for_changes_to_leased_vectors(run: Run, socket_path: Path, fake: FakeServicer) -> None:
    run(socket_path, "enable", "0000:00:0a.0", "--vectors", "2", "--force")
    assert fake.requests[-1] == pb.EnableRequest(bdf="0000:00:0a.0", vectors=2, force=True)
    run(socket_path, "disable", "0000:00:0a.0", "--vector", "0", "--force")
    assert fake.requests[-1] == pb.DisableRequest(bdf="0000:00:0a.0", vector=0, force=True)


def test_lease_needs_the_local_socket_and_one_way_to_name_vectors(run: Run, socket_path: Path) -> None:
    code, _, err = run(socket_path, "lease", "0000:00:0a.0", "--", "true")
    assert code == 2
    code, _, err = run(socket_path, "lease", "0000:00:0a.0", "--vectors", "0", "--", "true")
    assert code == 3 and "msixd-lease.sock" in err, "no lease socket beside the fake server's"


def test_not_found_is_one_line_and_exit_1(run: Run, socket_path: Path) -> None:
    code, _, err = run(socket_path, "show", "0000:00:1f.7")
    assert code == 1 and err == "no PCI device 0000:00:1f.7 [NOT_FOUND]"


def test_affinity_errors_and_spread(run: Run, socket_path: Path, fake: FakeServicer) -> None:
    code, _, err = run(socket_path, "affinity", "0000:00:0a.0", "3", "9")
    assert code == 1 and "not online" in err
    code, out, _ = run(socket_path, "affinity", "0000:00:0a.0", "--spread", "--dry-run")
    assert code == 0 and fake.requests[-1] == pb.SpreadRequest(bdf="0000:00:0a.0", dry_run=True)
    assert [line.split()[:3] for line in out.splitlines()[1:]] == [["0", "41", "0"], ["1", "42", "1"]]
    code, _, _ = run(socket_path, "affinity", "0000:00:0a.0", "3")
    assert code == 2


def test_disable_one_vector(run: Run, socket_path: Path, fake: FakeServicer) -> None:
    code, out, _ = run(socket_path, "disable", "0000:00:0a.0", "--vector", "2")
    assert code == 0 and fake.requests[-1].HasField("vector") and out.strip().endswith("released vectors 2")


def test_watch_json_lines(run: Run, socket_path: Path) -> None:
    code, out, _ = run(socket_path, "watch", "0000:00:0a.0", "--count", "2", "--interval", "0.1", "-o", "json")
    assert code == 0
    samples = [json.loads(line) for line in out.splitlines()]
    assert [s["vectors"][0]["total"] for s in samples] == ["0", "1"]


def test_missing_socket_exit_3(run: Run, tmp_path: Path) -> None:
    code, _, err = run(tmp_path / "absent.sock", "list")
    assert code == 3 and "the socket does not exist" in err and "systemctl start msixd" in err


def test_nobody_listening_exit_3(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "dead.sock"
    dead = socket.socket(socket.AF_UNIX)
    dead.bind(str(path))
    dead.close()
    code, _, err = run(path, "--timeout", "2", "list")
    assert code == 3 and "nobody listens" in err


def test_not_a_socket_exit_3(run: Run, tmp_path: Path) -> None:
    path = tmp_path / "file"
    path.write_text("")
    code, _, err = run(path, "status")
    assert code == 3 and "not a socket" in err


def msixctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "msixctl.main", *args], cwd=REPO, capture_output=True, text=True, timeout=60
    )


def test_subprocess_error_has_no_traceback(socket_path: Path) -> None:
    done = msixctl("--socket", str(socket_path), "show", "../../x")
    assert done.returncode == 1
    assert done.stderr == "msixctl: invalid PCI address '../../x' [INVALID_ARGUMENT]\n"
    assert done.stdout == ""


def test_subprocess_json_and_unreachable(socket_path: Path, tmp_path: Path) -> None:
    done = msixctl("--socket", str(socket_path), "status", "-o", "json")
    assert done.returncode == 0 and json.loads(done.stdout)["daemon_version"] == "9.9"
    done = msixctl("--socket", str(tmp_path / "none.sock"), "list")
    assert done.returncode == 3 and "Traceback" not in done.stderr and done.stderr.count("\n") == 1


@pytest.mark.parametrize(
    "args",
    [["show"], ["enable", "00:01.0"], ["enable", "00:01.0", "--vectors", "0"], ["bogus"], ["list", "-o", "yaml"]],
)
def test_bad_usage_exit_2(args: list[str]) -> None:
    done = msixctl(*args)
    assert done.returncode == 2 and "Traceback" not in done.stderr


def test_help_teaches() -> None:
    done = msixctl("--help")
    assert done.returncode == 0 and "msixd" in done.stdout and "-o json" in done.stdout
    done = msixctl("affinity", "--help")
    assert "--spread" in done.stdout and "Example" in done.stdout


def test_msixctl_imports_only_the_api_and_itself() -> None:
    for path in (REPO / "msixctl").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            for name in names:
                if name.startswith("msixd"):
                    assert name.startswith("msixd.api"), f"{path.name} imports {name}"


COMMANDS = sorted(c.name or c.callback.__name__ for c in app.registered_commands)  # type: ignore[union-attr]


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_with_bad_arguments_is_one_line(command: str, tmp_path: Path) -> None:
    """Non-zero, one line on stderr, no traceback: a bad option, and a bad BDF with no daemon."""
    bad_option = msixctl(command, "--no-such-option")
    assert bad_option.returncode == 2
    assert bad_option.stderr.count("\n") == 1 and bad_option.stderr.startswith("msixctl: ") and bad_option.stdout == ""
    arguments = {"enable": ["--vectors", "2"], "trigger": ["1"], "affinity": ["1", "0"],
                 "lease": ["--vectors", "0", "--", "true"], "revoke": ["3fa2c1d09b7e"]}.get(command, [])
    bdf_first = command not in ("list", "domains", "status", "leases", "revoke", "policy", "diff", "apply")
    bdf = ["../../x"] if bdf_first else []
    no_daemon = msixctl("--socket", str(tmp_path / "none.sock"), command, *bdf, *arguments)
    assert no_daemon.returncode == 3
    assert no_daemon.stderr.count("\n") == 1 and "Traceback" not in no_daemon.stderr


def test_no_arguments_shows_help() -> None:
    done = msixctl()
    assert done.returncode == 0 and "Usage:" in done.stdout and done.stderr == ""


class Answers(msix_pb2_grpc.MsixServiceServicer):
    """A server that answers every GetStatus with one status of its own."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details

    def GetStatus(self, request: pb.GetStatusRequest, context: grpc.ServicerContext) -> pb.Status:
        context.abort(self.code, self.details)
        raise AssertionError("abort raises")


HELD = "0000:00:0a.0: VFIO group 10 is held by pid 4242 (qemu-connect)"


def test_a_status_msixd_sent_is_never_cannot_reach(run: Run, tmp_path: Path) -> None:
    """Whatever code a reached server answers with, the user hears its words and exit 1."""
    path = tmp_path / "answers.sock"
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    msix_pb2_grpc.add_MsixServiceServicer_to_server(Answers(grpc.StatusCode.UNAVAILABLE, HELD), server)
    server.add_insecure_port(f"unix:{path}")
    server.start()
    try:
        code, _, err = run(path, "status")
    finally:
        server.stop(None).wait()
    assert code == 1 and err == f"{HELD} [UNAVAILABLE]"


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl makes the test certificates")
def test_over_tls_too_only_transport_failures_are_cannot_reach(tmp_path: Path) -> None:
    make_pki(tmp_path, "t")
    credentials = grpc.ssl_server_credentials(
        [((tmp_path / "t-server.key").read_bytes(), (tmp_path / "t-server.pem").read_bytes())],
        root_certificates=(tmp_path / "t-ca.pem").read_bytes(), require_client_auth=True)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    msix_pb2_grpc.add_MsixServiceServicer_to_server(Answers(grpc.StatusCode.UNAVAILABLE, HELD), server)
    port = server.add_secure_port("127.0.0.1:0", credentials)
    server.start()
    tls = ["--ca", str(tmp_path / "t-ca.pem"), "--cert", str(tmp_path / "t-client.pem"),
           "--key", str(tmp_path / "t-client.key")]
    try:
        answered = runner.invoke(app, ["--target", f"127.0.0.1:{port}", *tls, "status"])
    finally:
        server.stop(None).wait()
    unreachable = runner.invoke(app, ["--target", f"127.0.0.1:{port}", *tls, "--timeout", "5", "status"])
    assert isinstance(answered.exception, ClientError) and answered.exception.exit_code == 1
    assert str(answered.exception) == f"{HELD} [UNAVAILABLE]"
    assert isinstance(unreachable.exception, ClientError) and unreachable.exception.exit_code == 3
    assert "cannot reach msixd at 127.0.0.1:" in str(unreachable.exception)


def test_vector_0_and_the_interval_are_always_sent(run: Run, socket_path: Path, fake: FakeServicer) -> None:
    """msixd refuses these requests without the fields: msixctl sends them even when they are 0."""
    assert run(socket_path, "affinity", "0000:00:0a.0", "0", "1")[0] == 0
    assert fake.requests[-1].HasField("vector") and fake.requests[-1].vector == 0
    assert run(socket_path, "trigger", "0000:00:0a.0", "0")[0] == 0
    assert fake.requests[-1].HasField("vector") and fake.requests[-1].vector == 0
    assert run(socket_path, "watch", "0000:00:0a.0", "--count", "1", "-o", "json")[0] == 0
    assert fake.requests[-1].HasField("interval_ms") and fake.requests[-1].interval_ms == 1000


SHORT = "00:0a.0"  # how a user may type 0000:00:0a.0


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["enable", SHORT, "--vectors", "5"], "0000:00:0a.0: 2 -> 5 vectors (reenable)"),
        (["disable", SHORT, "--vector", "2"], "0000:00:0a.0: released vectors 2"),
        (["trigger", SHORT, "3"], "0000:00:0a.0 vector 3: eventfd count 7"),
        (["affinity", SHORT, "3", "1"], "0000:00:0a.0 vector 3 (IRQ 44): affinity 1, effective 1"),
    ],
)
def test_every_answer_names_the_device_as_msixd_does(run: Run, socket_path: Path, args: list[str], line: str) -> None:
    code, out, _ = run(socket_path, *args)
    assert code == 0 and out == f"{line}\n"


def _example_commands(doc: str) -> list[str]:
    return [line[line.index("msixctl "):].strip() for line in doc.splitlines() if "msixctl " in line]


@pytest.mark.parametrize("command", sorted(app.registered_commands, key=lambda c: c.name or c.callback.__name__),
                         ids=lambda c: c.name or c.callback.__name__)
def test_help_examples_keep_their_lines(command: object) -> None:
    """Each example in a command's docstring is a line of its own in --help, not run into the text."""
    name = command.name or command.callback.__name__  # type: ignore[attr-defined]
    examples = _example_commands(command.callback.__doc__)  # type: ignore[attr-defined]
    assert examples, f"{name} has an example"
    shown = [line.strip() for line in msixctl(name, "--help").stdout.splitlines()]
    for example in examples:
        assert any(line.endswith(example) for line in shown), f"{example!r} not on a line of its own in {shown}"


@pytest.mark.parametrize(
    "args",
    [["list"], ["list", "--all", "-o", "json"], ["show", "0000:00:0a.0"], ["show", "00:0a.0", "--output=json"],
     ["domains"], ["status"], ["status", "-o", "json"], ["affinity", "0000:00:0a.0", "--spread", "--dry-run"],
     ["affinity", "0000:00:0a.0", "3", "9"], ["disable", "0000:00:0a.0"], ["watch", SHORT, "--count", "2",
     "--interval", "0.1", "-o", "json"], ["show", "0000:00:1f.7"], ["show", "../../x", "-o", "json"]],
)
def test_main_and_typer_print_the_same(socket_path: Path, capsys: pytest.CaptureFixture[str],
                                       monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    """The command lines main() runs without typer print, byte for byte, what typer's path prints."""
    from msixctl import args as fast

    argv = ["--socket", str(socket_path), *args]
    assert fast.parse(argv, {}) is not None, "a command line the fast path takes"
    monkeypatch.setattr(sys, "argv", ["msixctl", *argv])
    with pytest.raises(SystemExit) as direct:
        main()
    first = (direct.value.code, *capsys.readouterr())
    monkeypatch.setattr(fast, "parse", lambda argv, environ: None)  # typer parses everything
    with pytest.raises(SystemExit) as through_typer:
        main()
    assert (through_typer.value.code, *capsys.readouterr()) == first


def _loaded(*argv: str) -> set[str]:
    """Top-level packages loaded by running msixctl with argv (its output discarded)."""
    probe = (
        "import sys, io\n"
        f"sys.argv = ['msixctl', *{list(argv)!r}]\n"
        "from msixctl.main import main\n"
        "sys.stdout = io.StringIO()\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "sys.stdout = sys.__stdout__\n"
        "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    return set(done.stdout.split())


def test_a_command_loads_no_parser_library_and_help_no_grpc(socket_path: Path) -> None:
    """What keeps msixctl fast: typer (and the pydantic it checks values with) only when it has
    something to explain, and help without gRPC, protobuf or rich."""
    command = _loaded("--socket", str(socket_path), "list")
    assert "grpc" in command and not command & {"typer", "pydantic", "click", "rich"}
    assert not _loaded("--socket", str(socket_path), "list", "-o", "json") & {"typer", "pydantic", "rich"}
    for help_argv in (["--help"], ["list", "--help"]):
        shown = _loaded(*help_argv)
        assert "typer" in shown and not shown & {"grpc", "google", "rich"}, help_argv
