"""Screenshots of every dashboard view, from a real research run, into docs/dashboard/*.png.

Builds a demo task (a noisy toy objective over three constants, with a guard and a crash region),
runs the real research loop on it with the search agent for a few dozen experiments, queues two
ideas, then starts a second, slower run on two slots so the slots view has something running,
serves the dashboard on a free loopback port and photographs each view in Debian's Chromium; then
pauses that run from the page (paused.png: its running experiments finish, nothing new starts) and
photographs the progress chart of a synthetic 10,000-experiment ledger (progress-10k.png: thinned out).

    PYTHONPATH=src python docs/dashboard/screenshots.py [--experiments 40] [--out docs/dashboard]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

import uvicorn
from playwright.sync_api import sync_playwright

from autoresearch.agents import make_agent
from autoresearch.apps.dashboard.app import create_app
from autoresearch.apps.dashboard.commands import listen
from autoresearch.apps.dashboard.data import Task
from autoresearch.core.config import ParallelConfig, load_config
from autoresearch.research.coordinator import Research
from autoresearch.research.scheduler import Limits
from autoresearch.store.ledger import Ledger

# The benchmark's 10,000-experiment ledger, for progress-10k.png.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from dashboard import big_ledger, trivial_task

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SLOW_BUDGET_S = 30  # the second run's budget: long enough to photograph its progress bars
VIEWS = ("progress", "table", "exp", "slots", "ideas", "notebook", "params")

TRAIN = textwrap.dedent('''\
    """A demo objective: noisy, with a crash region (LR too high) and a guarded cost (WIDTH too wide)."""
    import os
    import random
    import time

    X = 5.0
    WIDTH = 3
    LR = 0.1

    time.sleep(max(0.05, float(os.environ.get("AUTORESEARCH_TIME_BUDGET", "1")) - 0.6))
    if LR > 0.35:
        raise SystemExit("loss is nan: diverged (LR too high)")
    score = (X - 2.0) ** 2 + 0.1 * (WIDTH - 6) ** 2 + 40 * (LR - 0.03) ** 2 + random.gauss(0, 0.02)
    print(f"score: {score:.6f}")
    print(f"width_cost: {WIDTH ** 2}")
''')
CONFIG = textwrap.dedent('''\
    [task]
    name = "demo"
    editable = ["train.py"]
    run = "python train.py"

    [budget]
    seconds = 0.7
    timeout = 60

    [metric]
    name = "score"
    direction = "minimize"

    [guards]
    width_cost = { max = 64 }

    [search]
    X = { low = -5.0, high = 10.0 }
    WIDTH = { low = 1, high = 12 }
    LR = { low = 0.001, high = 0.5, log = true }
''')
PROGRAM = "# Demo research\n\nMinimise `score` by changing the constants of train.py. Keep it simple.\n"


def build_demo(root: Path, experiments: int) -> None:
    root.mkdir(parents=True)
    (root / "train.py").write_text(TRAIN)
    (root / "autoresearch.toml").write_text(CONFIG)
    (root / "program.md").write_text(PROGRAM)
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True)
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True)
    subprocess.run(["git", "-C", str(root), "-c", "user.name=demo", "-c", "user.email=demo@example.invalid", "commit",
                    "-qm", "demo task"], check=True)
    ledger = Ledger(root / ".autoresearch" / "ledger.db")
    ledger.add_idea("LR=0.03")
    ledger.add_idea("WIDTH=6")
    ledger.close()
    config = load_config(root)
    research = Research(config, [make_agent("search", config, seed=1), make_agent("random", config, seed=2)],
                        tag="demo", parallel=ParallelConfig(slots=2, ahead=1))
    research.open()
    try:
        research.run(Limits(max_experiments=experiments))
    finally:
        research.close()


def slow_run(root: Path) -> tuple[threading.Thread, Research]:
    """A second invocation with a longer budget, so slots are busy while the photos are taken."""
    config = load_config(root)
    research = Research(config, make_agent("search", config, seed=3), tag="demo",
                        parallel=ParallelConfig(slots=2, ahead=1))
    research.open()

    def go() -> None:
        try:
            research.run(Limits(max_experiments=4))
        finally:
            research.close()

    thread = threading.Thread(target=go, daemon=True)
    thread.start()
    return thread, research


def serve(task: Path) -> tuple[str, str, uvicorn.Server]:
    sock = listen("127.0.0.1", 0)
    app = create_app([Task.open(task)])
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
    threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True).start()
    while not server.started:
        time.sleep(0.05)
    return f"http://127.0.0.1:{sock.getsockname()[1]}/", app.state.token, server


def photograph(url: str, token: str, out: Path, exp_id: int) -> None:
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900}, device_scale_factor=1)
        page.goto(f"{url}#token={token}")
        for view in VIEWS:
            page.goto(f"{url}#{f'exp/{exp_id}' if view == 'exp' else view}")
            page.wait_for_load_state("networkidle")
            time.sleep(1.0)  # plotly's transitions and the slots' bars settle
            shot(page, out / f"{view}.png", full_page=view in ("exp", "table"))
        page.goto(f"{url}#slots")
        page.click("#pause-toggle")  # the running experiments go on; nothing new starts
        page.wait_for_selector("#control[data-paused=yes]")
        time.sleep(1.0)
        shot(page, out / "paused.png")
        page.click("#pause-toggle")
        page.wait_for_selector("#control[data-paused=no]")
        browser.close()


def photograph_large(out: Path, tmp: Path) -> None:
    root = trivial_task(tmp / "large")
    big_ledger(root, 10_000)
    url, _, server = serve(root)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900}, device_scale_factor=1)
        page.goto(f"{url}#progress")
        page.wait_for_function("() => document.querySelector('#progress-chart')?.dataset.points")
        time.sleep(1.0)
        shot(page, out / "progress-10k.png")
        browser.close()
    server.should_exit = True


def shot(page, path: Path, full_page: bool = False) -> None:
    page.screenshot(path=str(path), full_page=full_page)
    print(f"wrote {path}")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--experiments", type=int, default=40)
    ap.add_argument("--out", default=str(Path(__file__).parent))
    args = ap.parse_args()
    out = Path(args.out)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "demo"
        build_demo(root, args.experiments)
        kept = Ledger(root / ".autoresearch" / "ledger.db").kept("demo")
        (root / "autoresearch.toml").write_text(CONFIG.replace("seconds = 0.7", f"seconds = {SLOW_BUDGET_S}"))
        url, token, server = serve(root)
        thread, research = slow_run(root)
        time.sleep(4)  # both slots take an experiment
        try:
            photograph(url, token, out, kept[-1].id)
        finally:
            research.stop_event.set()
            thread.join(timeout=60)
            server.should_exit = True
        photograph_large(out, Path(tmp))


if __name__ == "__main__":
    main()
