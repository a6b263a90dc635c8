"""The ledger: durable rows, ideas, results.tsv in the original format."""
from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from autoresearch.core.records import Experiment
from autoresearch.store.ledger import Ledger, LedgerError


def test_rows_ideas_and_results_tsv(tmp_path: Path):
    ledger = Ledger(tmp_path / "state" / "ledger.db")
    assert ledger.db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    a = ledger.start_experiment(tag="t", parent_commit="a" * 40, agent="baseline", description="baseline")
    ledger.update(a, commit="b" * 40)
    ledger.finish(a, "keep", metric=1.5, metrics={"val_bpb": 1.5, "peak_memory_mb": 2048.0}, peak_mem_mb=2048.0)
    idea = ledger.add_idea("try a bigger model")
    b = ledger.start_experiment(tag="t", parent_commit="b" * 40, agent="search", description="tab\there",
                                idea_id=idea, params={"LR": 0.1})
    ledger.update(b, commit="c" * 40)
    ledger.finish(b, "discard", metric=1.6)
    ledger.mark_idea(idea, b, "discard: worse")
    ledger.start_experiment(tag="t", parent_commit="b" * 40, agent="search", description="still running")
    ledger.close()

    # A new connection (another process) sees everything.
    again = Ledger(tmp_path / "state" / "ledger.db")
    exps = again.experiments("t")
    assert [e.status for e in exps] == ["keep", "discard", "running"]
    assert exps[1].params == {"LR": 0.1} and exps[0].metrics["val_bpb"] == 1.5
    assert again.best("t").id == a
    assert again.ideas("tried")[0].outcome == "discard: worse"
    again.write_results_tsv(tmp_path / "results.tsv", "t", "val_bpb")
    lines = (tmp_path / "results.tsv").read_text().splitlines()
    assert lines == ["commit\tval_bpb\tmemory_gb\tstatus\tdescription",
                     "bbbbbbb\t1.500000\t2.0\tkeep\tbaseline",
                     "ccccccc\t1.600000\t0.0\tdiscard\ttab here"]
    assert sqlite3.connect(tmp_path / "state" / "ledger.db").execute("SELECT COUNT(*) FROM experiments").fetchone()[0] == 3


def test_corrupt_file_is_a_ledger_error_not_a_traceback(tmp_path: Path):
    db = tmp_path / ".autoresearch" / "ledger.db"
    db.parent.mkdir()
    db.write_bytes(b"\x00garbage" * 1000)
    with pytest.raises(LedgerError, match="is corrupt") as err:
        Ledger(db)
    assert err.value.path == db and "autoresearch doctor" in str(err.value)


def test_restore_keeps_the_id_and_later_ids_follow(tmp_path: Path):
    ledger = Ledger(tmp_path / "ledger.db")
    ledger.restore(Experiment(id=7, tag="t", parent_commit="a" * 40, commit="b" * 40, agent="x", description="d",
                              status="keep", metrics={"m": 1.0}, created_at=1.0, finished_at=2.0))
    assert ledger.get(7).commit == "b" * 40 and ledger.get(7).metrics == {"m": 1.0} and ledger.best("t").id == 7
    assert ledger.start_experiment(tag="t", parent_commit="b" * 40, agent="x", description="next") == 8
    with pytest.raises(ValueError, match="unknown status"):
        ledger.restore(Experiment(id=9, tag="t", parent_commit="a", commit=None, agent="x", description="d",
                                  status="kept"))


def test_update_takes_only_experiment_fields(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "ledger.db")
    exp_id = ledger.start_experiment(tag="t", parent_commit="p", agent="a", description="d")
    with pytest.raises(ValueError, match="not fields of an experiment"):
        ledger.update(exp_id, **{"status = 'keep', metric": 0})  # a name that would be SQL
    with pytest.raises(ValueError, match="not fields"):
        ledger.update(exp_id, id=5)
    ledger.update(exp_id, commit="c1", metric=1.5)
    assert ledger.get(exp_id).commit == "c1" and ledger.get(exp_id).metric == 1.5
