"""Test suites for implementations of autoresearch's interfaces; import them from your own tests.

Each suite is a pytest test class whose factory a subclass overrides (in the spirit of Optuna's
storage tests): `store.StoreConformance` for a ledger, `backend.BackendConformance` for a backend.
A subclass named `Test...` in a test module runs the whole suite against that implementation:
passing it is what "behaves like the built-in one" means. Nothing in the package imports this
(the layers contract in pyproject.toml); pytest is the one dependency it adds.
"""
