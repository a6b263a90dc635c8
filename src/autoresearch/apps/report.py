"""`autoresearch report`: the story of one research run as one self-contained HTML file, or Markdown.

The story is built once (`build_report`, plain data from the dashboard's read-only queries) and
rendered twice: HTML with inline CSS and a static SVG chart (no script, readable offline, small
enough to mail), and Markdown for agents and READMEs. It says only what the ledger and git hold:
the question (program.md), the baseline and its measured noise, every kept change with its diff
and gain, the most instructive failures, the chart (a large run's thinned out as the dashboard's
is: every kept point, the envelope of the others), the pauses, the accounting, and the ablation
and transfer checks when they were run (research/checks.py).
"""
from __future__ import annotations

import html
import itertools
import math
import statistics
import time
from typing import Any

from autoresearch.apps.dashboard.data import NOT_CHARTED, Task, chart
from autoresearch.core.judge import pooled_sigma

FAILURES = 6  # instructive failures shown: near misses, crashes, rule refusals
MARKDOWN_ROWS = 200  # the Markdown report lists every measured experiment up to this many
DIFF_LINES = 80  # a kept change's diff beyond this is cut (the commit holds all of it)
CHART_W, CHART_H, PAD = 900, 340, 48
COLORS = {"keep": "#16a34a", "discard": "#9ca3af", "guard": "#f59e0b", "crash": "#dc2626", "timeout": "#ea580c",
          "pruned": "#7c3aed", "other": "#111827"}
LABELS = {"keep": "kept", "discard": "discarded", "guard": "guard / budget rejected", "crash": "crashed",
          "timeout": "timed out", "pruned": "pruned", "other": "other"}
CHECKS_NOTE = ("gain > 0: better. Ablation: the best without the change is worse by this much (the change still "
               "pulls its weight); transfer: the best beats the base by this much in that setting.")
NO_CHECKS = "No checks were run (`autoresearch ablate`, `autoresearch transfer --budget S`)."


def build_report(task: Task, tag: str) -> dict[str, Any]:
    exps = task.experiments(tag)
    summary = task.summary(tag)
    kept = sorted((e for e in exps if e["status"] == "keep"), key=lambda e: (e["finished_at"] or 0, e["id"]))
    return {"task": task.name, "root": str(task.root), "tag": tag, "summary": summary, "generated": time.time(),
            "program": task.program_text(tag), "baseline": _baseline(task, tag, kept),
            "chain": _chain(task, kept), "failures": _failures(exps, summary["direction"]),
            "accounting": task.accounting(tag), "experiments": exps, "pauses": task.pauses(tag),
            "checks": task.checks(tag)}


def _baseline(task: Task, tag: str, kept: list[dict]) -> dict[str, Any] | None:
    if not kept:
        return None
    runs = [r["metric"] for r in task.experiment(kept[0]["id"])["runs"] if r["status"] == "ok" and r["metric"] is not None]
    sigma, dof = pooled_sigma(task.run_groups(tag))
    return {"id": kept[0]["id"], "metric": kept[0]["metric"], "runs": runs,
            "spread": statistics.stdev(runs) if len(runs) > 1 else None, "sigma": sigma, "sigma_dof": dof}


def _chain(task: Task, kept: list[dict]) -> list[dict[str, Any]]:
    """The kept changes after the baseline, each with its gain over the best it replaced."""
    chain = []
    for before, e in itertools.pairwise(kept):
        full = task.experiment(e["id"])
        gain = e["metric"] - before["metric"] if e["metric"] is not None and before["metric"] is not None else None
        lines = full["diff"].splitlines()
        diff = "\n".join(lines[:DIFF_LINES]) + (f"\n… ({len(lines) - DIFF_LINES} more lines)" if len(lines) > DIFF_LINES
                                                 else "")
        chain.append({"id": e["id"], "description": e["description"], "reason": e["reason"], "metric": e["metric"],
                      "gain": gain, "agent": e["agent"], "diff": diff, "runs": len(full["runs"])})
    return chain


