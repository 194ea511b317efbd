"""msixctl policy, diff, apply and show's RULE column, against msixd's real server on a captured tree."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from msixctl.client import ClientError
from msixctl.main import app
from msixd.kernel.roots import KernelRoots
from msixd.service.services import Services
from tests.serving import serve

runner = CliRunner()
PIN_RX = '[[rule]]\nname = "rx"\nmatch = { bdf = "0000:00:04.0", actions = "*-rx" }\nplace = "pin"\ncpus = "1"\n'
LEAVE_BLK = '[[rule]]\nname = "blk"\nmatch = { block = "vda" }\nplace = "pin"\ncpus = "1"\n'


class Msixd:
    def __init__(self, root: Path, socket_dir: Path) -> None:
        self.root = root
        self.policy_dir = root / "etc/msixd/policy.d"
        self.policy_dir.mkdir(parents=True)
        self.services = Services.build(KernelRoots.under(root), root / "state/state.json",
                                       policy_dir=self.policy_dir, irqbalance=False)
        self.socket = socket_dir / "m.sock"
        self.server = serve(self.services, self.socket)

    def run(self, *args: str) -> tuple[int, str, str]:
        result = runner.invoke(app, ["--socket", str(self.socket), *args])
        if isinstance(result.exception, ClientError):
            return result.exception.exit_code, result.stdout, str(result.exception)
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        return result.exit_code, result.stdout, result.stderr

    def affinity(self, irq: int) -> str:
        return (self.root / f"proc/irq/{irq}/smp_affinity_list").read_text().strip()


@pytest.fixture
def msixd(tree: Callable[[str], Path]) -> Iterator[Msixd]:
    with tempfile.TemporaryDirectory(prefix="pc-", dir="/tmp") as short:  # a socket path fits in 108 bytes
        daemon = Msixd(tree("host-6.18"), Path(short))
        try:
            yield daemon
        finally:
            daemon.server.stop(None)


def test_apply_places_and_diff_is_then_empty(msixd: Msixd) -> None:
    (msixd.policy_dir / "10-rx.toml").write_text(PIN_RX)
    code, out, _ = msixd.run("apply", "--dry-run")
    assert code == 0 and "a dry run, nothing changed" in out
    row = next(line for line in out.splitlines() if line.startswith("0000:00:04.0"))
    assert row.split() == ["0000:00:04.0", "1", "41", "rx", "0-1", "1"]
    assert msixd.affinity(41) == "0-1"
    code, out, _ = msixd.run("apply")
    assert code == 0 and "1 vectors placed" in out and msixd.affinity(41) == "1"
    code, out, _ = msixd.run("diff")
    assert code == 0 and out.strip() == "no changes: every vector is where the policy puts it"
    (msixd.root / "proc/irq/41/smp_affinity_list").write_text("0\n")
    code, out, _ = msixd.run("diff", "-o", "json")
    assert code == 0
    (change,) = json.loads(out)["changes"]
    assert (change["irq"], change["affinity"], change["target"], change["state"]) == (
        41, [0], [1], "VECTOR_POLICY_STATE_PENDING")


def test_policy_shows_rules_vectors_and_the_reconciler(msixd: Msixd) -> None:
    (msixd.policy_dir / "10-rx.toml").write_text(PIN_RX)
    (msixd.policy_dir / "20-blk.toml").write_text(LEAVE_BLK)
    msixd.run("apply")
    code, out, _ = msixd.run("policy")
    assert code == 0
    assert "2 files, 2 rules" in out and "apply 2" in out
    rule_rows = [line.split() for line in out.splitlines() if line.split()[:2] in (["1", "rx"], ["2", "blk"])]
    assert [row[:2] for row in rule_rows] == [["1", "rx"], ["2", "blk"]]
    managed = next(line for line in out.splitlines() if line.startswith("0000:00:02.0") and " 36 " in line)
    assert "unchangeable" in managed and "read-only" in managed
    code, out, _ = msixd.run("policy", "--device", "00:04.0", "-o", "json")
    report = json.loads(out)
    assert [v["irq"] for v in report["vectors"]] == [41]
    assert report["rules"][0]["file"].endswith("10-rx.toml") and report["rules"][0]["action"] == "POLICY_ACTION_PIN"


def test_show_marks_the_rule_of_each_vector(msixd: Msixd) -> None:
    (msixd.policy_dir / "10-rx.toml").write_text(PIN_RX)
    msixd.run("apply")
    code, out, _ = msixd.run("show", "0000:00:04.0")
    assert code == 0 and "RULE" in out
    rows = {line.split()[1]: line.split()[-1] for line in out.splitlines() if line.split()[:1] in (["0"], ["1"])}
    assert rows == {"40": "-", "41": "rx"}


def test_apply_with_a_file_is_a_trial_and_errors_name_the_line(msixd: Msixd, tmp_path: Path) -> None:
    trial = tmp_path / "10-rx.toml"
    trial.write_text(PIN_RX)
    code, out, _ = msixd.run("apply", "-f", str(trial))
    assert code == 0 and msixd.affinity(41) == "1" and "not saved" in out
    broken = tmp_path / "30-broken.toml"
    broken.write_text('[[rule]]\nname = "x"\nplace = "pin"\ncpus = "9-2"\n')
    code, _, err = msixd.run("apply", "-f", str(broken))
    assert code == 1 and "30-broken.toml (applied by msixctl), line 4: cpus: range '9-2' is reversed" in err
    assert "INVALID_ARGUMENT" in err
    code, _, err = msixd.run("apply", "-f", str(tmp_path / "absent.toml"))
    assert code == 2 and "cannot read" in err


def test_a_managed_vector_pinned_by_policy_is_a_problem_once(msixd: Msixd) -> None:
    (msixd.policy_dir / "20-blk.toml").write_text(LEAVE_BLK)
    code, out, _ = msixd.run("apply")
    assert code == 0 and "vectors the policy cannot place" in out
    assert msixd.affinity(35) == "1"
