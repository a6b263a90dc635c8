"""The one error base class, and the errors that cross layers.

Every error a user can cause or meet is an `AutoresearchError`: the command line prints its
message (where, what, and the fix) and exits non-zero, never a traceback. Errors owned by one
module stay there (ConfigError in config.py, GitError in gitops.py, LedgerError in ledger.py...)
and subclass this base; the ones raised in one layer and handled in another live here.
"""
from __future__ import annotations


class AutoresearchError(Exception):
    """Base of every error autoresearch raises on purpose."""

    exit_code = 2  # what the command line exits with


class ResearchError(AutoresearchError):
    """Research cannot go on (broken baseline, tampered frozen file, locked state...)."""

    exit_code = 1


class WorkerLost(AutoresearchError):
    """The worker running an experiment died (node lost, worker process killed): run it again."""
