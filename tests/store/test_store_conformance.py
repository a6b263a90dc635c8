"""The SQLite ledger passes the store conformance suite (autoresearch.testing.store)."""
from __future__ import annotations

from pathlib import Path

from autoresearch.store.ledger import Ledger
from autoresearch.testing.store import StoreConformance


class TestLedgerConformance(StoreConformance):
    def make_store(self, path: Path) -> Ledger:
        return Ledger(path / "state" / "ledger.db")
