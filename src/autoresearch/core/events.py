"""What the research tells whoever watches it: the observer interface (live view, JSON lines, later
the dashboard and notifications). Called from the coordinator's threads; an observer must not
block for long and must not raise."""
from __future__ import annotations

from typing import Protocol

from autoresearch.core.records import Experiment, Pause


class Observer(Protocol):
    def message(self, text: str) -> None: ...
    def started(self, exp: Experiment, budget_s: float) -> None: ...
    def output(self, line: str) -> None: ...
    def finished(self, exp: Experiment, best: Experiment | None) -> None: ...
    def paused(self, pause: Pause | None) -> None: ...  # paused (nothing new starts), or resumed (None)


class QuietObserver:
    def message(self, text: str) -> None: pass
    def started(self, exp: Experiment, budget_s: float) -> None: pass
    def output(self, line: str) -> None: pass
    def finished(self, exp: Experiment, best: Experiment | None) -> None: pass
    def paused(self, pause: Pause | None) -> None: pass