def _failures(exps: list[dict], direction: str) -> list[dict[str, Any]]:
    """What teaches most: the nearest misses (measured, not kept), then each crash and rule refusal's first."""
    sign = 1 if direction == "minimize" else -1
    misses = sorted((e for e in exps if e["kind"] == "discard" and e["metric"] is not None),
                    key=lambda e: sign * e["metric"])[:FAILURES // 2]
    firsts: dict[str, dict] = {}
    for e in exps:
        if e["kind"] in ("crash", "timeout", "guard", "pruned") and e["kind"] not in firsts:
            firsts[e["kind"]] = e
    picked = [*misses, *firsts.values()][:FAILURES]
    return [{"id": e["id"], "kind": e["kind"], "status": e["status"], "description": e["description"],
             "reason": e["reason"], "metric": e["metric"]} for e in sorted(picked, key=lambda e: e["id"])]


# -- the chart ----------------------------------------------------------------------------------

def svg_chart(exps: list[dict], metric: str, direction: str) -> str:
    """Every measured experiment as a dot by its number (a large run's thinned out: data.chart), the
    best so far as a step line (static SVG)."""
    charted = chart(exps)
    points = charted["points"]
    values = [e["metric"] for e in points if e["metric"] is not None]
    if not values:
        return "<p>No measured experiment yet.</p>"
    lo, hi = min(values), max(values)
    span = (hi - lo) or 1.0
    edge = hi + 0.06 * span if direction == "minimize" else lo - 0.06 * span  # failed runs: the worse edge
    y_lo, y_hi = min(lo, edge), max(hi, edge)
    x_max = charted["last_x"]

    def x(i: float) -> float:
        return PAD + (CHART_W - 2 * PAD) * (i - 1) / max(x_max - 1, 1)

    def y(v: float) -> float:
        return CHART_H - PAD - (CHART_H - 2 * PAD) * (v - y_lo) / ((y_hi - y_lo) or 1.0)

    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {CHART_W} {CHART_H}" width="100%" '
             f'role="img" aria-label="progress of {html.escape(metric)}" style="max-width:{CHART_W}px;background:#fff">')]
    for frac in (0, 0.25, 0.5, 0.75, 1):
        v = y_lo + frac * (y_hi - y_lo)
        parts.append(f'<line x1="{PAD}" x2="{CHART_W - PAD}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#eef0f3"/>'
                     f'<text x="{PAD - 4}" y="{y(v) + 4:.1f}" text-anchor="end" font-size="10">{v:.4g}</text>')
    kept = sorted((e for e in points if e["kind"] == "keep" and e["metric"] is not None),
                  key=lambda e: (e["finished_at"], e["id"]))
    if kept:
        path = [f"M{x(kept[0]['id']):.1f},{y(kept[0]['metric']):.1f}"]
        for e in kept[1:]:
            path.append(f"H{x(e['id']):.1f}V{y(e['metric']):.1f}")
        path.append(f"H{x(x_max):.1f}")
        parts.append(f'<path d="{"".join(path)}" fill="none" stroke="{COLORS["keep"]}" stroke-width="2"/>')
    for e in points:
        cx, cy = x(e["id"]), y(e["metric"] if e["metric"] is not None else edge)
        color = COLORS.get(e["kind"], COLORS["other"])
        title = html.escape(f"#{e['id']} {e['status']}: {e['description']} — {e['reason']}")
        if e["kind"] in ("crash", "timeout"):
            parts.append(f'<path d="M{cx - 4:.1f},{cy - 4:.1f}l8,8m0,-8l-8,8" stroke="{color}" stroke-width="2">'
                         f'<title>{title}</title></path>')
        else:
            r = 5 if e["kind"] == "keep" else 3.5
            parts.append(f'<circle cx="{cx:.1f}" cy="{cy:.1f}" r="{r}" fill="{color}"><title>{title}</title></circle>')
    for e in kept[1:]:
        label = e["description"] if len(e["description"]) <= 36 else e["description"][:35] + "…"
        parts.append(f'<text x="{x(e["id"]) + 6:.1f}" y="{y(e["metric"]) - 7:.1f}" font-size="10" fill="#14532d">'
                     f'{html.escape(label)}</text>')
    legend_x = PAD
    for k, color in COLORS.items():
        n = charted["counts"].get(k, 0)
        if n:
            parts.append(f'<circle cx="{legend_x + 4}" cy="{CHART_H - 14}" r="4" fill="{color}"/><text '
                         f'x="{legend_x + 12}" y="{CHART_H - 10}" font-size="11">{LABELS[k]} ({n})</text>')
            legend_x += 30 + 7 * len(f"{LABELS[k]} ({n})")
    better = "lower" if direction == "minimize" else "higher"
    thinned = (f"; {len(points):,} of {charted['total']:,} drawn: every kept one, the best and worst of the others "
               "per column") if charted["decimated"] else ""
    parts.append(f'<text x="{PAD}" y="16" font-size="11">{html.escape(metric)} ({better} is better) by experiment '
                 f'number{thinned}</text></svg>')
    return "".join(parts)


