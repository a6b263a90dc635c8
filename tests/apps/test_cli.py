"""The command line as a user (or a coding agent) drives it, with --json output."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from autoresearch.repo import gitops


def cli(*args: str, cwd: Path | None = None, check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([sys.executable, "-m", "autoresearch", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]


def test_run_with_offline_default_then_inspect(toy_task: Path):
    idea = json.loads(cli("idea", "add", "X=2.0", "-C", str(toy_task), "--json").stdout)
    cli("idea", "add", "try a cosine schedule", "-C", str(toy_task))
    out = cli("run", str(toy_task), "--max-experiments", "6", "--json", "--seed", "1").stdout
    evs = events(out)
    assert any("offline `search` agent" in e.get("text", "") for e in evs)
    finished = [e for e in evs if e["event"] == "finished"]
    assert len(finished) == 6 and finished[0]["status"] == "keep"
    done = evs[-1]
    assert done["event"] == "done" and done["runs"] == 6

    # The queued setting was tried next, recorded on the experiment, and marked with its outcome.
    ideas = json.loads(cli("idea", "list", "--all", "-C", str(toy_task), "--json").stdout)
    tried = next(i for i in ideas if i["id"] == idea["id"])
    assert tried["status"] == "tried" and tried["experiment_id"] == 2 and tried["outcome"]
    assert next(i for i in ideas if i["text"].startswith("try a cosine"))["status"] == "open"

    log = json.loads(cli("log", "-C", str(toy_task), "--json").stdout)
    assert len(log) == 6 and log[1]["idea_id"] == idea["id"] and log[1]["params"]["X"] == 2.0
    assert log[1]["status"] == "keep" and log[1]["metric"] == pytest.approx(0.9)

    status = json.loads(cli("status", "-C", str(toy_task), "--json").stdout)
    assert status["counts"]["keep"] >= 2 and status["best"]["metric"] <= 0.9
    assert status["branch"] == done["branch"]

    shown = json.loads(cli("show", "2", "-C", str(toy_task), "--json").stdout)
    assert "-X = 5.0" in shown["diff"] and "+X = 2.0" in shown["diff"] and shown["metrics"]["score"] == 0.9
    assert "score:" in cli("show", "2", "-C", str(toy_task)).stdout

    png = toy_task / "progress.png"
    cli("plot", "-C", str(toy_task))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000

    exported = json.loads(cli("export", "-C", str(toy_task)).stdout)
    assert [e["id"] for e in exported] == [e["id"] for e in log]
    csv_text = cli("export", "-C", str(toy_task), "--format", "csv").stdout
    assert csv_text.splitlines()[0].startswith("id,tag,parent_commit")
    assert gitops.git(toy_task, "status", "--porcelain") == ""  # state files are excluded from git status


def test_main_returns_the_parsers_exit_code(capsys):
    from autoresearch.apps.cli import main

    assert main(["--version"]) == 0 and "autoresearch" in capsys.readouterr().out
    assert main(["run", "--max-experiments", "zero"]) == 2
    assert "--max-experiments: must be a whole number of at least 1, not 'zero'" in capsys.readouterr().err


def test_bad_config_fails_before_any_run(toy_task: Path):
    cfg = toy_task / "autoresearch.toml"
    cfg.write_text(cfg.read_text().replace('name = "score"', 'name = ""'))
    proc = cli("run", str(toy_task), "--max-experiments", "1", check=False)
    assert proc.returncode == 2
    assert "autoresearch.toml: [metric.name]" in proc.stderr and "fix:" in proc.stderr
    assert not (toy_task / ".autoresearch").exists()


def test_example_runs_in_its_own_research_repository(tmp_path: Path):
    """`run examples/<x>` from a clone of autoresearch must not put branches into that clone."""
    from autoresearch.apps.tasks import resolve_task

    clone = Path(__file__).resolve().parents[2]
    root, note = resolve_task(str(clone / "examples" / "nanogpt"))
    assert root == (tmp_path / "research-home" / "nanogpt").resolve() and "created" in note
    assert gitops.toplevel(root) == root and gitops.git(root, "status", "--porcelain") == ""
    assert resolve_task("nanogpt") == (root, f"using the research repository {root}")
    # Any other folder inside someone else's repository is refused with the fix.
    with pytest.raises(Exception, match="autoresearch new"):
        resolve_task(str(clone / "tests"))


def test_new_and_init(tmp_path: Path, toy_task: Path):
    dest = tmp_path / "copy"
    cli("new", str(toy_task), str(dest))
    assert gitops.toplevel(dest) == dest.resolve() and (dest / "train.py").exists()
    assert cli("new", str(toy_task), str(dest), check=False).returncode == 2  # not empty
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "train.py").write_text('LR = 0.1\nprint(f"val_loss: {LR}")\n')
    cli("init", str(plain))
    text = (plain / "autoresearch.toml").read_text()
    assert 'name = "val_loss"' in text and 'editable = ["train.py"]' in text
    assert cli("init", str(plain), check=False).returncode == 2  # exists; --force needed


def test_pause_and_resume(toy_task: Path):
    assert "no research recorded" in cli("pause", str(toy_task), check=False).stderr
    cli("run", str(toy_task), "--max-experiments", "1", "--tag", "p", "--json")
    paused = json.loads(cli("pause", str(toy_task), "--json").stdout)
    assert paused["tag"] == "p" and paused["paused"] and paused["changed"] and paused["source"] == "cli"
    again = json.loads(cli("pause", str(toy_task), "--tag", "p", "--json").stdout)
    assert not again["changed"] and again["started_at"] == paused["started_at"]
    assert "paused already" in cli("pause", str(toy_task)).stdout
    # A loop started on a paused research run says so and starts nothing (here until its time limit).
    evs = events(cli("run", str(toy_task), "--max-hours", "0.0005", "--json").stdout)
    assert any("is paused" in e.get("text", "") for e in evs), evs
    assert [e["event"] for e in evs if e["event"] in ("paused", "started", "finished")] == ["paused"]
    assert evs[-1]["event"] == "done" and evs[-1]["runs"] == 0
    status = json.loads(cli("status", "-C", str(toy_task), "--json").stdout)
    assert status["counts"]["keep"] + status["counts"]["discard"] == 1  # only the baseline ran
    assert status["paused"]["source"] == "cli" and "paused since" in cli("status", "-C", str(toy_task)).stdout
    resumed = json.loads(cli("resume", str(toy_task), "--json").stdout)
    assert resumed["changed"] and not resumed["paused"] and resumed["pause"]["ended_at"] >= paused["started_at"]
    assert json.loads(cli("resume", str(toy_task), "--json").stdout)["changed"] is False
    assert "was not paused" in cli("resume", str(toy_task)).stdout
    evs = events(cli("run", str(toy_task), "--max-experiments", "2", "--json").stdout)
    assert evs[-1]["runs"] == 2 and not any(e["event"] == "paused" for e in evs)
    assert json.loads(cli("status", "-C", str(toy_task), "--json").stdout)["paused"] is None
    assert "no research run 'nope'" in cli("pause", str(toy_task), "--tag", "nope", check=False).stderr


def test_run_in_process_gives_the_signal_handlers_back(toy_task: Path):
    """cli.main is callable from Python: after a run, Ctrl-C and SIGTERM do what they did before."""
    import signal

    from autoresearch.apps import cli as cli_module

    def mine(signum, frame):
        pass

    before = signal.signal(signal.SIGINT, mine), signal.signal(signal.SIGTERM, mine)
    try:
        assert cli_module.main(["run", str(toy_task), "--max-experiments", "1", "--json"]) == 0
        assert signal.getsignal(signal.SIGINT) is mine and signal.getsignal(signal.SIGTERM) is mine
    finally:
        signal.signal(signal.SIGINT, before[0])
        signal.signal(signal.SIGTERM, before[1])
