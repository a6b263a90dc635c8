"""The dashboard at scale, and what it costs the research loop.

1. A ledger of 10,000 experiments (written through the Ledger API, with their runs and ideas):
   the time of the page and of each API call (median of repeats), and, when Debian's Chromium is
   installed, the time until the progress chart of all 10,000 is drawn in the browser, with SVG
   markers (the chart before), with WebGL, and thinned out by the server (now), side by side.
2. The loop's harness overhead per experiment (benchmarks/harness_overhead.py's measure: wall
   time minus the experiments' processes minus the agent's thinking) without and with a dashboard
   serving the same task while a client follows its event stream and re-fetches every change, as
   a browser does; rounds alternate so that machine load falls on both alike.

    PYTHONPATH=src python benchmarks/dashboard.py [--experiments 10000] [--loop 60] [--rounds 3] [--chart-rounds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import psutil

from autoresearch.agents import make_agent
from autoresearch.core.config import load_config
from autoresearch.repo.gitops import init_repo
from autoresearch.research.coordinator import Research
from autoresearch.research.scheduler import Limits
from autoresearch.store.ledger import Ledger

sys.path.insert(0, str(Path(__file__).parent))
from harness_overhead import CONFIG, TRAIN, TimedAgent  # the same trivial task

REPEATS = 5
CHROMIUM = Path("/usr/bin/chromium")
# Its WebGL with these is SwiftShader's (software), what a headless browser or a machine without a GPU has.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ENDPOINTS = ("", "api/tasks", "api/0/big/summary", "api/0/big/experiments", "api/0/big/chart",
             "api/0/big/chart?x0=4000&x1=5000", "api/0/experiment/1000",
             "api/0/big/slots", "api/0/big/notebook", "api/0/big/params", "api/0/ideas")


def trivial_task(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "train.py").write_text(TRAIN)
    (root / "autoresearch.toml").write_text(CONFIG)
    init_repo(root)
    return root


def big_ledger(root: Path, n: int) -> float:
    """n finished experiments of tag `big` with a run each (a tenth with three), through the Ledger API."""
    rng = random.Random(0)
    ledger = Ledger(root / ".autoresearch" / "ledger.db")
    ledger.db.execute("PRAGMA synchronous=OFF")  # building the fixture only: fsyncs would make it take minutes
    t0 = time.perf_counter()
    best = 10.0
    for i in range(n):
        x, width = rng.uniform(-5, 10), rng.randint(1, 12)
        exp = ledger.start_experiment(tag="big", parent_commit="0" * 40, agent=rng.choice(("search", "random")),
                                      description=f"search: X={x:.3f}, WIDTH={width}", params={"X": x, "WIDTH": width},
                                      info={"trial": i})
        metric = (x - 2) ** 2 + 0.1 * (width - 6) ** 2 + rng.gauss(0, 0.05)
        status = "crash" if rng.random() < 0.03 else "keep" if metric < best else "discard"
        start = time.time()
        for kind in ("primary", "confirm", "confirm") if rng.random() < 0.1 else ("primary",):
            ledger.add_run(exp, kind, "ok" if status != "crash" else "crash", None if status == "crash" else metric,
                           {"score": metric}, wall_s=1.0, slot=f"cpu{i % 2}", started_at=start)
        if status == "keep":
            best = metric
        ledger.finish(exp, status, metric=None if status == "crash" else metric, wall_s=1.0,
                      reason=f"{status}: {metric - best:+.4g} (1 run)", log_tail=f"score: {metric:.6f}\n" * 3)
    for i in range(50):
        ledger.add_idea(f"X={i / 10}")
    ledger.close()
    return time.perf_counter() - t0


def api_times(url: str) -> dict[str, tuple[float, float, int]]:
    """Per endpoint: the first call's seconds (what a change of the ledger costs: views are computed
    once per change), the median of the REPEATS after it, and the bytes."""
    out = {}
    with httpx.Client(timeout=60) as client:
        for path in ENDPOINTS:
            times, size = [], 0
            for _ in range(REPEATS + 1):
                t = time.perf_counter()
                r = client.get(url + path)
                times.append(time.perf_counter() - t)
                assert r.status_code == 200, (path, r.status_code)
                size = len(r.content)
            out[path or "/ (page)"] = (times[0], statistics.median(times[1:]), size)
    return out


# The chart as it drew before issue 15's change (every point an SVG marker), every point with
# WebGL (`?thin=0`: scattergl for a series of 5,000 or more), and as it draws now: thinned out by
# the server (data.py chart), in SVG.
CHART_MODES = {"every point, svg (before)": "?chart=svg&thin=0", "every point, webgl": "?chart=webgl&thin=0",
               "thinned out, svg (now)": ""}


PAINTED = "() => new Promise((done) => requestAnimationFrame(() => requestAnimationFrame(done)))"


def browser_chart_times(url: str, rounds: int) -> tuple[dict[str, list[float]], dict[str, list[float]]] | None:
    """Seconds from reloading the page to the progress chart drawn (plotly's promise resolved, then
    two frames painted), and of drawing it again as the page does on every change of the ledger
    (its points fetched, drawn, painted), in Debian's Chromium, for each of CHART_MODES in turn,
    `rounds` times. Each mode is loaded once first, so plotly.min.js comes from the cache as on a
    second visit. None without Chromium, or when its WebGL does not work."""
    if not CHROMIUM.exists():
        return None
    from playwright.sync_api import sync_playwright

    drawn = "() => document.querySelector('#progress-chart')?.dataset.points"
    times: dict[str, list[float]] = {mode: [] for mode in CHART_MODES}
    redraws: dict[str, list[float]] = {mode: [] for mode in CHART_MODES}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1300, "height": 900})
        for query in CHART_MODES.values():
            page.goto(f"{url}{query}#progress")
            page.wait_for_function(drawn, timeout=300000)
            if query == "?chart=webgl&thin=0" and page.evaluate(
                    "() => document.querySelector('#progress-chart').dataset.render") != "webgl":
                browser.close()
                return None  # asked for WebGL, drew SVG: this browser has none
        for _ in range(rounds):
            for mode, query in CHART_MODES.items():
                page.goto(f"{url}{query}#progress")
                page.wait_for_function(drawn, timeout=300000)
                t = time.perf_counter()
                page.reload()
                page.wait_for_function(drawn, timeout=300000)
                page.evaluate(PAINTED)
                times[mode].append(time.perf_counter() - t)
                redraws[mode].append(page.evaluate(f"""async () => {{ const t = performance.now();
                    await drawProgress(document.querySelector('#progress-chart'), state.summary);
                    await ({PAINTED})(); return (performance.now() - t) / 1000; }}"""))
        shown = page.evaluate("() => document.querySelector('#progress-chart').dataset.shown")
        browser.close()
    print(f"  (thinned out: {shown} points drawn)")
    return times, redraws


def start_dashboard(task: Path, cpus: set[int] | None = None) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, "-m", "autoresearch", "dashboard", str(task), "--port", "0", "--json"],
                            stdout=subprocess.PIPE, text=True)
    pin(proc, cpus)
    return proc, json.loads(proc.stdout.readline())["url"]


def follow(url: str) -> None:
    """The client mode (another process): what an open page of the experiment table does, i.e. follow the
    event stream and re-fetch the summary and the experiments on every change."""
    with httpx.Client(timeout=None) as client, client.stream("GET", url + "api/events") as stream:
        tag = None
        for line in stream.iter_lines():
            if tag is None:
                tag = client.get(url + "api/tasks").json()[0]["default_tag"]
            if tag and line.startswith("event: "):
                client.get(f"{url}api/0/{tag}/summary")
                client.get(f"{url}api/0/{tag}/experiments")


def pin(proc: subprocess.Popen, cpus: set[int] | None) -> None:
    if cpus:
        os.sched_setaffinity(proc.pid, cpus)


def loop_overhead(n: int, watched: bool, apart: bool) -> tuple[float, float]:
    """Harness overhead per experiment (s) of n experiments of the trivial task, and the CPU seconds the
    dashboard and its client used per experiment. apart: the loop (and its experiments) on the first CPU,
    the dashboard and its client on the others."""
    everything = os.sched_getaffinity(0)
    loop_cpus = {min(everything)} if apart else everything
    others = (everything - loop_cpus) if apart else None
    with tempfile.TemporaryDirectory() as tmp:
        root = trivial_task(Path(tmp) / "trivial")
        procs = []
        os.sched_setaffinity(0, loop_cpus)
        if watched:
            server, url = start_dashboard(root, others)
            client = subprocess.Popen([sys.executable, __file__, "--follow", url])
            pin(client, others)
            procs = [client, server]
            time.sleep(1.0)  # the client is connected before the loop starts
        try:
            config = load_config(root)
            agent = TimedAgent(make_agent("random", config, seed=0))
            research = Research(config, agent, tag="bench")
            research.open()
            t0 = time.perf_counter()
            research.run(Limits(max_experiments=n))
            wall = time.perf_counter() - t0
            exps = research.ledger.experiments("bench")
            research.close()
        finally:
            os.sched_setaffinity(0, everything)
            cpu = sum(sum(psutil.Process(p.pid).cpu_times()[:2]) for p in procs)
            for p in procs:
                p.terminate()
                p.wait(timeout=10)
    in_process = sum(e.wall_s or 0.0 for e in exps)
    return (wall - in_process - agent.seconds) / max(len(exps), 1), cpu / max(len(exps), 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--experiments", type=int, default=10_000)
    ap.add_argument("--loop", type=int, default=60, help="experiments per loop-overhead round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--chart-rounds", type=int, default=3, help="reloads of the chart per drawing mode")
    ap.add_argument("--no-loop", action="store_true", help="skip the loop-overhead rounds")
    ap.add_argument("--follow", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.follow:
        return follow(args.follow)

    with tempfile.TemporaryDirectory() as tmp:
        root = trivial_task(Path(tmp) / "big")
        built = big_ledger(root, args.experiments)
        print(f"ledger: {args.experiments} experiments written through the Ledger API in {built:.1f} s")
        server, url = start_dashboard(root)
        try:
            print(f"{'endpoint':34} {'first ms':>9} {'then ms':>9} {'KB':>8}")
            for path, (first, then, size) in api_times(url).items():
                print(f"{path:34} {first * 1000:9.1f} {then * 1000:9.1f} {size / 1024:8.0f}")
            charts = browser_chart_times(url, args.chart_rounds)
            if charts is not None:
                for what, measured in zip(("page reload to the chart drawn", "redraw on a change"), charts):
                    before = statistics.median(measured["every point, svg (before)"])
                    print(f"browser, {args.experiments} experiments, {what}, {args.chart_rounds} rounds of each in "
                          "turn (seconds; before / this):")
                    for mode, values in measured.items():
                        print(f"  {mode:28} {' '.join(f'{v:6.2f}' for v in values)}  median "
                              f"{statistics.median(values):5.2f}  {before / statistics.median(values):5.1f}x")
        finally:
            server.terminate()
            server.wait(timeout=10)

    if args.no_loop:
        return
    apart_possible = len(os.sched_getaffinity(0)) > 1
    for apart in (False, True) if apart_possible else (False,):
        plain, watched, cpu = [], [], []
        for _ in range(args.rounds):
            plain.append(loop_overhead(args.loop, watched=False, apart=apart)[0])
            overhead, dashboard_cpu = loop_overhead(args.loop, watched=True, apart=apart)
            watched.append(overhead)
            cpu.append(dashboard_cpu)
        where = "the loop on CPU 0, the dashboard and its client on the others" if apart else "all on every CPU"
        print(f"loop overhead per experiment, {args.rounds} alternating rounds of {args.loop} experiments ({where}):")
        print(f"  without a dashboard:  {' '.join(f'{v * 1000:6.1f}' for v in plain)} ms  "
              f"(median {statistics.median(plain) * 1000:.1f})")
        print(f"  with a dashboard:     {' '.join(f'{v * 1000:6.1f}' for v in watched)} ms  "
              f"(median {statistics.median(watched) * 1000:.1f})")
        print(f"  ratio with/without:   {statistics.median(watched) / statistics.median(plain):.2f}")
        print(f"  CPU of the dashboard and its client: {statistics.median(cpu) * 1000:.1f} ms per experiment")


if __name__ == "__main__":
    main()
