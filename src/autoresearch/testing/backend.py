"""BackendConformance: what every `autoresearch.run.backends.Backend` does with a `RunSpec`, as tests.

The coordinator hands a backend plain data (a RunSpec: a commit of the task repository, the
command, its budget) and a slot, from one thread per slot, and expects an `Outcome` back: the
commit's files and nothing else, the metric read, the status for each way a run ends, the log
under `<state_dir>/logs/<spec.log_name>`, and nothing left behind (no process, no folder, no
worktree). Subclass the suite and override `make_backend`:

    class TestMyBackend(BackendConformance):
        def make_backend(self, repo: Path, state_dir: Path) -> Backend:
            return MyBackend(repo, state_dir)

Each test gets a fresh toy task repository (a git repo whose train.py prints `score: <n>`, built
here) and a fresh backend, closed after the test. Runs are not sandboxed (`spec.sandbox` is None),
so a command can leave its pid or working folder in a file for the test to look at.
"""
from __future__ import annotations

import dataclasses
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest

from autoresearch.core.config import STATE_DIR, MetricSpec
from autoresearch.run.backends import Backend
from autoresearch.run.execution import FrozenFileError, Outcome, RunSpec
from autoresearch.run.slots import Slot
from autoresearch.testing import process_gone

# The toy experiment (str.format: X): its score is X squared, and it shows the budget it was given.
TRAIN = ('import os\nX = {x}\nprint("budget:", os.environ.get("AUTORESEARCH_TIME_BUDGET"))\n'
         'print(f"score: {{X * X:.6f}}")\n')
FROZEN = "# frozen: data and evaluation would live here\nEVAL = 1\n"  # prepare.py, the one frozen file
SCORE = 2.25  # of the first commit's train.py (X = 1.5)
TIMEOUT_S = 1.0  # the hard timeout of the runs meant to overrun it
GONE_WAIT_S = 10.0  # how long a killed run's processes may take to disappear
SLACK_S = 20.0  # how long past its timeout (or the stop request) a run may take to return
OVERLAP_WAIT_S = 20.0  # how long a run on one slot waits for the run on another to start


