"""`autoresearch report`: the story of a real research run, in one self-contained HTML file and in Markdown."""
from __future__ import annotations

import html
import re
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from autoresearch.apps.dashboard.commands import DashboardError
from autoresearch.apps.dashboard.data import Task
from autoresearch.apps.report import build_report, render_html, render_markdown
from tests import toy_research


@pytest.fixture(scope="module")
def task(tmp_path_factory) -> Path:
    return toy_research.build(tmp_path_factory.mktemp("report") / "toy")


class Resources(HTMLParser):
    """Every URL an HTML page would load: a self-contained report has none."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("src", "href") and value:
                self.urls.append(value)


def test_the_story_holds_baseline_chain_and_failures(task: Path):
    story = build_report(Task.open(task), "t")
    base = story["baseline"]
    assert base["id"] == 1 and base["metric"] == pytest.approx(9.9) and len(base["runs"]) >= 3  # + drift-check re-runs
    assert [c["description"] for c in story["chain"]] == ["better: X=2.5", "better again: WIDTH=6"]
    assert story["chain"][0]["gain"] == pytest.approx(0.25 + 0.9 - 9.9)  # (2.5-2)^2 + 0.1*(3-6)^2 - 9.9
    assert story["chain"][1]["gain"] == pytest.approx(0.25 - 1.15)
    assert "+X = 2.5" in story["chain"][0]["diff"] and "+WIDTH = 6" in story["chain"][1]["diff"]
    kinds = {f["description"]: f["kind"] for f in story["failures"]}
    assert kinds == {"worse: X=9": "discard", "too wide: WIDTH=12": "guard", "crash": "crash"}


def test_html_is_one_self_contained_file(task: Path, tmp_path: Path):
    out = tmp_path / "report.html"
    proc = subprocess.run([sys.executable, "-m", "autoresearch", "report", str(task), "--out", str(out)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    page = out.read_text()
    parser = Resources()
    parser.feed(page)
    assert parser.urls == [] and "<script" not in page  # nothing to fetch, nothing to run
    assert "Minimise score by editing train.py." in page  # the question
    # Five measured experiments as dots and the crash as a cross; the legend has a dot per kind (4).
    assert page.count("<circle") == 5 + 4 and page.count('stroke="#dc2626"') == 1
    assert "better again: WIDTH=6" in page and 'class="add">+WIDTH = 6' in page
    assert "guard width=12 above max 10" in page
    assert len(page) < 100_000


def test_markdown_for_agents(task: Path):
    md = render_markdown(build_report(Task.open(task), "t"))
    assert md.startswith("# toy: research run `t`")
    assert "**score: 9.9 → 0.25 (-9.65; best #7)**" in md
    assert re.search(r"```diff\n.*\+X = 2\.5.*```", md, re.DOTALL)
    assert "| 5 | crash | — | crash |" in md
    assert "> Minimise score by editing train.py." in md


def test_report_of_an_unknown_run_says_which_exist(task: Path, tmp_path: Path):
    proc = subprocess.run([sys.executable, "-m", "autoresearch", "report", str(task), "--tag", "nope", "--out",
                           str(tmp_path / "r.html")], capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == DashboardError.exit_code and "known: t" in proc.stderr and "fix:" in proc.stderr
    assert not (tmp_path / "r.html").exists()


def test_html_and_markdown_render_from_the_same_story(task: Path):
    story = build_report(Task.open(task), "t")
    html_text, md = render_html(story), render_markdown(story)
    for c in story["chain"]:
        assert c["reason"] in md and html.escape(c["reason"]) in html_text


def test_pauses_are_told(task: Path):
    from autoresearch.store.ledger import Ledger

    ledger = Ledger(task / ".autoresearch" / "ledger.db")
    ledger.pause("t", source="dashboard")
    ledger.resume("t")
    ledger.pause("t", source="cli")
    try:
        story = build_report(Task.open(task), "t")
        assert [p["source"] for p in story["pauses"]] == ["dashboard", "cli"]
        md = render_markdown(story)
        assert "## Pauses" in md and "Paused 2 times, 0 s in all before the pause still open" in md
        assert "by dashboard" in md and "to now (still paused), by cli" in md
        assert "<h2>Pauses</h2>" in render_html(story)
    finally:
        ledger.resume("t")
        ledger.close()


def test_a_large_runs_chart_is_thinned_out_not_every_dot():
    from autoresearch.apps.report import svg_chart
    from tests.apps.test_dashboard import rows

    svg = svg_chart(rows(10_000), "score", "minimize")
    assert svg.count("<circle") < 2500 and "of 10,000 drawn: every kept one" in svg
    assert len(svg) < 300_000  # every dot: 1.1 MB
    small = svg_chart(rows(50), "score", "minimize")
    assert "drawn:" not in small


def test_ablation_and_transfer_checks_are_in_the_report(tmp_path: Path):
    from autoresearch.apps.cli import main
    from tests.research.test_checks import researched

    task = researched(tmp_path)
    assert "No checks were run" in render_markdown(build_report(Task.open(task), "t"))
    assert main(["ablate", "-C", str(task), "--tag", "t", "--pairs", "1", "--json"]) == 0
    story = build_report(Task.open(task), "t")
    assert [c["kind"] for c in story["checks"]] == ["ablation", "ablation"]
    md, page = render_markdown(story), render_html(story)
    assert "without #2 (X=2.5) | 1 | +8.75" in md and "without #3 (WIDTH=6) | 1 | +0.9" in md
    assert "without #2 (X=2.5)" in page and "+8.75" in page
