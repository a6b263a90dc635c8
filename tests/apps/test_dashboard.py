"""The dashboard: its API over a real research run (httpx against the real server on loopback),
then its pages in Debian's Chromium (Playwright): every view without console errors, a result of
a running loop on the page within a second without a reload, ideas added only with the token."""
from __future__ import annotations

import http.client
import json
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
import uvicorn

from autoresearch.apps.dashboard import commands
from autoresearch.apps.dashboard.app import TOKEN_HEADER, create_app
from autoresearch.apps.dashboard.data import Task, chart, kind, spearman
from autoresearch.store.ledger import Ledger
from tests import toy_research
from tests.scripted import replace

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
LIVE_S = 1.0  # the bound: a finished experiment is on the page this soon
VIEWS = {"progress": "#progress-chart .main-svg", "table": "#exp-table tbody tr", "exp/3": "#experiment .diff",
         "slots": "text=Running now", "ideas": "#idea-form", "notebook": "#accounting", "params": "#param-parallel svg"}


class Served:
    """The real dashboard app under uvicorn on a free loopback port, in a thread of this process."""

    def __init__(self, tasks: list[Task]):
        self.sock = commands.listen("127.0.0.1", 0)
        self.app = create_app(tasks)
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level="warning"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            assert time.time() < deadline, "the dashboard did not start"
            time.sleep(0.02)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}/"
        self.token = self.app.state.token

    def close(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=10)


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    return toy_research.build(tmp_path_factory.mktemp("dash") / "toy")


@pytest.fixture(scope="module")
def served(task: Path):
    s = Served([Task.open(task)])
    yield s
    s.close()


def ledger(task: Path) -> Ledger:
    return Ledger(task / ".autoresearch" / "ledger.db")


# -- the API -------------------------------------------------------------------------------------

def test_api_shows_every_experiment_with_its_kind(task: Path, served: Served):
    exps = httpx.get(f"{served.url}api/0/t/experiments").json()
    assert [e["status"] for e in exps] == toy_research.STATUSES
    assert [e["kind"] for e in exps] == ["keep", "discard", "keep", "guard", "crash", "rejected", "keep"]
    assert [e["id"] for e in exps] == [e.id for e in ledger(task).experiments("t")]
    summary = httpx.get(f"{served.url}api/0/t/summary").json()
    assert summary["counts"] == {"keep": 3, "discard": 2, "crash": 1, "rejected": 1}
    assert summary["baseline"]["metric"] == pytest.approx(9.9) and summary["best"]["metric"] == pytest.approx(0.25)
    tasks = httpx.get(f"{served.url}api/tasks").json()
    assert tasks[0]["tags"] == ["t"] and tasks[0]["metric"] == "score" and tasks[0]["direction"] == "minimize"


def test_experiment_api_has_the_diff_runs_and_decision(served: Served):
    e = httpx.get(f"{served.url}api/0/experiment/3").json()
    assert e["description"] == "better: X=2.5" and e["reason"].startswith("keep: ")
    assert "-X = 5.0" in e["diff"] and "+X = 2.5" in e["diff"]
    # its primary run, and the re-runs beside later candidates (the judge's drift check)
    assert e["runs"] and all(r["status"] == "ok" for r in e["runs"])
    assert e["metric"] == pytest.approx(sum(r["metric"] for r in e["runs"]) / len(e["runs"]))
    assert "score: " in e["log_tail"]
    assert httpx.get(f"{served.url}api/0/experiment/999").status_code == 404
    assert httpx.get(f"{served.url}api/7/t/summary").status_code == 404


