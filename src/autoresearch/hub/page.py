"""The hub's public, read-only page: chain with diffs and verified gains, the best-so-far curve,
open and recent claims, the leaderboard, and what the swarm tried and saw fail.

Rendered on the server from views.py (no script, no CDN: the stylesheet ships in assets/, the curve
is inline SVG). Everything a worker sent is escaped before it is written into the page.
"""
from __future__ import annotations

from html import escape
from pathlib import Path

from autoresearch.hub.views import Views

ASSETS = Path(__file__).parent / "assets"
CURVE_W, CURVE_H, PAD = 600, 180, 20  # the SVG's viewBox and its margin


def stylesheet() -> str:
    return (ASSETS / "hub.css").read_text()


def render(views: Views) -> str:
    task, chain = views.task(), views.chain()
    claims, board, tried = views.claims(), views.leaderboard(), views.tried()
    open_claims = [c for c in claims if c["open"]]
    return "\n".join([
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        f"<title>autoresearch hub · {escape(task['name'])}</title>",
        '<link rel=stylesheet href="/assets/hub.css"></head><body>',
        f"<h1>autoresearch hub · {escape(task['name'])}</h1>",
        (f"<p class=muted>{escape(task['metric'])} ({task['direction']}); chain height {chain[-1]['height']}; "
        f"{len(open_claims)} open claim(s). Claims are accepted only after a trusted verifier re-runs them "
        f"against their base. API: <a href='/api/v1/docs'>/api/v1</a></p>"),
        "<h2>Best so far</h2>", curve(chain),
        "<h2 id=chain>Chain</h2>", chain_table(chain),
        "<h2 id=claims>Open and recent claims</h2>", claims_table(claims),
        "<h2 id=leaderboard>Leaderboard</h2>", board_table(board),
        "<h2 id=tried>Tried and failed</h2>", tried_table(tried),
        "</body></html>"])


def curve(chain: list[dict]) -> str:
    """Cumulative verified gain by chain height (each accepted commit adds its paired gain)."""
    totals = [e["total_gain"] for e in chain]
    top = max(totals) or 1.0
    n = max(len(totals) - 1, 1)
    points = [(PAD + i * (CURVE_W - 2 * PAD) / n, CURVE_H - PAD - t / top * (CURVE_H - 2 * PAD))
              for i, t in enumerate(totals)]
    dots = "".join(f"<circle cx={x:.1f} cy={y:.1f} r=3><title>height {i}: total gain {totals[i]:.4g}</title>"
                   "</circle>" for i, (x, y) in enumerate(points))
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
    return (f"<svg class=curve id=curve viewBox='0 0 {CURVE_W} {CURVE_H}' role=img aria-label='verified gain by "
            f"height'><polyline points='{line}'/>{dots}</svg><p class=muted>total verified gain "
            f"{totals[-1]:.4g} over {len(totals) - 1} accepted commit(s)</p>")


def chain_table(chain: list[dict]) -> str:
    rows = []
    for e in reversed(chain):
        diff = f"<details><summary>diff</summary><pre class=diff>{escape(e['diff'])}</pre></details>" if e["diff"] else ""
        gain = f"{e['gain']:+.4g}" + (f" ± {e['gain_se']:.2g}" if e["gain_se"] else "")
        rows.append(f"<tr class=chain-entry><td class=num>{e['height']}</td><td><code>{e['commit'][:10]}</code></td>"
                    f"<td>{escape(e['worker'] or '')}</td><td class=num>{gain}</td>"
                    f"<td>{escape(e['description'])}{diff}</td></tr>")
    return "<table><tr><th>height</th><th>commit</th><th>by</th><th>verified gain</th><th>change</th></tr>" + \
        "".join(rows) + "</table>"


def claims_table(claims: list[dict]) -> str:
    rows = [f"<tr class=claim><td class=num>{c['id']}</td><td class='state-{escape(c['state'])}'>{escape(c['state'])}"
            f"</td><td>{escape(c['worker'] or '')}</td><td>{escape(c['description'][:120])}</td>"
            f"<td class=num>{_num(c['claimed_gain'])}</td><td class=num>{_num(c['verified_gain'])}</td>"
            f"<td class=num>{c['verifier_runs']}</td><td>{escape(c['reason'][:160])}</td></tr>" for c in claims]
    return _table(["#", "state", "by", "change", "claimed gain", "verified gain", "verifier runs", "why"], rows,
                  "no claims yet")


def board_table(board: list[dict]) -> str:
    rows = [f"<tr class=leader><td class=num>{r['rank']}</td><td>{escape(r['worker'])}</td><td>{r['kind']}</td>"
            f"<td class=num>{r['credit']:.1%}</td><td class=num>{r['accepted']}</td><td class=num>{r['verified_gain']:.4g}</td>"
            f"<td class=num>{r['rejected']}</td><td class=num>{r['flagged']}</td>"
            f"<td class=num>{r['verifier_runs']}</td></tr>" for r in board]
    return _table(["rank", "who", "kind", "credit", "accepted", "verified gain", "rejected", "flagged", "verifier runs"], rows,
                  "nobody has contributed yet")


def tried_table(tried: list[dict]) -> str:
    rows = [f"<tr class=tried><td>{escape(t['description'][:160])}</td><td>{escape(t['worker'] or '')}</td>"
            f"<td class=num>{_num(t['metric'])}</td><td>{'verified' if t['verified'] else 'unverified'}</td>"
            f"<td>{escape(t.get('reason', '')[:160])}</td></tr>" for t in tried]
    return _table(["change", "by", "metric", "", "why"], rows, "nothing yet")


def _table(headers: list[str], rows: list[str], empty: str) -> str:
    """A table of the rendered rows under these headers, or the `empty` line when there are none."""
    if not rows:
        return f"<p class=muted>{empty}</p>"
    return "<table><tr>" + "".join(f"<th>{h}</th>" for h in headers) + "</tr>" + "".join(rows) + "</table>"


def _num(x) -> str:
    return f"{x:+.4g}" if isinstance(x, (int, float)) else ""
