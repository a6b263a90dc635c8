"""RayBackend on a real multi-node Ray cluster started on this machine (ray.cluster_utils.Cluster).

The head has no CPUs, so every run lands on a worker node; one worker node with one CPU is the
only place runs can go, which lets a test kill the node under a running experiment. Everything
stays on 127.0.0.1; the module takes ~15 s on 2 cores (cluster start ~5 s).
"""
from __future__ import annotations

import logging
import os
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import psutil
import pytest

ray = pytest.importorskip("ray")
from ray.cluster_utils import Cluster  # noqa: E402

from autoresearch.core.config import load_config  # noqa: E402
from autoresearch.core.errors import WorkerLost
from autoresearch.run.backends import make_backend  # noqa: E402
from autoresearch.run.execution import FrozenFileError, RunSpec, SetupError  # noqa: E402
from autoresearch.run.ray_backend import OUTPUT_BATCH, RayBackend, _streamed  # noqa: E402
from autoresearch.run.workspace import Links  # noqa: E402
from tests.conftest import make_task  # noqa: E402

pytestmark = pytest.mark.timeout(120)
TOY_SCORE = (5.0 - 2.0) ** 2 + 0.1 * (3 - 6) ** 2


class LocalCluster:
    def __init__(self, cluster: Cluster, worker: Any):
        self.cluster, self.worker = cluster, worker

    def add_worker(self) -> None:
        self.worker = self.cluster.add_node(num_cpus=1)
        self.cluster.wait_for_nodes()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    with pytest.MonkeyPatch.context() as mp:
        # Worker processes inherit this: the per-node setup markers go to a scratch home.
        mp.setenv("HOME", str(tmp_path_factory.mktemp("ray-home")))
        # Ray's "not a cluster" mode (its default on macOS/Windows): every node and address on
        # 127.0.0.1 instead of the machine's outward IP. The env var is for the Ray processes.
        mp.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        mp.setattr(ray._private.ray_constants, "ENABLE_RAY_CLUSTER", False)
        c = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
        try:
            local = LocalCluster(c, None)
            local.add_worker()
            assert c.address.startswith("127.0.0.1:")
            ray.init(address=c.address, log_to_driver=False, logging_level=logging.WARNING)
            yield local
        finally:
            ray.shutdown()
            c.shutdown()


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_task(tmp_path_factory.mktemp("ray-task") / "toy")


@pytest.fixture(scope="module")
def backend(cluster: LocalCluster, repo: Path) -> Iterator[RayBackend]:
    b = RayBackend(repo, repo / ".autoresearch")
    yield b
    b.close()
    assert ray.is_initialized()  # it attached to the test's connection: not its to close


def spec_for(repo: Path, command: str = "python train.py", n: int = 0, **kw: Any) -> RunSpec:
    cfg = load_config(repo)
    commit = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True,
                            check=True).stdout.strip()
    # exp_id: the pid, so this test's temp folders on the "worker" can be told from others'.
    return RunSpec(exp_id=os.getpid(), n=n, kind="primary", commit=commit, command=command,
                   env={"AUTORESEARCH_TIME_BUDGET": "5"}, timeout_s=30, log_name=f"t/1.{n}.log",
                   log_cap_bytes=1 << 20, metric=cfg.metric,
                   frozen={p: (repo / p).read_text() for p in cfg.frozen}, **kw)


def test_slots_from_cluster_resources(backend: RayBackend) -> None:
    assert [(s.name, s.cpus, s.gpus) for s in backend.slots] == [("ray0", 1.0, 0.0)]
    assert backend.slots[0].env["OMP_NUM_THREADS"] == "1"
    halves = RayBackend(backend.repo, backend.state_dir, slots=3, cpus_per_slot=0.5)
    assert [s.name for s in halves.slots] == ["ray0", "ray1", "ray2"]
    assert halves.slots[0].env == {}  # a fractional CPU says nothing about thread counts


