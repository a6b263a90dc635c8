"""Durable state: the ledger (SQLite, WAL) of every experiment, run and idea."""
