"""Test suites for implementations of autoresearch's interfaces; import them from your own tests.

Each suite is a pytest test class whose factory a subclass overrides (in the spirit of Optuna's
storage tests): `store.StoreConformance` for a ledger, `backend.BackendConformance` for a backend.
A subclass named `Test...` in a test module runs the whole suite against that implementation:
passing it is what "behaves like the built-in one" means. Nothing in the package imports this
(the layers contract in pyproject.toml); pytest is the one dependency it adds.
"""
from __future__ import annotations

import time

import psutil


def process_gone(pid: int, timeout: float = 10.0, poll_s: float = 0.02) -> bool:
    """Whether `pid` stops being a live process within `timeout` (a zombie waiting for a
    non-reaping init counts as gone): how the suites and tests check that a run left nothing."""
    end = time.monotonic() + timeout
    while True:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        if time.monotonic() > end:
            return False
        time.sleep(poll_s)