# -- HTML ---------------------------------------------------------------------------------------

CSS = """body{font:15px/1.5 system-ui,sans-serif;max-width:980px;margin:24px auto;padding:0 16px;color:#1d2330}
h1{font-size:24px}h2{font-size:19px;margin-top:32px;border-bottom:1px solid #e3e6eb}h3{font-size:15px}
table{border-collapse:collapse;width:100%}th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #e3e6eb;
vertical-align:top}td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}
pre{background:#0f172a;color:#e2e8f0;padding:10px;border-radius:6px;overflow:auto;font:12px/1.45 ui-monospace,monospace}
pre.q{background:#f8fafc;color:#1d2330;border:1px solid #e3e6eb;white-space:pre-wrap}
.add{color:#86efac}.del{color:#fca5a5}.hunk{color:#93c5fd}.muted{color:#6b7280}code{font-size:13px}"""


def render_html(story: dict[str, Any]) -> str:
    e = html.escape
    s, b, acc = story["summary"], story["baseline"], story["accounting"]
    out = [(f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{e(story['task'])} · {e(story['tag'])}: "
           f"research report</title><style>{CSS}</style></head><body>"),
           f"<h1>{e(story['task'])}: research run <code>{e(story['tag'])}</code></h1>",
           (f"<p class=muted>{e(story['root'])}, branch <code>{e(s['branch'])}</code>; report of "
           f"{time.strftime('%Y-%m-%d %H:%M', time.localtime(story['generated']))}</p>"),
           f"<p>{_headline(story)}</p>", "<h2>The question</h2>",
           f"<pre class=q>{e(story['program'] or '(no program file)')}</pre>"]
    out.append("<h2>Baseline and noise</h2>")
    out.append(f"<p>{e(_baseline_text(b, s['metric']))}</p>")
    out.append("<h2>Progress</h2>" + svg_chart(story["experiments"], s["metric"], s["direction"]))
    out.append(f"<h2>Kept changes ({len(story['chain'])})</h2>")
    if not story["chain"]:
        out.append("<p>No change beat the baseline.</p>")
    for c in story["chain"]:
        out.append(f"<h3>#{c['id']} {e(c['description'])}</h3><p>{s['metric']} {_num(c['metric'])} "
                   f"(<b>{_signed(c['gain'])}</b>), {c['runs']} run(s), by {e(c['agent'])}<br><code>{e(c['reason'])}"
                   f"</code></p>{_html_diff(c['diff'])}")
    out.append("<h2>Instructive failures</h2>")
    if story["failures"]:
        out.append("<table><tr><th>#</th><th>status</th><th>" + e(s["metric"]) + "</th><th>what</th><th>why</th></tr>")
        for f in story["failures"]:
            out.append(f"<tr><td class=n>{f['id']}</td><td>{e(f['kind'])}</td><td class=n>{_num(f['metric'])}</td>"
                       f"<td>{e(f['description'])}</td><td>{e(f['reason'])}</td></tr>")
        out.append("</table>")
    else:
        out.append("<p>None: every measured experiment was kept.</p>")
    if story["pauses"]:
        out.append(f"<h2>Pauses</h2><p>{e(_pauses_text(story['pauses']))}</p>")
    out.append("<h2>Accounting</h2><table>" + "".join(f"<tr><th>{e(k)}</th><td class=n>{e(v)}</td></tr>"
                                                     for k, v in _accounting_rows(acc)) + "</table>")
    out.append("<h2>Ablation and transfer</h2>")
    if story["checks"]:
        out.append("<table><tr><th>check</th><th>what</th><th>pairs</th><th>gain ± se</th><th>note</th></tr>")
        out += [f"<tr><td>#{c['id']} {e(c['kind'])}</td><td>{e(c['setting'].get('label', ''))}</td>"
                f"<td class=n>{len(c['pairs'])}</td><td class=n>{e(c['gain_text'])}</td><td>{e(c['note'])}</td></tr>"
                for c in story["checks"]]
        out.append(f"</table><p class=muted>{e(CHECKS_NOTE)}</p>")
    else:
        out.append(f"<p>{e(NO_CHECKS)}</p>")
    out.append(f"<p class=muted>Not recorded by the ledger: {e('; '.join(acc['not_recorded']))}.</p></body></html>")
    return "\n".join(out)