def test_run_on_worker_node(backend: RayBackend, repo: Path) -> None:
    spec = spec_for(repo)
    outcome = backend.run(spec, backend.slots[0])
    assert outcome.status == "ok", outcome.fields
    assert outcome.metric == pytest.approx(TOY_SCORE)
    assert outcome.metrics["claimed_peak_memory_mb"] == 13  # printed: kept as a claim only
    measured = outcome.fields["peak_mem_mb"]  # None when the run ended before the first sample (20 ms)
    assert outcome.metrics.get("peak_memory_mb") == (None if measured is None else pytest.approx(measured, abs=0.01))
    log = Path(outcome.fields["log_path"])
    assert log == (backend.state_dir / "logs" / "t" / "1.0.log").resolve()
    assert not _work_dirs(spec)  # the worker removed the commit's folder
    assert "score:" in log.read_text() and "budget: 5" in log.read_text()
    assert outcome.logs == {}


def test_output_streams_while_the_run_goes_on(backend: RayBackend, repo: Path) -> None:
    spec = spec_for(repo, "for i in 1 2 3; do echo line $i; done; sleep 3; echo score: 1", n=9)
    seen: list[tuple[float, str]] = []
    backend.run(spec, backend.slots[0], on_output=lambda line: seen.append((time.monotonic(), line.strip())))
    ended = time.monotonic()
    assert [line for _, line in seen] == ["line 1", "line 2", "line 3", "score: 1"]
    assert ended - seen[0][0] > 2, "the first lines arrived only when the run ended"


def test_streamed_sends_the_latest_lines_and_returns_or_raises() -> None:
    def chatty(on_output: Callable[[str], None], should_stop: Callable[[], bool]) -> str:
        for i in range(3 * OUTPUT_BATCH):
            on_output(f"line {i}")
        return "the outcome"

    stream = _streamed(chatty)
    batches = []
    with pytest.raises(StopIteration) as end:
        while True:
            batches.append(next(stream))
    assert end.value.value == "the outcome"
    assert all(len(b) <= OUTPUT_BATCH for b in batches) and batches[-1][-1] == f"line {3 * OUTPUT_BATCH - 1}"

    def failing(on_output: Callable[[str], None], should_stop: Callable[[], bool]) -> str:
        raise FrozenFileError("train.py")

    with pytest.raises(FrozenFileError):
        list(_streamed(failing))


def test_make_backend_ray(cluster: LocalCluster, repo: Path) -> None:
    b = make_backend("ray", repo, repo / ".autoresearch", slots=2)
    assert b.name == "ray" and len(b.slots) == 2


def test_frozen_file_tamper_detected_remotely(backend: RayBackend, repo: Path) -> None:
    spec = spec_for(repo, "python train.py && echo '# changed' >> prepare.py", n=1)
    outcome = backend.run(spec, backend.slots[0])
    assert outcome.status == "tampered"
    assert "prepare.py" in outcome.failure[1]


def test_frozen_mismatch_raises_its_own_type(backend: RayBackend, repo: Path) -> None:
    spec = spec_for(repo, n=2)
    spec.frozen["prepare.py"] = "something else\n"
    with pytest.raises(FrozenFileError, match="prepare.py"):
        backend.run(spec, backend.slots[0])


def test_setup_once_per_node(backend: RayBackend, repo: Path, tmp_path: Path) -> None:
    count = tmp_path / "setup-count"
    for n in (3, 4):
        spec = spec_for(repo, n=n, setup=f"echo prepared >> {count}; echo setup-done")
        assert backend.run(spec, backend.slots[0]).status == "ok"
    assert count.read_text() == "prepared\n"
    logs = list((backend.state_dir / "logs" / "setup").glob("*.log"))
    assert logs and "setup-done" in logs[0].read_text()  # came back with the first run
    with pytest.raises(SetupError, match="setup command `echo no; exit 3` failed on "):
        backend.run(spec_for(repo, n=5, setup="echo no; exit 3"), backend.slots[0])