def test_views_data(served: Served):
    slots = httpx.get(f"{served.url}api/0/t/slots").json()
    assert slots["running"] == [] and slots["queue"] == [] and slots["budget_s"] == 5.0
    assert 0 < slots["busy"][0]["busy_fraction"] <= 1 and slots["busy"][0]["runs"] >= 6
    notebook = httpx.get(f"{served.url}api/0/t/notebook").json()
    assert notebook["program"] == "Minimise score by editing train.py.\n"
    acc = notebook["accounting"]
    assert acc["kept_improvements"] == 2 and acc["runs"] >= 6 and acc["device_hours"] > 0 and acc["cost_usd"] is None
    assert notebook["checks"] == []  # none run on this task (tests/research/test_checks.py makes some)
    params = httpx.get(f"{served.url}api/0/t/params").json()
    assert params["names"] == ["WIDTH", "X"] and len(params["trials"]) >= 5
    assert all(0 <= v <= 1 for v in params["importance"].values() if v is not None)
    ideas = httpx.get(f"{served.url}api/0/ideas").json()
    assert any(i["text"] == "X=2.5" for i in ideas)


def test_reads_never_write_the_ledger(task: Path, served: Served):
    db = task / ".autoresearch" / "ledger.db"
    files = [db, db.with_name("ledger.db-wal")]
    before = [f.read_bytes() if f.exists() else b"" for f in files]
    for path in ("api/tasks", "api/0/t/summary", "api/0/t/experiments", "api/0/experiment/2", "api/0/t/slots",
                 "api/0/t/notebook", "api/0/t/params", "api/0/ideas", "api/0/t/chart", "api/0/t/chart?x0=1&x1=3", ""):
        assert httpx.get(served.url + path).status_code == 200, path
    assert [f.read_bytes() if f.exists() else b"" for f in files] == before


def test_adding_an_idea_needs_the_token(task: Path, served: Served):
    url = f"{served.url}api/0/ideas"
    assert httpx.post(url, json={"text": "no token"}).status_code == 403
    refused = httpx.post(url, json={"text": "wrong token"}, headers={TOKEN_HEADER: "guess"})
    assert refused.status_code == 403 and "token" in refused.json()["detail"]
    assert httpx.post(url, json={"text": "  "}, headers={TOKEN_HEADER: served.token}).status_code == 422
    added = httpx.post(url, json={"text": "WIDTH=7"}, headers={TOKEN_HEADER: served.token})
    assert added.status_code == 201
    ideas = {i.text: i for i in ledger(task).ideas()}
    assert ideas["WIDTH=7"].id == added.json()["id"] and ideas["WIDTH=7"].source == "dashboard"
    assert "no token" not in ideas and "wrong token" not in ideas


def test_event_stream_reports_a_change_of_the_ledger(task: Path, served: Served):
    with httpx.stream("GET", f"{served.url}api/events", timeout=10) as stream:
        lines = stream.iter_lines()
        assert next(lines) == "retry: 1000" and next(lines) == "event: hello"
        next(lines), next(lines)  # its data, the blank line
        t0 = time.time()
        ledger(task).add_idea("a change another process makes")
        assert next(lines) == "event: change"
        assert json.loads(next(lines).removeprefix("data: "))["tasks"] == [0]
        assert time.time() - t0 < LIVE_S


def test_unknown_and_new_statuses_are_shown_not_dropped(tmp_path: Path):
    task = toy_research.make_task(tmp_path / "statuses")
    db = task / ".autoresearch" / "ledger.db"
    Ledger(db).close()
    conn = sqlite3.connect(db)  # statuses this version's Ledger refuses to write, as a newer one would
    for status in ("pruned", "someday"):
        conn.execute("INSERT INTO experiments (tag, parent_commit, agent, description, status, created_at, "
                     "finished_at, metric) VALUES ('n', 'abc', 'x', ?, ?, 1, 2, 1.5)", (status, status))
    conn.commit()
    conn.close()
    assert [e["kind"] for e in Task.open(task).experiments("n")] == ["pruned", "other"]


