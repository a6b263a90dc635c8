"""StoreConformance: the ledger's written contract (store/ledger.py's docstring), as tests.

A store is what `autoresearch.store.ledger.Ledger` is to the coordinator: experiments, their runs,
ideas, meta values and the pauses of research runs, durable and shared by threads (and, for the
pause flag, by processes: `autoresearch pause` and the dashboard set it beside a running loop).
Subclass the suite and override `make_store`; the same folder must open the same store again (that
is how durability is checked):

    class TestMyStore(StoreConformance):
        def make_store(self, path: Path) -> Ledger:
            return MyStore(path / "my.db")

Every test looks only at what the public calls return, never at the store's files or tables.
"""
from __future__ import annotations

import dataclasses
import os
import threading
import time
from pathlib import Path
from typing import Iterator

import pytest

from autoresearch.core.records import FINISHED, STATUSES, Experiment, Run, Status
from autoresearch.store.ledger import Ledger

THREADS, PER_THREAD = 4, 50  # concurrent writers x experiments each: enough to interleave on 2 cores
C1, C2, C3 = "1" * 40, "2" * 40, "3" * 40  # commits (the store only keeps them)


class StoreConformance:
    """The tests every store passes; `make_store` is the one method to override."""

    def make_store(self, path: Path) -> Ledger:
        """A store kept in the folder `path` (it exists, and is empty the first time); called again
        with the same folder, it opens what is there."""
        raise NotImplementedError("subclass StoreConformance and return your store from make_store")

    @pytest.fixture
    def store(self, tmp_path: Path) -> Iterator[Ledger]:
        s = self.make_store(tmp_path)
        yield s
        s.close()

    def start(self, store: Ledger, tag: str = "t", description: str = "d", **kw: object) -> int:
        return store.start_experiment(tag=tag, parent_commit=C1, agent="a", description=description, **kw)

    # -- experiments ----------------------------------------------------------------------------

    def test_start_experiment_defaults(self, store: Ledger) -> None:
        before = time.time()
        exp_id = store.start_experiment(tag="t", parent_commit=C1, agent="search", description="bigger LR")
        exp = store.get(exp_id)
        assert exp is not None and exp.id == exp_id
        assert (exp.tag, exp.parent_commit, exp.base_commit, exp.agent, exp.description) == \
            ("t", C1, C1, "search", "bigger LR")
        assert exp.status == "running" and exp.commit is None and exp.metric is None and exp.finished_at is None
        assert exp.params == {} and exp.info == {} and exp.metrics == {}
        assert before - 1 <= exp.created_at <= time.time() + 1
        queued = self.start(store, status="queued", params={"LR": 0.1}, info={"n": 1})
        assert store.get(queued).status == "queued"
        assert (store.get(queued).params, store.get(queued).info) == ({"LR": 0.1}, {"n": 1})

    def test_every_field_round_trips(self, store: Ledger) -> None:
        values = dict(
            tag="t", parent_commit=C1, commit=C2, agent="llm", description="tab\there, ünïcode ✓", status="discard",
            idea_id=3, params={"LR": 0.1, "layers": [1, 2], "deep": {"a": None}}, info={"why": "x", "lost": 1},
            files_changed=2, insertions=10, deletions=4, reason="worse than the best", metric=1.25,
            metrics={"score": 1.25, "peak_memory_mb": 13.5}, exit_code=-9, wall_s=12.5, peak_mem_mb=2048.25,
            log_path="logs/t/1.0.log", log_tail="line\nscore: 1.25", lines_delta=-6, content_hash="ab" * 32,
            created_at=1000.5, finished_at=1012.75, base_commit=C3, slot="gpu0")
        # A field added to Experiment must be added here: the suite checks every one.
        assert set(values) == {f.name for f in dataclasses.fields(Experiment)} - {"id"}
        exp_id = self.start(store)
        store.update(exp_id, **values)
        assert store.get(exp_id) == Experiment(id=exp_id, **values)
        store.update(exp_id, metric=None, commit=None, metrics={})
        assert store.get(exp_id) == Experiment(id=exp_id, **{**values, "metric": None, "commit": None, "metrics": {}})

    def test_update_refuses_unknown_fields_and_statuses(self, store: Ledger) -> None:
        exp_id = self.start(store)
        before = store.get(exp_id)
        with pytest.raises(ValueError):
            store.update(exp_id, status="kept")
        with pytest.raises(ValueError):
            store.update(exp_id, id=99)
        with pytest.raises(ValueError):
            store.update(exp_id, **{"status = 'keep', metric": 0})
        assert store.get(exp_id) == before
        store.update(exp_id)  # nothing to set: nothing changes
        assert store.get(exp_id) == before

    def test_ids_are_new_and_increasing_and_get_of_none_is_none(self, store: Ledger) -> None:
        ids = [self.start(store, description=str(i)) for i in range(5)]
        assert ids == sorted(set(ids))
        assert [store.get(i).description for i in ids] == ["0", "1", "2", "3", "4"]
        assert store.get(max(ids) + 1000) is None

    def test_every_status_is_stored_and_counted(self, store: Ledger) -> None:
        ids = {status: self.start(store) for status in STATUSES}
        for status, exp_id in ids.items():
            store.update(exp_id, status=Status(status))
        self.start(store, tag="other")
        for status, exp_id in ids.items():
            assert store.get(exp_id).status == status
            assert store.count("t", status) == 1
        assert store.count("t", "running") == 1 and store.count("other", "running") == 1
        assert store.count("nope", "keep") == 0

    def test_finish_sets_status_fields_and_time(self, store: Ledger) -> None:
        exp_id = self.start(store)
        before = time.time()
        store.finish(exp_id, "crash", reason="exit code 1", exit_code=1)
        exp = store.get(exp_id)
        assert (exp.status, exp.reason, exp.exit_code) == ("crash", "exit code 1", 1)
        assert exp.finished_at is not None and before - 1 <= exp.finished_at <= time.time() + 1

    def test_best_is_the_latest_keep_not_the_highest_id(self, store: Ledger) -> None:
        assert store.best("t") is None
        a, b, c = (self.start(store, description=x) for x in "abc")
        store.finish(a, "keep", metric=3.0)
        assert store.best("t").id == a
        store.finish(b, "discard", metric=4.0)
        assert store.best("t").id == a
        store.finish(c, "keep", metric=2.0)
        store.finish(b, "keep", metric=1.0)  # an older experiment kept last (parallel slots)
        assert store.best("t").id == b
        assert [e.id for e in store.kept("t")] == [a, c, b]
        other = self.start(store, tag="other")
        store.finish(other, "keep")
        assert store.best("t").id == b and store.best("other").id == other

    def test_keeps_are_ordered_when_the_clock_stands_still(self, store: Ledger,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
        ids = [self.start(store) for _ in range(3)]
        monkeypatch.setattr(time, "time", lambda: 1_000_000.0)
        for exp_id in reversed(ids):
            store.finish(exp_id, "keep")
        assert store.best("t").id == ids[0]
        assert [e.id for e in store.kept("t")] == ids[::-1]
        times = [store.get(i).finished_at for i in reversed(ids)]
        assert times == sorted(set(times))

    def test_experiments_by_tag_and_status_in_id_order(self, store: Ledger) -> None:
        a = self.start(store)
        b = self.start(store, tag="other")
        c = self.start(store, status="queued")
        d = self.start(store)
        store.finish(d, "keep")
        store.finish(a, "discard")
        assert [e.id for e in store.experiments("t")] == [a, c, d]
        assert [e.id for e in store.experiments()] == [a, b, c, d]
        assert [e.id for e in store.experiments("t", ("keep", "queued"))] == [c, d]
        assert [e.id for e in store.experiments("t", FINISHED)] == [a, d]  # Status members work as well
        assert [e.id for e in store.experiments(statuses=("running",))] == [b]
        assert store.experiments("nope") == [] and store.experiments("t", ("timeout",)) == []
        assert store.experiments("t")[2] == store.get(d)

    def test_find_content(self, store: Ledger) -> None:
        ids = [self.start(store) for _ in range(4)]
        for exp_id, status in zip(ids, ("discard", "rejected", "running", "keep")):
            store.update(exp_id, status=status, content_hash="h1")
        elsewhere = self.start(store, tag="other")
        store.update(elsewhere, content_hash="h2", status="keep")
        assert store.find_content("t", "h1").id == ids[0]
        assert store.find_content("t", "h1", exclude=ids[0]).id == ids[2]  # rejected ones are not duplicates
        assert store.find_content("t", "h1", statuses=("rejected",)).id == ids[1]
        assert store.find_content("t", "h1", statuses=("keep",)) == store.get(ids[3])
        assert store.find_content("t", "h2") is None and store.find_content("other", "h2").id == elsewhere
        assert store.find_content("t", "h3") is None

    def test_tags_in_order_of_their_first_experiment(self, store: Ledger) -> None:
        assert store.tags() == []
        for tag in ("b", "a", "b", "c", "a"):
            self.start(store, tag=tag)
        assert store.tags() == ["b", "a", "c"]

    def test_restore_keeps_the_id_and_later_ids_follow(self, store: Ledger) -> None:
        exp = Experiment(id=7, tag="t", parent_commit=C1, commit=C2, agent="x", description="d", status="keep",
                         metrics={"m": 1.0}, params={"p": 1}, created_at=1.0, finished_at=2.0, slot="cpu0")
        store.restore(exp)
        assert store.get(7) == exp and store.best("t") == exp
        assert self.start(store) > 7
        with pytest.raises(ValueError):
            store.restore(dataclasses.replace(exp, id=9, status="kept"))
        assert store.get(9) is None

    # -- runs -----------------------------------------------------------------------------------

    def test_runs_round_trip_in_id_order(self, store: Ledger) -> None:
        exp_id, other = self.start(store), self.start(store, tag="other")
        before = time.time()
        r1 = store.add_run(exp_id, "primary", "ok", metric=1.5, metrics={"score": 1.5}, wall_s=2.5, peak_mem_mb=12.0,
                           log_path="logs/t/1.0.log", slot="cpu0", started_at=100.0)
        r2 = store.add_run(exp_id, "noise", "crash")
        r3 = store.add_run(other, "primary", "ok", metric=9.0)
        assert r1 < r2 < r3
        runs = store.runs(exp_id)
        assert [r.id for r in runs] == [r1, r2]
        assert before - 1 <= runs[0].created_at <= time.time() + 1
        assert runs[0] == Run(id=r1, experiment_id=exp_id, kind="primary", status="ok", metric=1.5,
                              metrics={"score": 1.5}, wall_s=2.5, peak_mem_mb=12.0, log_path="logs/t/1.0.log",
                              created_at=runs[0].created_at, slot="cpu0", started_at=100.0)
        assert runs[1] == Run(id=r2, experiment_id=exp_id, kind="noise", status="crash", created_at=runs[1].created_at)
        assert [r.id for r in store.all_runs("t")] == [r1, r2] and [r.id for r in store.all_runs("other")] == [r3]
        assert store.runs(exp_id + 1000) == []

    def test_run_values_and_groups_are_the_ok_metrics(self, store: Ledger) -> None:
        a, b, c = self.start(store), self.start(store), self.start(store)
        elsewhere = self.start(store, tag="other")
        for exp_id, status, metric in ((a, "ok", 1.0), (b, "ok", 5.0), (a, "crash", 7.0), (a, "ok", None),
                                       (a, "ok", 3.0), (c, "ok", 4.0), (b, "timeout", None), (a, "ok", 2.0),
                                       (elsewhere, "ok", 1.0), (elsewhere, "ok", 1.0)):
            store.add_run(exp_id, "noise", status, metric=metric)
        assert store.run_values(a) == [1.0, 3.0, 2.0]
        assert store.run_values(b) == [5.0] and store.run_values(a + 1000) == []
        assert store.run_groups("t") == [[1.0, 3.0, 2.0]]  # an experiment with one ok value is no group
        store.add_run(c, "confirm", "ok", metric=4.5)
        assert store.run_groups("t") == [[1.0, 3.0, 2.0], [4.0, 4.5]]
        assert store.run_groups("other") == [[1.0, 1.0]]

    def test_supersede_runs(self, store: Ledger) -> None:
        a, b = self.start(store), self.start(store)
        ok = store.add_run(a, "primary", "ok", metric=1.0)
        crash = store.add_run(a, "noise", "crash")
        store.add_run(a, "noise", "ok", metric=1.1)
        kept = store.add_run(b, "primary", "ok", metric=2.0)
        store.add_run(b, "noise", "ok", metric=2.1)
        store.supersede_runs(a)
        assert [r.status for r in store.runs(a)] == ["superseded", "crash", "superseded"]
        assert store.runs(a)[0].id == ok and store.runs(a)[1].id == crash and store.runs(a)[0].metric == 1.0
        assert store.run_values(a) == [] and store.run_groups("t") == [[2.0, 2.1]]
        assert store.runs(b)[0].id == kept and store.run_values(b) == [2.0, 2.1]
        after = store.add_run(a, "primary", "ok", metric=0.5)  # the rebased commit's runs count again
        assert store.run_values(a) == [0.5] and store.runs(a)[-1].id == after

    def test_run_curves_and_groups_are_the_ok_curves(self, store: Ledger) -> None:
        a, b, elsewhere = self.start(store), self.start(store), self.start(store, tag="other")
        c1, c2 = [[0.5, {"loss": 2.5}], [1.0, {"loss": 2.0, "acc": 0.5}]], [[0.3, {"loss": 2.75}]]
        store.add_run(a, "primary", "ok", 1.0, curve=c1)
        store.add_run(a, "primary", "pruned", curve=c2)  # not ok: not a curve to compare with
        store.add_run(a, "noise", "ok", 1.1)  # no curve
        store.add_run(b, "primary", "ok", 2.0, curve=c2)
        store.add_run(elsewhere, "primary", "ok", 2.0, curve=c1)
        store.add_run(elsewhere, "noise", "ok", 2.0, curve=c2)
        assert [r.curve for r in store.runs(a)] == [c1, c2, []]
        assert store.run_curves(a) == [c1] and store.run_curves(b) == [c2] and store.run_curves(a + 1000) == []
        assert store.curve_groups("t") == []  # an experiment with one ok curve is no group
        store.add_run(a, "confirm", "ok", 1.2, curve=c2)
        assert store.curve_groups("t") == [[c1, c2]] and store.curve_groups("other") == [[c1, c2]]
        store.supersede_runs(a)
        assert store.run_curves(a) == [] and store.curve_groups("t") == []

    # -- ideas and meta -------------------------------------------------------------------------

    def test_ideas(self, store: Ledger) -> None:
        assert store.ideas() == []
        first = store.add_idea("  try a bigger model \n")
        second = store.add_idea("warmup", source="agent")
        with pytest.raises(ValueError):
            store.add_idea(" \n\t")
        assert first < second
        ideas = store.ideas()
        assert [(i.id, i.text, i.source, i.status) for i in ideas] == \
            [(first, "try a bigger model", "human", "open"), (second, "warmup", "agent", "open")]
        assert ideas[0].experiment_id is None and ideas[0].outcome is None and ideas[0].created_at > 0
        exp_id = self.start(store, idea_id=second)
        store.mark_idea(second, exp_id, "discard: worse")
        assert [i.id for i in store.ideas("open")] == [first]
        tried = store.ideas("tried")
        assert [(i.id, i.status, i.experiment_id, i.outcome) for i in tried] == \
            [(second, "tried", exp_id, "discard: worse")]
        assert store.get(exp_id).idea_id == second

    def test_meta(self, store: Ledger) -> None:
        assert store.get_meta("best_sha") is None and store.get_meta("best_sha", "none") == "none"
        store.set_meta("best_sha", C1)
        store.set_meta("other", "x")
        store.set_meta("best_sha", C2)
        assert store.get_meta("best_sha") == C2 and store.get_meta("other", "y") == "x"

    # -- pauses ---------------------------------------------------------------------------------

    def test_pause_and_resume(self, store: Ledger) -> None:
        assert store.paused("t") is None and store.pauses("t") == [] and store.resume("t") is None
        before = time.time()
        first = store.pause("t", source="cli")
        assert (first.tag, first.source, first.ended_at) == ("t", "cli", None)
        assert before - 1 <= first.started_at <= time.time() + 1
        assert store.pause("t", source="dashboard") == first  # paused already: the same pause
        assert store.paused("t") == first and store.paused("other") is None
        other = store.pause("other", source="dashboard")
        ended = store.resume("t")
        assert ended is not None and ended.id == first.id and ended.ended_at >= first.started_at
        assert store.paused("t") is None and store.resume("t") is None  # resumed once
        assert store.paused("other") == other  # each research run its own
        second = store.pause("t")
        assert second.id > first.id and second.source == "human" and second.ended_at is None
        assert store.pauses("t") == [ended, second]

    def test_a_pause_is_seen_by_another_store_on_the_same_folder(self, tmp_path: Path) -> None:
        """What a running loop relies on: `autoresearch pause` opens the store anew (another process)."""
        loop, cli = self.make_store(tmp_path), self.make_store(tmp_path)
        try:
            assert loop.paused("t") is None
            made = cli.pause("t", source="cli")
            assert loop.paused("t") == made and loop.pause("t") == made
            cli.resume("t")
            assert loop.paused("t") is None and [p.ended_at is not None for p in loop.pauses("t")] == [True]
        finally:
            cli.close()
            loop.close()

    # -- checks ---------------------------------------------------------------------------------

    def test_checks(self, store: Ledger) -> None:
        exp_id = self.start(store)
        first = store.add_check("t", "ablation", exp_id, {"label": "without #1"}, direction="maximize")
        other = store.add_check("u", "transfer", None, {"budget_s": 60})
        store.add_check_pair(first, 1.0, 0.5)
        store.add_check_pair(first, 1.25, 0.75)
        store.note_check(other, "the variant run failed")
        (check,) = store.checks("t")
        assert (check.id, check.kind, check.experiment_id, check.setting) == (first, "ablation", exp_id,
                                                                              {"label": "without #1"})
        assert check.pairs == [[1.0, 0.5], [1.25, 0.75]] and check.direction == "maximize"
        assert check.gain == 0.5  # maximize: the best without the change scores 0.5 lower
        assert [c.id for c in store.checks()] == [first, other] and store.checks("u")[0].note.startswith("the variant")
        assert first < other

    # -- durability and threads -----------------------------------------------------------------

    def test_what_was_written_is_there_after_reopening(self, tmp_path: Path) -> None:
        store = self.make_store(tmp_path)
        exp_id = self.start(store, params={"LR": 0.1})
        store.update(exp_id, commit=C2, content_hash="h")
        store.finish(exp_id, "keep", metric=1.5, metrics={"score": 1.5})
        queued = self.start(store, status="queued")
        run_id = store.add_run(exp_id, "primary", "ok", metric=1.5, slot="cpu0")
        idea = store.add_idea("an idea")
        store.mark_idea(idea, exp_id, "keep")
        store.set_meta("k", "v")
        store.pause("t", source="cli")
        written = (store.experiments(), store.runs(exp_id), store.ideas(), store.pauses("t"))
        store.close()
        again = self.make_store(tmp_path)
        try:
            assert (again.experiments(), again.runs(exp_id), again.ideas(), again.pauses("t")) == written
            assert again.paused("t") == written[3][0]  # paused stays paused
            assert again.best("t").id == exp_id and again.get(queued).status == "queued"
            assert again.runs(exp_id)[0].id == run_id and again.get_meta("k") == "v" and again.tags() == ["t"]
            assert self.start(again) > queued  # ids go on from where they were
        finally:
            again.close()

    def test_threads_writing_at_once_lose_nothing(self, store: Ledger) -> None:
        barrier = threading.Barrier(THREADS + 1)
        made: dict[int, list[int]] = {}
        errors: list[BaseException] = []

        def write(n: int) -> None:
            try:
                barrier.wait()
                made[n] = []
                for i in range(PER_THREAD):
                    exp_id = self.start(store, description=f"{n}.{i}")
                    made[n].append(exp_id)
                    if i % 10 == 0:
                        store.add_run(exp_id, "primary", "ok", metric=float(n))
            except BaseException as e:  # reported below, in the test's thread
                errors.append(e)

        def read() -> None:  # a reader at the same time: the coordinator's UI and agents do this
            try:
                barrier.wait()
                while any(t.is_alive() for t in writers):
                    store.experiments("t")
            except BaseException as e:
                errors.append(e)

        writers = [threading.Thread(target=write, args=(n,)) for n in range(THREADS)]
        reader = threading.Thread(target=read)
        for t in (*writers, reader):
            t.start()
        for t in (*writers, reader):
            t.join(120)
        assert not errors, errors
        ids = [i for n in range(THREADS) for i in made[n]]
        assert len(set(ids)) == THREADS * PER_THREAD
        rows = store.experiments("t")
        assert sorted(e.id for e in rows) == sorted(ids)
        assert {e.id: e.description for e in rows} == \
            {exp_id: f"{n}.{i}" for n in range(THREADS) for i, exp_id in enumerate(made[n])}
        assert all(made[n] == sorted(made[n]) for n in range(THREADS))  # each thread's ids increase
        assert len(store.all_runs("t")) == THREADS * PER_THREAD // 10

    # -- results.tsv ----------------------------------------------------------------------------

    def test_write_results_tsv(self, store: Ledger, tmp_path: Path) -> None:
        out = tmp_path / "out"
        out.mkdir()
        path = out / "results.tsv"
        base = self.start(store, description="baseline")
        store.update(base, commit=C2)
        store.finish(base, "keep", metric=1.5, peak_mem_mb=2048.0)
        for status in ("running", "queued", "rejected", "interrupted"):
            store.update(self.start(store, description=status), status=status)
        worse = self.start(store, description="tab\there\nand  a   newline")
        store.update(worse, commit=C3)
        store.finish(worse, "discard", metric=1.6)
        crashed = self.start(store, description="oom")  # no commit recorded: its parent's
        store.finish(crashed, "crash")
        self.start(store, tag="other", description="elsewhere")
        store.write_results_tsv(path, "t", "val_bpb")
        assert path.read_text().splitlines() == [
            "commit\tval_bpb\tmemory_gb\tstatus\tdescription",
            "2222222\t1.500000\t2.0\tkeep\tbaseline",
            "3333333\t1.600000\t0.0\tdiscard\ttab here and a newline",
            "1111111\t0.000000\t0.0\tcrash\toom"]
        assert path.read_text().endswith("\n")
        store.update(worse, status="timeout")
        store.write_results_tsv(path, "t", "score")
        lines = path.read_text().splitlines()
        assert lines[0].startswith("commit\tscore\t") and lines[2].split("\t")[3] == "timeout" and len(lines) == 4
        assert os.listdir(out) == ["results.tsv"]  # replaced in place, no temporary file left
        store.write_results_tsv(path, "nope", "score")
        assert path.read_text() == "commit\tscore\tmemory_gb\tstatus\tdescription\n"
