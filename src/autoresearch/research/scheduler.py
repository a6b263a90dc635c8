"""Keep every slot busy: agents propose ahead while experiments run.

One thread per agent proposes (think, validate, commit, queue) and one thread per slot runs what
is queued (rebase if the best moved, run, judge, record). Agents think while experiments run and
keep `ahead` proposals per slot in stock (ready, or being thought), so a slot that finishes takes
its next experiment at once: with `ahead = 2`, one is ready even when an agent thinks as long as an
experiment runs. With `ahead = 0` an agent proposes only for an idle slot (the serial loop of the
original autoresearch). Agents also think while the baseline runs.

The threads share one condition variable; the Research object's lock keeps the ledger and the
branch consistent. The first error in any thread stops the others and is raised by `run()`.
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
from autoresearch.core.records import Experiment, Status
from autoresearch.run.slots import Slot
from autoresearch.store.ledger import Ledger

WAIT_S = 0.5  # how often waiting threads look at the stop event and the deadline
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

    # -- the whole run ------------------------------------------------------------------------

    def run(self) -> int:
        r = self.r
        self.based = r.ledger.best(r.tag) is not None
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
        """Whether an agent should think now: a slot is (or soon will be) without work."""
        limit = self.limits.max_experiments
        if limit is not None and self.admitted + self.thinking >= limit:
            return False
        return len(self.ready) + self.thinking < self.idle + self.ahead

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
            self._baseline(slot)
        while True:
            with self.cv:
                self.idle += 1
                self.cv.notify_all()
                try:
                    while not self.ready or not self.based:
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
