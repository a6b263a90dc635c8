"""The live terminal view of a research run (rich), or plain lines when not on a terminal."""
from __future__ import annotations

import json
import sys
import threading
import time
from collections import deque

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from autoresearch.core.records import Experiment, Pause

STATUS_STYLE = {"keep": "bold green", "discard": "yellow", "crash": "red", "timeout": "red", "pruned": "blue",
                "rejected": "magenta", "interrupted": "dim", "running": "cyan"}
RECENT = 6


def fmt_metric(value: float | None) -> str:
    return "—" if value is None else f"{value:.6g}"


def paused_line(pause: Pause) -> str:
    since = time.strftime("%H:%M:%S", time.localtime(pause.started_at))
    return (f"paused since {since} (by {pause.source}): running experiments finish, nothing new starts "
            "until `autoresearch resume`")


class LiveView:
    """Observer for `Research`: one row per busy slot, the best so far, and a line per decision."""

    def __init__(self, title: str, metric: str, console: Console | None = None):
        self.console = console or Console()
        self.title, self.metric = title, metric
        self.running: dict[str, tuple[Experiment, float, float]] = {}  # slot -> (exp, budget, started at)
        self.last_line = ""
        self.best: Experiment | None = None
        self.recent: deque[Experiment] = deque(maxlen=RECENT)
        self.pause: Pause | None = None
        self.live = Live(self, console=self.console, refresh_per_second=4, transient=False)

    def __enter__(self) -> "LiveView":
        self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.live.__exit__(*exc)

    # Observer protocol (called from the slots' and agents' threads)
    def message(self, text: str) -> None:
        self.console.print(f"[dim]{text}[/dim]")

    def started(self, exp: Experiment, budget_s: float) -> None:
        self.running[exp.slot or ""] = (exp, budget_s, time.time())
        self.last_line = ""

    def output(self, line: str) -> None:
        line = line.strip()
        if line:
            self.last_line = line[-120:]

    def finished(self, exp: Experiment, best: Experiment | None) -> None:
        for slot, (current, _, _) in list(self.running.items()):
            if current.id == exp.id or slot == exp.slot:
                self.running.pop(slot, None)
        self.best = best
        self.recent.append(exp)
        style = STATUS_STYLE.get(exp.status, "")
        self.console.print(f"[{style}]#{exp.id:<4} {exp.status:<11}[/{style}] {fmt_metric(exp.metric):>10}  "
                           f"{exp.description[:70]}  [dim]{exp.reason[:80]}[/dim]")

    def paused(self, pause: Pause | None) -> None:
        self.pause = pause
        self.console.print(f"[bold yellow]{paused_line(pause)}[/bold yellow]" if pause else "[bold]resumed[/bold]")

    def __rich__(self) -> Panel:
        parts = []
        best = f"{fmt_metric(self.best.metric)} (#{self.best.id})" if self.best else "—"
        parts.append(Text.assemble(("best ", "bold"), (f"{self.metric} = {best}", "green")))
        if self.pause:
            parts.append(Text(paused_line(self.pause), style="bold yellow"))
        rows = Table.grid(padding=(0, 1))
        for slot, (exp, budget_s, started_at) in sorted(self.running.items()):
            elapsed = time.time() - started_at
            bar = ProgressBar(total=max(budget_s, 1e-9), completed=min(elapsed, budget_s), width=30)
            rows.add_row(Text(f"{slot or 'run'}", style="bold"), Text(f"#{exp.id}", style="cyan"), bar,
                         Text(f"{elapsed:4.0f}s of {budget_s:g}s budget"), Text(exp.description[:60]))
        if self.running:
            parts.append(rows)
            if len(self.running) == 1:
                parts.append(Text(self.last_line, style="dim"))
            parts.append(Text("bars: training budget (start-up and evaluation come on top)", style="dim"))
        elif not self.pause:
            parts.append(Text("waiting for the agent…", style="dim"))
        title = f"{self.title} · paused" if self.pause else self.title
        return Panel(Group(*parts), title=title, border_style="yellow" if self.pause else "blue")


class PlainView:
    """Line-oriented output for logs and pipes; `--json` prints one JSON object per event.

    Slots and agents report from their own threads: each line goes out whole, in one write
    (print() writes the text and its newline separately, so two threads' lines could run together)."""

    def __init__(self, as_json: bool = False, stream=None):
        self.as_json = as_json
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def _emit(self, event: str, line: str, **data) -> None:
        text = json.dumps({"event": event, **data}) if self.as_json else line
        with self._lock:
            self.stream.write(text + "\n")
            self.stream.flush()

    def message(self, text: str) -> None:
        self._emit("message", text, text=text)

    def started(self, exp: Experiment, budget_s: float) -> None:
        where = f" on {exp.slot}" if exp.slot else ""
        self._emit("started", f"#{exp.id} started{where}: {exp.description}", id=exp.id, description=exp.description,
                   budget_s=budget_s, slot=exp.slot)

    def output(self, line: str) -> None:
        pass

    def paused(self, pause: Pause | None) -> None:
        if pause:
            self._emit("paused", paused_line(pause), since=pause.started_at, source=pause.source)
        else:
            self._emit("resumed", "resumed")

    def finished(self, exp: Experiment, best: Experiment | None) -> None:
        self._emit("finished", f"#{exp.id} {exp.status}: {fmt_metric(exp.metric)} {exp.description} — {exp.reason}",
                   id=exp.id, status=exp.status, metric=exp.metric, reason=exp.reason,
                   best_id=best.id if best else None, best_metric=best.metric if best else None)