def test_a_ledger_older_than_pausing_is_not_paused(tmp_path: Path):
    task = toy_research.make_task(tmp_path / "old")
    db = task / ".autoresearch" / "ledger.db"
    ledger = Ledger(db)
    ledger.start_experiment(tag="o", parent_commit="abc", agent="x", description="d")
    ledger.close()
    conn = sqlite3.connect(db)  # as a version before pausing wrote it (and the dashboard may not add tables)
    conn.execute("DROP TABLE pauses")
    conn.commit()
    conn.close()
    old = Task.open(task)
    assert old.pauses("o") == [] and old.summary("o")["paused"] is None


def test_a_task_without_research_yet_is_empty_not_an_error(tmp_path: Path):
    fresh = Task.open(toy_research.make_task(tmp_path / "fresh"))
    assert fresh.tags() == [] and fresh.default_tag() is None and fresh.ideas() == []
    assert not fresh.db_path.exists()  # looking created nothing


def test_kind_tells_rule_refusals_from_worse_results():
    assert kind("discard", "discard: guard width=12 above max 10") == "guard"
    assert kind("discard", "discard: over budget: ran 9.0s, limit 6.0s") == "guard"
    assert kind("discard", "discard: +0.5 (1 run; not better)") == "discard"
    assert kind("keep", "keep: -1") == "keep" and kind("pruned", "") == "pruned" and kind("new", "") == "other"


def test_spearman():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 45]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3], [5, 5, 5]) is None and spearman([1, 2], [1, 2]) is None
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(0.9487, abs=1e-4)


def test_exposure_beyond_loopback_is_warned():
    assert commands.exposure_warning("127.0.0.1") is None and commands.exposure_warning("::1") is None
    assert "beyond loopback" in commands.exposure_warning("0.0.0.0")


def test_kept_alive_connections_answer_at_once(served: Served):
    """Browsers reuse connections: a request on one must not wait for a delayed ACK (~40 ms each)."""
    conn = http.client.HTTPConnection("127.0.0.1", served.sock.getsockname()[1], timeout=10)
    times = []
    for _ in range(9):
        t = time.perf_counter()
        conn.request("GET", "/api/tasks")
        assert conn.getresponse().read()
        times.append(time.perf_counter() - t)
    conn.close()
    assert statistics.median(times[1:]) < 0.03, times