def _html_diff(diff: str) -> str:
    if not diff:
        return ""
    lines = []
    for line in diff.splitlines():
        cls = "hunk" if line.startswith("@@") else "add" if line.startswith("+") and not line.startswith("+++") \
            else "del" if line.startswith("-") and not line.startswith("---") else ""
        lines.append(f'<span class="{cls}">{html.escape(line)}</span>' if cls else html.escape(line))
    return "<pre>" + "\n".join(lines) + "</pre>"


# -- Markdown -----------------------------------------------------------------------------------

def render_markdown(story: dict[str, Any]) -> str:
    s, b, acc = story["summary"], story["baseline"], story["accounting"]
    out = [f"# {story['task']}: research run `{story['tag']}`", "",
           f"{story['root']}, branch `{s['branch']}`.", "", _headline(story, markdown=True), "",
           "## The question", "", _quote(story["program"] or "(no program file)"), "",
           "## Baseline and noise", "", _baseline_text(b, s["metric"]), "",
           "## Progress", ""]
    measured = [e for e in story["experiments"] if e["status"] not in NOT_CHARTED]
    if len(measured) > MARKDOWN_ROWS:
        out.append(f"{len(measured)} measured experiments: too many for a table here (`autoresearch log` lists them).")
    else:
        out += [f"| # | status | {s['metric']} | description |", "|---:|---|---:|---|"]
        out += [f"| {e['id']} | {e['kind']} | {_num(e['metric'])} | {_cell(e['description'])} |" for e in measured]
    out += ["", f"## Kept changes ({len(story['chain'])})", ""]
    if not story["chain"]:
        out.append("No change beat the baseline.")
    for c in story["chain"]:
        out += [f"### #{c['id']} {c['description']}", "",
                (f"{s['metric']} {_num(c['metric'])} (**{_signed(c['gain'])}**), {c['runs']} run(s), by {c['agent']}: "
                f"`{c['reason']}`"), "", "```diff", c["diff"], "```", ""]
    out += ["## Instructive failures", ""]
    if story["failures"]:
        out += [f"| # | status | {s['metric']} | what | why |", "|---:|---|---:|---|---|"]
        out += [f"| {f['id']} | {f['kind']} | {_num(f['metric'])} | {_cell(f['description'])} | {_cell(f['reason'])} |"
                for f in story["failures"]]
    else:
        out.append("None: every measured experiment was kept.")
    if story["pauses"]:
        out += ["", "## Pauses", "", _pauses_text(story["pauses"])]
    out += ["", "## Accounting", "", "| | |", "|---|---:|"]
    out += [f"| {k} | {v} |" for k, v in _accounting_rows(acc)]
    out += ["", "## Ablation and transfer", ""]
    if story["checks"]:
        out += ["| check | what | pairs | gain ± se | note |", "|---|---|---:|---:|---|"]
        out += [f"| #{c['id']} {c['kind']} | {_cell(c['setting'].get('label', ''))} | {len(c['pairs'])} | {c['gain_text']} | "
                f"{_cell(c['note'])} |" for c in story["checks"]]
        out += ["", CHECKS_NOTE]
    else:
        out.append(NO_CHECKS)
    out += ["", f"Not recorded by the ledger: {'; '.join(acc['not_recorded'])}.", ""]
    return "\n".join(out)