def test_setup_outputs_reach_a_node_that_does_not_have_them(backend: RayBackend, repo: Path, tmp_path: Path) -> None:
    # The setup's kept output and a named input, at coordinator paths: packed once into the object
    # store; a node without those paths (here: they are gone by the time the run starts, as on
    # another machine) unpacks the shipped copy and runs against it.
    store, given = tmp_path / "coordinator" / "store", tmp_path / "coordinator" / "input.txt"
    store.mkdir(parents=True)
    (store / "train.bin").write_text("tokens\n")
    given.write_text("the raw text\n")
    links = Links(outputs=(("data", str(store)),), inputs=(("input.txt", str(given)),))
    command = "cat data/train.bin input.txt && python train.py"
    assert backend.run(spec_for(repo, command, n=6, links=links), backend.slots[0]).status == "ok"  # the same paths
    shipped = backend._shipments[(str(store), str(given))]
    (tmp_path / "coordinator").rename(tmp_path / "elsewhere")
    outcome = backend.run(spec_for(repo, command, n=7, links=links), backend.slots[0])
    assert outcome.status == "ok", outcome.fields.get("log_tail")
    assert "tokens\nthe raw text" in (backend.state_dir / "logs" / "t/1.7.log").read_text()
    assert backend._shipments[(str(store), str(given))] is shipped  # packed once per research run
    unpacked = Path(os.environ["HOME"]) / ".cache/autoresearch/ray-shipped" / shipped[0]
    assert (unpacked / "0" / "train.bin").read_text() == "tokens\n" and (unpacked / ".done").exists()


def _wait_for_pid(pidfile: Path, timeout: float = 20.0) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pidfile.exists() and pidfile.read_text().strip():
            return int(pidfile.read_text())
        time.sleep(0.05)
    raise AssertionError("the run never started")