def test_dashboard_command_serves_and_prints_its_token(task: Path):
    proc = subprocess.Popen([sys.executable, "-m", "autoresearch", "dashboard", str(task), "--port", "0", "--json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        started = json.loads(proc.stdout.readline())
        assert started["url"].startswith("http://127.0.0.1:") and len(started["token"]) >= 20
        assert httpx.get(started["url"] + "api/tasks", timeout=10).json()[0]["root"] == str(task)
        taken = started["url"].rsplit(":", 1)[1].rstrip("/")
        again = subprocess.run([sys.executable, "-m", "autoresearch", "dashboard", str(task), "--port", taken],
                               capture_output=True, text=True, timeout=60, check=False)
        assert again.returncode != 0 and "Address already in use" in again.stderr and "--port" in again.stderr
    finally:
        proc.terminate()
        proc.wait(timeout=10)


# -- the pages in a real browser -----------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip("Debian's chromium is not installed at /usr/bin/chromium (apt-get install chromium)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield b
        b.close()


def open_page(browser, url: str):
    page = browser.new_page(viewport={"width": 1300, "height": 900})
    errors: list[str] = []
    page.on("console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: errors.append(f"request failed: {r.url}") if "/api/events" not in r.url
            else None)
    page.goto(url)
    return page, errors


def test_every_view_loads_without_console_errors(browser, served: Served):
    page, errors = open_page(browser, served.url)
    for view, selector in VIEWS.items():
        page.goto(f"{served.url}#{view}")
        page.wait_for_selector(selector, timeout=15000)
        assert not errors, (view, errors)
    page.goto(f"{served.url}#progress")
    page.wait_for_selector("#progress-chart .main-svg")
    points = page.wait_for_function("() => document.querySelector('#progress-chart').dataset.points").json_value()
    assert points == "6"  # baseline, worse, better, too wide, crash, better again: the rejected one never ran
    legend = page.locator("#progress-chart .legendtext").all_text_contents()
    assert legend == ["kept (3)", "discarded (1)", "guard / budget rejected (1)", "crashed (1)", "best so far"]
    page.close()


def test_a_result_of_a_running_loop_appears_without_a_reload(browser, task: Path, served: Served):
    page, errors = open_page(browser, f"{served.url}#table")
    page.wait_for_selector("#exp-table tbody tr")
    page.evaluate("() => { window.notReloaded = true; }")
    loop = threading.Thread(target=toy_research.more, args=(task, [("best: X=2", replace("X = 2.5", "X = 2.0"))]))
    loop.start()
    try:
        row = page.wait_for_selector('#exp-table tr[data-status="keep"] >> text="best: X=2"', timeout=30000)
    finally:
        loop.join(timeout=60)
    new = ledger(task).experiments("t")[-1]
    assert new.description == "best: X=2" and new.status == "keep"
    seen_ms = page.evaluate(f"() => state.firstSeen.get('{new.id}:keep')")
    assert seen_ms / 1000 - new.finished_at < LIVE_S, f"shown {seen_ms / 1000 - new.finished_at:.2f}s after it finished"
    assert row.is_visible() and page.evaluate("() => window.notReloaded") is True
    assert page.locator("#exp-count").inner_text() == str(len(ledger(task).experiments("t")))
    assert not errors, errors
    page.close()


def test_an_idea_added_from_the_page_lands_in_the_ledger_only_with_the_token(browser, task: Path, served: Served):
    page, errors = open_page(browser, f"{served.url}#ideas")
    page.fill("#idea-text", "LEARNING_RATE=0.02 from a page without the token")
    page.click("#idea-form button")
    assert "token" in page.wait_for_selector("#idea-result .notice.err").inner_text()
    page.close()
    page, errors = open_page(browser, f"{served.url}#token={served.token}&ideas")
    page.goto(f"{served.url}#ideas")
    page.fill("#idea-text", "LEARNING_RATE=0.02")
    page.click("#idea-form button")
    page.wait_for_selector("#idea-result .notice.ok")
    texts = [i.text for i in ledger(task).ideas()]
    assert "LEARNING_RATE=0.02" in texts and not any("without the token" in t for t in texts)
    assert page.locator("#ideas >> text=LEARNING_RATE=0.02").count() == 1
    errors = [e for e in errors if "403" not in e]  # the refused POST of the first page is expected
    assert not errors, errors
    page.close()


def slow(name: str):
    """A step whose runs take a while (the same score as the best: a discard), so one is running when we look."""
    return name, replace("score = ", f"import time; time.sleep(1.5)  # {name}\nscore = ")


def test_pause_and_resume_need_the_token(task: Path, served: Served):
    for action in ("pause", "resume"):
        assert httpx.post(f"{served.url}api/0/t/{action}").status_code == 403
        assert httpx.post(f"{served.url}api/0/t/{action}", headers={TOKEN_HEADER: "guess"}).status_code == 403
    assert httpx.post(f"{served.url}api/0/nope/pause", headers={TOKEN_HEADER: served.token}).status_code == 404
    assert ledger(task).paused("t") is None
    paused = httpx.post(f"{served.url}api/0/t/pause", headers={TOKEN_HEADER: served.token}).json()
    assert paused["paused"] and paused["pause"]["source"] == "dashboard" and ledger(task).paused("t") is not None
    summary = (lambda: httpx.get(f"{served.url}api/0/t/summary").json())  # views follow the ledger within POLL_S
    wait(lambda: (summary()["paused"] or {}).get("id") == paused["pause"]["id"], timeout_s=LIVE_S)
    resumed = httpx.post(f"{served.url}api/0/t/resume", headers={TOKEN_HEADER: served.token}).json()
    assert resumed["pause"]["ended_at"] is not None and ledger(task).paused("t") is None
    wait(lambda: summary()["paused"] is None, timeout_s=LIVE_S)


def test_pause_and_resume_a_running_loop_from_the_page(browser, task: Path, served: Served):
    page, errors = open_page(browser, f"{served.url}#table")
    page.click("#pause-toggle")  # without the token: refused, and said so
    assert "token" in page.wait_for_selector("#pause-result .notice.err").inner_text()
    assert ledger(task).paused("t") is None
    page.close()
    page, errors = open_page(browser, f"{served.url}#token={served.token}&slots")
    page.wait_for_selector("#control[data-paused=no]")
    steps = [slow(f"slow {i}") for i in range(4)]
    loop = threading.Thread(target=toy_research.more, args=(task, steps))
    loop.start()
    try:
        wait(lambda: ledger(task).experiments("t", ("running",)))
        first = ledger(task).experiments("t", ("running",))[0]
        page.click("#pause-toggle")
        page.wait_for_selector("#control[data-paused=yes] >> text=paused", timeout=5000)
        assert ledger(task).paused("t").source == "dashboard"
        wait(lambda: ledger(task).get(first.id).status not in ("queued", "running"))  # it finishes, judged
        assert ledger(task).get(first.id).reason.startswith(("keep", "discard"))
        started = {e.id for e in ledger(task).experiments("t") if e.status != "queued"}
        time.sleep(2.5)  # longer than a run: nothing new started meanwhile
        assert {e.id for e in ledger(task).experiments("t") if e.status != "queued"} == started
        assert not ledger(task).experiments("t", ("running",))
        page.click("#pause-toggle")
        page.wait_for_selector("#control[data-paused=no]", timeout=5000)
        wait(lambda: {e.id for e in ledger(task).experiments("t") if e.status != "queued"} > started)
    finally:
        ledger(task).resume("t")  # whatever happened, the loop must be able to end
        loop.join(timeout=120)
    descriptions = [e.description for e in ledger(task).experiments("t")]
    assert all(f"slow {i}" in descriptions for i in range(4))
    # A pause made elsewhere (the CLI, another process) shows on the open page without a reload.
    ledger(task).pause("t", source="cli")
    page.wait_for_selector("#control[data-paused=yes] >> text=cli", timeout=int(LIVE_S * 1000) + 1000)
    ledger(task).resume("t")
    page.wait_for_selector("#control[data-paused=no]", timeout=5000)
    assert not errors, errors
    page.close()


def wait(condition, timeout_s: float = 30.0) -> None:
    deadline = time.time() + timeout_s
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.05)


# -- the progress chart of a large run -------------------------------------------------------------

def rows(n: int, seed: int = 0) -> list[dict]:
    """n `experiments()` rows of a run: mostly discards, a keep at each new best, some crashes without a metric."""
    import random

    rng, best, out = random.Random(seed), 10.0, []
    for i in range(1, n + 1):
        metric = rng.uniform(0, 10)
        status = "crash" if rng.random() < 0.03 else "keep" if metric < best else "discard"
        best = metric if status == "keep" else best
        out.append({"id": i, "status": status, "kind": status, "metric": None if status == "crash" else metric,
                    "finished_at": 1000.0 + i, "description": f"try {i}", "reason": f"{status}: x"})
    out.append({"id": n + 1, "status": "running", "kind": "running", "metric": None, "finished_at": None,
                "description": "now", "reason": ""})
    return out


def test_a_small_chart_has_every_point():
    exps = rows(200)
    got = chart(exps)
    assert not got["decimated"] and got["total"] == got["in_view"] == 200 and len(got["points"]) == 200
    assert sum(got["counts"].values()) == 200 and got["last_x"] == 200  # the running one is not charted


def test_a_large_chart_keeps_every_kept_point_and_each_bins_extremes():
    exps = rows(10_000)
    charted = [e for e in exps if e["finished_at"]]
    for axis in ("number", "time"):
        got = chart(exps, axis)
        ids = {p["id"] for p in got["points"]}
        assert got["decimated"] and got["total"] == got["in_view"] == 10_000 and len(ids) < 10_000 // 3
        assert {e["id"] for e in charted if e["status"] == "keep"} <= ids  # so the best-so-far line is exact
        discards = [e for e in charted if e["status"] == "discard"]
        for pick in (min, max):  # the envelope: the best and the worst of the others are drawn
            assert pick(discards, key=lambda e: e["metric"])["id"] in ids
        assert any(e["status"] == "crash" and e["id"] in ids for e in charted)
        assert got["counts"] == {k: sum(e["status"] == k for e in charted) for k in ("keep", "discard", "crash")}
        assert got["last_x"] == (10_000 if axis == "number" else 11_000.0)
    # Zoomed in to fewer points than the limit: every one of them (and the kept ones, for the line).
    zoomed = chart(exps, "number", x_range=(4000, 5000), y_range=(2.0, 8.0))
    want = {e["id"] for e in charted if 4000 <= e["id"] <= 5000 and (e["metric"] is None or 2 <= e["metric"] <= 8)}
    assert not zoomed["decimated"] and zoomed["in_view"] == len(want)
    assert {p["id"] for p in zoomed["points"]} == want | {e["id"] for e in charted if e["status"] == "keep"}


def test_a_large_chart_draws_thinned_in_the_browser_and_all_points_when_zoomed(browser, tmp_path: Path):
    task = toy_research.make_task(tmp_path / "big")
    db = ledger(task)
    db.db.execute("PRAGMA synchronous=OFF")  # building the fixture only
    for e in rows(6000):
        if e["finished_at"]:
            exp_id = db.start_experiment(tag="big", parent_commit="0" * 40, agent="x", description=e["description"])
            db.finish(exp_id, e["status"], metric=e["metric"], reason=e["reason"])
    served = Served([Task.open(task)])
    el = "document.querySelector('#progress-chart')"
    note = "document.querySelector('#chart-note').textContent"
    try:
        page, errors = open_page(browser, f"{served.url}#progress")
        page.wait_for_function(f"() => {el}?.dataset.points === '6000'")
        assert page.evaluate(f"() => {el}.dataset.render") == "svg"
        assert int(page.evaluate(f"() => {el}.dataset.shown")) < 2000
        assert "zoom in to see all" in page.evaluate(f"() => {note}")
        page.evaluate(f"() => Plotly.relayout({el}, {{'xaxis.range': [3000, 3500]}})")
        page.wait_for_function(f"() => {el}.dataset.shown > 500 && !{note}")
        in_range = sum(1 for e in rows(6000) if e["finished_at"] and 3000 <= e["id"] <= 3500)
        kept_outside = sum(1 for e in rows(6000) if e["status"] == "keep" and not 3000 <= e["id"] <= 3500)
        assert int(page.evaluate(f"() => {el}.dataset.shown")) == in_range + kept_outside
        page.evaluate(f"() => Plotly.relayout({el}, {{'xaxis.autorange': true, 'yaxis.autorange': true}})")
        page.wait_for_function(f"() => {el}.dataset.shown < 2000")
        box = page.locator("#progress-chart .nsewdrag").bounding_box()  # a zoom by dragging, as a person does
        page.mouse.move(box["x"] + box["width"] * 0.40, box["y"] + 5)
        page.mouse.down()
        page.mouse.move(box["x"] + box["width"] * 0.45, box["y"] + box["height"] - 5, steps=5)
        page.mouse.up()
        page.wait_for_function(f"() => state.zoom && !{note}")
        assert not errors, errors
        page.close()
        # Every point: 6,000 markers of one kind, drawn with WebGL (Chromium's software WebGL here).
        page, errors = open_page(browser, f"{served.url}?thin=0#progress")
        page.wait_for_function(f"() => {el}?.dataset.points === '6000'")
        assert page.evaluate(f"() => [{el}.dataset.render, {el}.dataset.shown]") == ["webgl", "6000"]
        assert page.locator("#progress-chart canvas").count() > 0 and not errors, errors
        page.close()
    finally:
        served.close()