def _quote(text: str) -> str:
    return "\n".join(f"> {line}" if line else ">" for line in text.strip().splitlines())


def _cell(text: str) -> str:
    return " ".join((text or "").split()).replace("|", "\\|")


# -- shared wording -----------------------------------------------------------------------------

def _headline(story: dict[str, Any], markdown: bool = False) -> str:
    s = story["summary"]
    c = s["counts"]
    base, best = s["baseline"], s["best"]
    bold = (lambda t: f"**{t}**") if markdown else (lambda t: f"<b>{html.escape(t)}</b>")
    text = (f"{s['experiments']} experiments: {c.get('keep', 0)} kept (the baseline included), "
            f"{c.get('discard', 0)} discarded, {c.get('crash', 0) + c.get('timeout', 0)} crashed or timed out, "
            f"{c.get('rejected', 0)} rejected before running.")
    if base and best and base["metric"] is not None and best["metric"] is not None:
        text += " " + bold(f"{s['metric']}: {_num(base['metric'])} → {_num(best['metric'])} "
                           f"({_signed(best['metric'] - base['metric'])}; best #{best['id']})")
    return text


def _baseline_text(b: dict | None, metric: str) -> str:
    if b is None:
        return "No baseline has been measured yet."
    runs = ", ".join(_num(v) for v in b["runs"])
    spread = f", standard deviation {_num(b['spread'])}" if b["spread"] is not None else ""
    sigma = (f" The run-to-run noise σ pooled over every repeated experiment is {_num(b['sigma'])} "
             f"({b['sigma_dof']} degrees of freedom): the judge keeps a change only if it beats the best by a "
             "multiple of it.") if b["sigma"] else " Repeated runs gave identical values: the runs are deterministic." \
        if b["sigma"] == 0 else " No noise estimate (no experiment was run twice)."
    return f"The unmodified code (#{b['id']}) scored {metric} {_num(b['metric'])} over {len(b['runs'])} run(s) " \
           f"({runs}){spread}.{sigma}"


def _pauses_text(pauses: list[dict[str, Any]]) -> str:
    """When the research run was paused (`autoresearch pause`, the dashboard) and for how long."""
    clock = (lambda t: time.strftime("%Y-%m-%d %H:%M", time.localtime(t)))
    ended = [p for p in pauses if p["ended_at"] is not None]
    total = sum(p["ended_at"] - p["started_at"] for p in ended)
    def period(p: dict[str, Any]) -> str:
        end = "now (still paused)" if p["ended_at"] is None else \
            f"{clock(p['ended_at'])} ({_duration(p['ended_at'] - p['started_at'])})"
        return f"{clock(p['started_at'])} to {end}, by {p['source']}"

    periods = "; ".join(period(p) for p in pauses)
    return (f"Paused {len(pauses)} time{'s' * (len(pauses) != 1)}, {_duration(total)} in all"
            f"{' before the pause still open' if len(ended) < len(pauses) else ''}: {periods}. While paused no new "
            "experiment started; the running ones finished and were judged.")


def _duration(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h" if seconds >= 5400 else f"{seconds / 60:.0f} min" if seconds >= 90 \
        else f"{seconds:.0f} s"


def _accounting_rows(acc: dict[str, Any]) -> list[tuple[str, str]]:
    money = (lambda v: "not recorded" if v is None else f"${v:.4f}")
    per = acc["device_hours_per_kept_improvement"]
    return [("LLM tokens", f"{acc['tokens']:,} ({acc['prompt_tokens']:,} in, {acc['completion_tokens']:,} out)"),
            ("models", ", ".join(acc["models"]) or "none"), ("model cost", money(acc["cost_usd"])),
            ("runs", str(acc["runs"])), ("device-hours", f"{acc['device_hours']:.4f}"),
            ("kept improvements", str(acc["kept_improvements"])),
            ("model cost per kept improvement", money(acc["cost_per_kept_improvement"])),
            ("device-hours per kept improvement", "—" if per is None else f"{per:.4f}")]


def _num(v: float | None) -> str:
    return "—" if v is None or not math.isfinite(v) else f"{v:.6g}"


def _signed(v: float | None) -> str:
    return "—" if v is None else f"{v:+.4g}"
