"""Keep every slot busy: agents propose ahead while experiments run.

One thread per agent proposes (think, validate, commit, queue) and one thread per slot runs what
is queued (rebase if the best moved, run, judge, record). Agents think while experiments run and
keep `ahead` proposals per slot in stock (ready, or being thought), so a slot that finishes takes
its next experiment at once: with `ahead = 2`, one is ready even when an agent thinks as long as an
experiment runs. With `ahead = 0` an agent proposes only for an idle slot (the serial loop of the
original autoresearch). Agents also think while the baseline runs.

The threads share one condition variable; the Research object's lock keeps the ledger and the
branch consistent. The first error in any thread stops the others and is raised by `run()`.

Pausing (`autoresearch pause`, the dashboard) is a flag in the store, set from any process: a slot
reads it right before it takes an experiment (or the baseline), so while paused nothing new
starts on any slot; experiments already running finish and are judged as usual. Paused slots do
not count as idle, so agents keep only the usual `ahead` stock. The main thread reads the flag
every WAIT_S to tell the observer and to wake the slots on a resume. The flag outlives the
process: a research run paused when it starts stays paused, and says so.
"""
from __future__ import annotations

import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Callable, Protocol

from autoresearch.agents.base import Agent
from autoresearch.core.config import ParallelConfig
from autoresearch.core.errors import ResearchError
from autoresearch.core.events import Observer
from autoresearch.core.records import Experiment, Pause, Status
from autoresearch.run.slots import Slot
from autoresearch.store.ledger import Ledger

WAIT_S = 0.5  # how often waiting threads look at the stop event and the deadline, the main thread at the pause flag
MAX_REJECTIONS_IN_A_ROW = 25  # an agent that only produces invalid proposals is stopped


@dataclass
class Limits:
    max_experiments: int | None = None  # runs (not rejected proposals) in this invocation
    max_hours: float | None = None


class Coordinator(Protocol):
    """What the scheduler drives (research.coordinator.Research): it decides, the scheduler times."""

    tag: str
    ledger: Ledger
    observer: Observer
    stop_event: threading.Event
    stop_reason: str  # why running experiments were stopped, when not by the user
    agents: list[Agent]
    slots: list[Slot]
    parallel: ParallelConfig

    def propose(self, agent: Agent) -> Experiment | None: ...
    def baseline(self, slot: Slot) -> Experiment: ...
    def process(self, exp_id: int, slot: Slot) -> Experiment: ...