def _until(condition: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def _gone(pid: int, timeout: float) -> bool:
    return _until(lambda: not psutil.pid_exists(pid), timeout)


def _work_dirs(spec: RunSpec) -> list[Path]:
    return list(Path(tempfile.gettempdir()).glob(f"autoresearch-{spec.exp_id}-{spec.n}-*"))


def test_should_stop(backend: RayBackend, repo: Path, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    spec = spec_for(repo, f"echo $$ > {pidfile}; sleep 30; echo score: 1", n=6)
    t0 = time.time()
    outcome = backend.run(spec, backend.slots[0], should_stop=lambda: pidfile.exists())
    assert outcome.status == "stopped" and outcome.failure == ("interrupted", "stopped by the user")
    asked = pidfile.stat().st_mtime  # the stop request: a slow start on a busy cluster is not a slow stop
    assert time.time() - asked < 10, f"stopped {time.time() - asked:.1f} s after the request " \
                                     f"(the run started {asked - t0:.1f} s after it was sent)"
    assert Path(outcome.fields["log_path"]).exists()
    assert _gone(int(pidfile.read_text()), 5)  # the worker's run_command killed the run's tree


def test_worker_node_death_then_recovery(cluster: LocalCluster, backend: RayBackend, repo: Path,
                                         tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    spec = spec_for(repo, f"echo $$ > {pidfile}; sleep 30; echo score: 1", n=7)
    node = cluster.worker

    def kill_node() -> None:
        _wait_for_pid(pidfile)
        time.sleep(0.5)
        cluster.cluster.remove_node(node)

    killer = threading.Thread(target=kill_node, daemon=True)
    killer.start()
    t0 = time.monotonic()
    try:
        with pytest.raises(WorkerLost):
            backend.run(spec, backend.slots[0])
        lost_after = time.monotonic() - t0
        # The per-run watchdog kills the run's processes and removes its folder.
        assert _gone(int(pidfile.read_text()), 10), "the run outlived its worker"
        assert _until(lambda: not _work_dirs(spec)), "the run's folder outlived its worker"
    finally:
        killer.join(30)
        if pidfile.exists() and psutil.pid_exists(pid := int(pidfile.read_text())):  # if that failed
            os.killpg(pid, signal.SIGKILL)
    assert lost_after < 30

    cluster.add_worker()
    outcome = backend.run(spec_for(repo, n=8), backend.slots[0])
    assert outcome.status == "ok" and outcome.metric == pytest.approx(TOY_SCORE)


def test_gpu_slots_get_rays_gpu_assignment(cluster: LocalCluster, repo: Path) -> None:
    # Ray hands out declared GPUs whether or not the node has any: enough to check the plumbing.
    node = cluster.cluster.add_node(num_cpus=1, num_gpus=1)
    try:
        cluster.cluster.wait_for_nodes()
        b = RayBackend(repo, repo / ".autoresearch")
        assert [(s.name, s.cpus, s.gpus) for s in b.slots] == [("ray0", 1.0, 1.0)]
        spec = spec_for(repo, "echo devices=$CUDA_VISIBLE_DEVICES; python train.py", n=9)
        spec.env["CUDA_VISIBLE_DEVICES"] = "7"  # e.g. copied from the coordinator's environment
        outcome = b.run(spec, b.slots[0])
        assert outcome.status == "ok"
        assert "devices=0\n" in Path(outcome.fields["log_path"]).read_text()
    finally:
        cluster.cluster.remove_node(node)


def test_research_requeues_the_experiment_of_a_dead_node(cluster: LocalCluster, tmp_path: Path) -> None:
    """The coordinator loses a worker node mid-experiment: the run is recorded as lost, the
    experiment goes back to the queue and is decided on the replacement node."""
    from autoresearch.core.config import ParallelConfig
    from autoresearch.research.coordinator import Research
    from autoresearch.store.ledger import Ledger
    from tests.conftest import TOY_CONFIG
    from tests.scripted import ScriptedAgent, check_consistency, replace

    task = make_task(tmp_path / "toy", config=TOY_CONFIG + "\n[sandbox]\nenabled = false  # the run writes its pid\n")
    pidfile = tmp_path / "pid"
    slow = replace("score = ", f"import os, time; open({str(pidfile)!r}, 'a').write(f'{{os.getpid()}}\\n'); "
                               "time.sleep(3)\nscore = ")
    agent = ScriptedAgent([("slow: X=3", lambda f: {"train.py": slow(f)["train.py"].replace("X = 5.0", "X = 3.0")})])
    r = Research(load_config(task), agent, tag="t", backend=RayBackend(task, task / ".autoresearch"),
                 parallel=ParallelConfig(slots=1))
    r.open()
    runs: list[int] = []
    research = threading.Thread(target=lambda: runs.append(r.run()), daemon=True)  # Ray wants nodes
    research.start()  # added and removed from the main thread
    try:
        _wait_for_pid(pidfile)
        time.sleep(0.5)
        cluster.cluster.remove_node(cluster.worker)
        cluster.add_worker()
        research.join(90)
        assert runs == [2]  # the baseline and the slow experiment, run once more after the loss
    finally:
        r.stop_event.set()
        research.join(30)
        r.close()
    ledger = Ledger(task / ".autoresearch" / "ledger.db")
    exps = ledger.experiments("t")
    assert [(e.description, e.status) for e in exps] == [("baseline", "keep"), ("slow: X=3", "keep")]
    assert exps[1].info["lost"] == 1 and exps[1].metric == pytest.approx(1.9)
    # lost, then run again; the new best, kept on one run, is run once more ([judge] recheck)
    assert [(run.kind, run.status) for run in ledger.runs(exps[1].id)] == [("primary", "lost"), ("primary", "ok"),
                                                                           ("confirm", "ok")]
    check_consistency(task)


def test_a_doomed_candidate_is_pruned_on_a_worker_node(cluster: LocalCluster, tmp_path: Path) -> None:
    """Pruning runs on the lines the worker streams back, and a pruned run's tree dies on the worker."""
    from autoresearch.research.coordinator import Research
    from tests.conftest import step
    from tests.research.test_pruning import CURVE_CONFIG, CURVE_TRAIN, effect
    from tests.scripted import ScriptedAgent

    # 2 s: time enough for the lines of the first 30% (sent every 0.5 s) to arrive before the end
    task = make_task(tmp_path / "task", train=CURVE_TRAIN, config=CURVE_CONFIG.replace("seconds = 0.6", "seconds = 2"))
    r = Research(load_config(task), ScriptedAgent([("doomed", effect(3.0))]), tag="t",
                 backend=RayBackend(task, task / ".autoresearch"))
    r.open()
    try:
        assert step(r).status == "keep"
        doomed = step(r)
        [run] = r.ledger.runs(doomed.id)
    finally:
        r.close()
    assert doomed.status == "pruned" and doomed.reason.startswith("pruned at "), doomed.reason
    assert run.status == "pruned" and run.curve and run.wall_s < 2.0