def make_toy_repo(root: Path) -> Path:
    """A git repository holding train.py (prints `score: 2.250000`) and a frozen prepare.py."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "train.py").write_text(TRAIN.format(x=1.5))
    (root / "prepare.py").write_text(FROZEN)
    _git(root, "init", "-q", "-b", "main")
    _commit(root, "init")
    return root


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@t", *args],
                          capture_output=True, text=True, check=True).stdout.strip()


def _commit(repo: Path, message: str) -> str:
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", message)
    return _git(repo, "rev-parse", "HEAD")


class BackendConformance:
    """The tests every backend passes; `make_backend` is the one method to override."""

    pytestmark = pytest.mark.timeout(120)

    def make_backend(self, repo: Path, state_dir: Path) -> Backend:
        """A backend running commits of the git repository `repo`, its state (logs) under `state_dir`."""
        raise NotImplementedError("subclass BackendConformance and return your backend from make_backend")

    @pytest.fixture
    def repo(self, tmp_path: Path) -> Path:
        return make_toy_repo(tmp_path / "task")

    @pytest.fixture
    def state_dir(self, repo: Path) -> Path:
        return repo / STATE_DIR  # where the coordinator keeps it

    @pytest.fixture
    def backend(self, repo: Path, state_dir: Path) -> Iterator[Backend]:
        b = self.make_backend(repo, state_dir)
        yield b
        b.close()

    def spec(self, repo: Path, command: str = "python train.py", n: int = 0, **kw: Any) -> RunSpec:
        """A primary run of the repository's HEAD, as the coordinator describes one."""
        fields: dict[str, Any] = dict(
            exp_id=1, n=n, kind="primary", commit=_git(repo, "rev-parse", "HEAD"), command=command,
            env={"AUTORESEARCH_TIME_BUDGET": "5"}, timeout_s=30.0, log_name=f"t/1.{n}.log", log_cap_bytes=1 << 20,
            metric=MetricSpec("score"), frozen={"prepare.py": FROZEN})
        return RunSpec(**{**fields, **kw})

    def worktrees(self, repo: Path) -> list[str]:
        """The repository's registered worktrees (the repository itself is the first)."""
        return [line for line in _git(repo, "worktree", "list", "--porcelain").splitlines()
                if line.startswith("worktree ")]

    def run(self, backend: Backend, spec: RunSpec, slot: Slot | None = None,
            on_output: Callable[[str], None] | None = None,
            should_stop: Callable[[], bool] | None = None) -> Outcome:
        return backend.run(spec, slot or backend.slots[0], on_output=on_output, should_stop=should_stop)

    # -- the backend ----------------------------------------------------------------------------

    def test_name_and_slots(self, backend: Backend) -> None:
        assert isinstance(backend.name, str) and backend.name
        assert backend.slots and all(isinstance(s, Slot) for s in backend.slots)
        assert len({s.name for s in backend.slots}) == len(backend.slots)  # the live view tells them apart

    def test_close_is_idempotent(self, backend: Backend) -> None:
        backend.close()
        backend.close()  # and the fixture closes it once more

    # -- how a run ends -------------------------------------------------------------------------

    def test_ok_run_gives_the_metric(self, backend: Backend, repo: Path) -> None:
        outcome = self.run(backend, self.spec(repo))
        assert outcome.status == "ok", outcome.fields
        assert outcome.metric == pytest.approx(SCORE) and outcome.metrics["score"] == pytest.approx(SCORE)
        assert outcome.fields["exit_code"] == 0 and outcome.fields["wall_s"] >= 0
        assert "score: 2.250000" in outcome.fields["log_tail"]
        assert outcome.started_at <= outcome.ended_at and outcome.ended_at <= time.time() + 1

    def test_crash_gives_the_exit_code(self, backend: Backend, repo: Path) -> None:
        outcome = self.run(backend, self.spec(repo, "python train.py; exit 3"))
        assert outcome.status == "crash" and outcome.fields["exit_code"] == 3
        assert outcome.failure[0] == "crash" and "3" in outcome.failure[1]
        assert outcome.metric is None

    def test_no_metric_is_a_crash(self, backend: Backend, repo: Path) -> None:
        outcome = self.run(backend, self.spec(repo, "echo nothing to see"))
        assert outcome.status == "crash" and outcome.fields["exit_code"] == 0
        assert outcome.failure[0] == "crash" and "metric" in outcome.failure[1] and outcome.metric is None

    def test_timeout_kills_the_process_tree(self, backend: Backend, repo: Path, tmp_path: Path) -> None:
        pids = tmp_path / "pids"
        spec = self.spec(repo, f"echo $$ > {pids}; sleep 60 & echo $! >> {pids}; wait; echo score: 1",
                         timeout_s=TIMEOUT_S)
        t0 = time.monotonic()
        outcome = self.run(backend, spec)
        assert outcome.status == "timeout", outcome.fields
        assert outcome.failure[0] == "timeout" and outcome.metric is None
        assert time.monotonic() - t0 < TIMEOUT_S + SLACK_S
        started = [int(p) for p in pids.read_text().split()]
        assert len(started) == 2
        assert all(process_gone(pid, GONE_WAIT_S) for pid in started), f"processes of the run outlived its timeout: {started}"
        assert Path(outcome.fields["log_path"]).is_file()

    def test_should_stop_stops_the_run(self, backend: Backend, repo: Path, tmp_path: Path) -> None:
        pidfile = tmp_path / "pid"
        spec = self.spec(repo, f"echo $$ > {pidfile}.tmp; mv {pidfile}.tmp {pidfile}; sleep 60; echo score: 1")
        t0 = time.time()
        outcome = self.run(backend, spec, should_stop=pidfile.exists)
        assert outcome.status == "stopped", outcome.fields
        assert outcome.failure[0] == "interrupted" and outcome.metric is None
        # from the stop request (the run wrote its pid file) to the return: a slow start is not a slow stop
        asked = pidfile.stat().st_mtime
        assert time.time() - asked < SLACK_S, f"stopped {time.time() - asked:.1f} s after the request " \
                                              f"(the run started {asked - t0:.1f} s after it was sent)"
        assert process_gone(int(pidfile.read_text()), GONE_WAIT_S), "the run outlived the stop"
        assert Path(outcome.fields["log_path"]).is_file()

    def test_frozen_file_mismatch_raises(self, backend: Backend, repo: Path, tmp_path: Path) -> None:
        ran = tmp_path / "ran"
        spec = self.spec(repo, f"touch {ran}; python train.py")
        spec.frozen["prepare.py"] = "what the research base had\n"
        with pytest.raises(FrozenFileError, match="prepare.py"):
            self.run(backend, spec)
        assert not ran.exists(), "the command ran although a frozen file differed"
        assert len(self.worktrees(repo)) == 1

    def test_run_that_changes_a_frozen_file_is_tampered(self, backend: Backend, repo: Path) -> None:
        outcome = self.run(backend, self.spec(repo, "python train.py && echo '# changed' >> prepare.py"))
        assert outcome.status == "tampered" and outcome.failure[0] == "discard"
        assert "prepare.py" in outcome.failure[1]
        assert (repo / "prepare.py").read_text() == FROZEN  # in the run's copy, not the repository

    # -- what a run sees and leaves -------------------------------------------------------------

    def test_runs_exactly_the_commits_files(self, backend: Backend, repo: Path) -> None:
        first = _git(repo, "rev-parse", "HEAD")
        (repo / "train.py").write_text(TRAIN.format(x=2.0))
        second = _commit(repo, "X = 2")
        (repo / "train.py").write_text(TRAIN.format(x=3.0))  # uncommitted: never run
        (repo / "untracked.txt").write_text("not in any commit\n")
        spec = self.spec(repo, "test ! -e untracked.txt && python train.py")
        assert self.run(backend, dataclasses.replace(spec, commit=first)).metric == pytest.approx(SCORE)
        assert self.run(backend, dataclasses.replace(spec, commit=second, n=1, log_name="t/1.1.log")).metric == \
            pytest.approx(4.0)

    def test_environment_of_spec_and_slot_reach_the_run(self, backend: Backend, repo: Path) -> None:
        slot = dataclasses.replace(backend.slots[0], env={**backend.slots[0].env, "AUTORESEARCH_PROBE": "slot"})
        outcome = self.run(backend, self.spec(repo, "echo probe: $AUTORESEARCH_PROBE; python train.py"), slot)
        assert outcome.status == "ok"
        log = Path(outcome.fields["log_path"]).read_text()
        assert "budget: 5\n" in log and "probe: slot\n" in log

    def test_on_output_receives_the_lines(self, backend: Backend, repo: Path) -> None:
        seen: list[str] = []
        outcome = self.run(backend, self.spec(repo, "for i in 1 2 3; do echo line $i; done; echo score: 4"),
                           on_output=seen.append)
        assert outcome.status == "ok" and outcome.metric == 4.0
        assert [line.rstrip("\n") for line in seen] == ["line 1", "line 2", "line 3", "score: 4"]

    def test_log_lands_under_state_dir_logs(self, backend: Backend, repo: Path, state_dir: Path) -> None:
        spec = self.spec(repo, "echo hello from the run; python train.py", n=4, log_name="t/deep/7.4.log")
        outcome = self.run(backend, spec)
        log = state_dir / "logs" / "t" / "deep" / "7.4.log"
        assert Path(outcome.fields["log_path"]).resolve() == log.resolve()
        assert "hello from the run\n" in log.read_text() and "score: 2.250000" in log.read_text()

    def test_the_runs_folder_is_gone_afterwards(self, backend: Backend, repo: Path, tmp_path: Path) -> None:
        for n, tail in enumerate(("python train.py", "exit 1")):
            cwd = tmp_path / f"cwd{n}"
            outcome = self.run(backend, self.spec(repo, f"pwd > {cwd}; {tail}", n=n))
            assert outcome.status == ("ok" if n == 0 else "crash")
            folder = Path(cwd.read_text().strip())
            assert folder.resolve() != repo.resolve()
            assert not folder.exists(), f"the run's folder {folder} is still there"
        assert len(self.worktrees(repo)) == 1

    def test_slots_run_at_the_same_time(self, backend: Backend, repo: Path, tmp_path: Path) -> None:
        if len(backend.slots) < 2:
            pytest.skip("one slot: runs cannot overlap (give make_backend's backend two)")
        outcomes: dict[int, Outcome] = {}
        errors: list[BaseException] = []

        def one(n: int) -> None:
            # Each run says it started, then waits for the other to start: it passes only if both run at once.
            mine, other = tmp_path / f"started{n}", tmp_path / f"started{3 - n}"
            command = (f"echo run {n}; touch {mine}; for i in $(seq {int(OVERLAP_WAIT_S * 10)}); do "
                       f"[ -e {other} ] && break; sleep 0.1; done; [ -e {other} ] && python train.py")
            try:  # one thread per slot, as the scheduler does; distinct run numbers
                outcomes[n] = self.run(backend, self.spec(repo, command, n=n), backend.slots[n - 1])
            except BaseException as e:  # reported below, in the test's thread
                errors.append(e)

        threads = [threading.Thread(target=one, args=(n,)) for n in (1, 2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
        for n in (1, 2):
            assert outcomes[n].status == "ok", f"run {n} never saw the other one start: {outcomes[n].fields}"
            assert outcomes[n].metric == pytest.approx(SCORE)
            assert f"run {n}\n" in Path(outcomes[n].fields["log_path"]).read_text()
        assert outcomes[1].fields["log_path"] != outcomes[2].fields["log_path"]
        assert len(self.worktrees(repo)) == 1