class Scheduler:
    def __init__(self, research: Coordinator, limits: Limits):
        self.r, self.limits = research, limits
        self.slots = research.slots
        self.ahead = research.parallel.ahead * len(self.slots)
        self.deadline = time.time() + limits.max_hours * 3600 if limits.max_hours else None
        self.cv = threading.Condition()
        self.ready: deque[int] = deque()  # queued experiment ids, oldest first
        self.idle = 0  # slots waiting for work
        self.thinking = 0  # agents proposing right now
        self.admitted = 0  # experiments counted against max_experiments (the baseline included)
        self.proposers = len(research.agents)  # agents still proposing
        self.runs = 0
        self.error: BaseException | None = None
        self.timed_out = False
        self.based = False  # whether the baseline is kept: until then slots only wait
        self.paused: Pause | None = None  # the store's pause flag as last read (_read_pause)

    # -- the whole run ------------------------------------------------------------------------

    def run(self) -> int:
        r = self.r
        self.based = r.ledger.best(r.tag) is not None
        if self._read_pause():
            r.observer.message(f"research run {r.tag} is paused (since {_clock(self.paused.started_at)}, by "
                               f"{self.paused.source}): nothing starts until it is resumed (`autoresearch resume`, "
                               "or the dashboard)")
        if not self.based:
            if self._should_stop():
                return 0
            self.admitted = 1
        queued = [e.id for e in r.ledger.experiments(r.tag, (Status.QUEUED,))]
        if queued:
            r.observer.message(f"resuming {len(queued)} queued proposal(s): {', '.join(f'#{i}' for i in queued)}")
        self.ready.extend(queued)
        self.admitted += len(queued)
        threads = [threading.Thread(target=self._guarded, args=(self._slot_loop, slot), name=f"slot-{slot.name}",
                                    daemon=True) for slot in self.slots]
        threads += [threading.Thread(target=self._guarded, args=(self._propose_loop, agent), daemon=True,
                                     name=f"agent-{agent.name}-{i}") for i, agent in enumerate(r.agents)]
        for t in threads:
            t.start()
        for t in threads:
            while t.is_alive():
                t.join(WAIT_S)
                self._read_pause()  # tells the observer, and wakes the slots on a resume
        if self.error is not None:
            raise self.error
        return self.runs

    def _guarded(self, loop: Callable, arg) -> None:
        try:
            loop(arg)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread, which raises it
            with self.cv:
                if self.error is None:
                    self.error = e
                    where = f"agent {arg.name}" if loop == self._propose_loop else f"slot {arg.name}"
                    self.r.stop_reason = f"stopped because {where} failed: {type(e).__name__}: {str(e)[:200]}"
                    self.r.stop_event.set()  # running experiments end as interrupted, with that reason
                self.cv.notify_all()

    def _should_stop(self) -> bool:
        if self.r.stop_event.is_set() or self.error is not None:
            return True
        if self.deadline and time.time() >= self.deadline:
            if not self.timed_out:  # said once, by whoever notices first
                self.timed_out = True
                self.r.observer.message("time limit reached")
            return True
        return False

    def _room(self) -> bool:
        """Whether an agent should think now: a slot is (or soon will be) without work. A paused
        slot is not waiting for work: while paused, agents fill only the `ahead` stock."""
        limit = self.limits.max_experiments
        if limit is not None and self.admitted + self.thinking >= limit:
            return False
        return len(self.ready) + self.thinking < (0 if self.paused else self.idle) + self.ahead

    def _read_pause(self) -> bool:
        """Read the store's pause flag now (another process may have set it); on a change, tell the
        observer and wake every waiting thread. True while paused."""
        pause = self.r.ledger.paused(self.r.tag)
        with self.cv:
            if (pause is None) != (self.paused is None):
                self.r.observer.paused(pause)
                self.cv.notify_all()
            self.paused = pause
        return pause is not None

    # -- agents -------------------------------------------------------------------------------

    def _propose_loop(self, agent: Agent) -> None:
        rejections = 0
        try:
            while True:
                with self.cv:
                    while not self._should_stop() and not self._room():
                        if self._limit_reached() and self.admitted <= self.runs:  # all decided: no room to come
                            return
                        self.cv.wait(WAIT_S)
                    if self._should_stop():
                        return
                    self.thinking += 1
                try:
                    exp = self.r.propose(agent)
                finally:
                    with self.cv:
                        self.thinking -= 1
                        self.cv.notify_all()
                if exp is None:
                    return
                if exp.status == Status.REJECTED:
                    rejections += 1
                    if rejections >= MAX_REJECTIONS_IN_A_ROW:
                        raise ResearchError(f"agent {agent.name} produced {rejections} invalid proposals "
                                            f"in a row; last: {exp.reason}")
                    continue
                rejections = 0
                with self.cv:
                    self.ready.append(exp.id)
                    self.admitted += 1
                    self.cv.notify_all()
        finally:
            with self.cv:
                self.proposers = max(0, self.proposers - 1)
                self.cv.notify_all()

    def _limit_reached(self) -> bool:
        limit = self.limits.max_experiments
        return limit is not None and self.admitted >= limit

    # -- slots --------------------------------------------------------------------------------

    def _baseline(self, slot: Slot) -> None:
        """The unmodified base first, on one slot; agents propose against it meanwhile."""
        exp = self.r.baseline(slot)  # raises when the baseline fails: nothing to build on
        with self.cv:
            self.runs += 1
            if exp.status == Status.KEEP:
                self.based = True
            else:  # interrupted: whatever the agents queued stays queued for the next run
                self.r.stop_event.set()
            self.cv.notify_all()

    def _slot_loop(self, slot: Slot) -> None:
        if not self.based and slot == self.slots[0]:
            with self.cv:
                while self._read_pause():  # not even the baseline starts while paused
                    if self._should_stop():
                        return
                    self.cv.wait(WAIT_S)
            self._baseline(slot)
        while True:
            with self.cv:
                self.idle += 1
                self.cv.notify_all()
                try:
                    # The flag is read last, fresh: only when there is work to take, right before taking it.
                    while not self.ready or not self.based or self._read_pause():
                        if self._should_stop() or (not self.ready and self.proposers == 0 and self.thinking == 0):
                            return
                        self.cv.wait(WAIT_S)
                    if self.r.stop_event.is_set() or self.error is not None:
                        return  # queued experiments stay queued for the next run
                    exp_id = self.ready.popleft()
                finally:
                    self.idle -= 1
            exp = self.r.process(exp_id, slot)
            with self.cv:
                if exp.status == Status.QUEUED:  # its worker was lost: run it again, first
                    self.ready.appendleft(exp_id)
                elif exp.status != Status.REJECTED:
                    self.runs += 1
                else:  # dropped unrun (e.g. nothing left after a rebase): not an experiment, make room
                    self.admitted -= 1
                self.cv.notify_all()


def _clock(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(t))
