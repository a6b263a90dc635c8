"""The live terminal view of a research run (rich), or plain lines when not on a terminal."""
from __future__ import annotations

import json
import sys
import time
from collections import deque

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from autoresearch.ledger import Experiment

STATUS_STYLE = {"keep": "bold green", "discard": "yellow", "crash": "red", "timeout": "red",
                "rejected": "magenta", "interrupted": "dim", "running": "cyan"}
RECENT = 6


def fmt_metric(value: float | None) -> str:
    return "—" if value is None else f"{value:.6g}"


class LiveView:
    """Observer for `Research` showing the current experiment, the best so far and recent results."""

    def __init__(self, title: str, metric: str, console: Console | None = None):
        self.console = console or Console()
        self.title, self.metric = title, metric
        self.current: Experiment | None = None
        self.budget_s = 0.0
        self.started_at = 0.0
        self.last_line = ""
        self.best: Experiment | None = None
        self.recent: deque[Experiment] = deque(maxlen=RECENT)
        self.live = Live(self, console=self.console, refresh_per_second=4, transient=False)

    def __enter__(self) -> "LiveView":
        self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.live.__exit__(*exc)

    # Observer protocol
    def message(self, text: str) -> None:
        self.console.print(f"[dim]{text}[/dim]")

    def started(self, exp: Experiment, budget_s: float) -> None:
        self.current, self.budget_s, self.started_at, self.last_line = exp, budget_s, time.time(), ""

    def output(self, line: str) -> None:
        line = line.strip()
        if line:
            self.last_line = line[-120:]

    def finished(self, exp: Experiment, best: Experiment | None) -> None:
        self.current = None if self.current and self.current.id == exp.id else self.current
        self.best = best
        self.recent.append(exp)
        style = STATUS_STYLE.get(exp.status, "")
        self.console.print(f"[{style}]#{exp.id:<4} {exp.status:<11}[/{style}] {fmt_metric(exp.metric):>10}  "
                           f"{exp.description[:70]}  [dim]{exp.reason[:80]}[/dim]")

    def __rich__(self) -> Panel:
        parts = []
        best = f"{fmt_metric(self.best.metric)} (#{self.best.id})" if self.best else "—"
        parts.append(Text.assemble(("best ", "bold"), (f"{self.metric} = {best}", "green")))
        if self.current:
            elapsed = time.time() - self.started_at
            bar = ProgressBar(total=max(self.budget_s, 1e-9), completed=min(elapsed, self.budget_s), width=40)
            row = Table.grid(padding=(0, 1))
            row.add_row(Text(f"#{self.current.id} running", style="cyan"), bar,
                        Text(f"{elapsed:4.0f}s elapsed · training budget {self.budget_s:g}s (+ start-up, evaluation)"))
            parts += [Text(self.current.description[:100]), row, Text(self.last_line, style="dim")]
        else:
            parts.append(Text("waiting for the agent…", style="dim"))
        return Panel(Group(*parts), title=self.title, border_style="blue")


class PlainView:
    """Line-oriented output for logs and pipes; `--json` prints one JSON object per event."""

    def __init__(self, as_json: bool = False, stream=None):
        self.as_json = as_json
        self.stream = stream or sys.stdout

    def _emit(self, event: str, line: str, **data) -> None:
        if self.as_json:
            print(json.dumps({"event": event, **data}), file=self.stream, flush=True)
        else:
            print(line, file=self.stream, flush=True)

    def message(self, text: str) -> None:
        self._emit("message", text, text=text)

    def started(self, exp: Experiment, budget_s: float) -> None:
        self._emit("started", f"#{exp.id} started: {exp.description}", id=exp.id, description=exp.description,
                   budget_s=budget_s)

    def output(self, line: str) -> None:
        pass

    def finished(self, exp: Experiment, best: Experiment | None) -> None:
        self._emit("finished", f"#{exp.id} {exp.status}: {fmt_metric(exp.metric)} {exp.description} — {exp.reason}",
                   id=exp.id, status=exp.status, metric=exp.metric, reason=exp.reason,
                   best_id=best.id if best else None, best_metric=best.metric if best else None)
