"""LocalBackend, and RayBackend on a local Ray cluster, pass the backend conformance suite
(autoresearch.testing.backend). The Ray half skips without Ray; its cluster (one head node with two
CPUs, on 127.0.0.1) starts once for the class, ~5 s on 2 cores.
"""
from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Iterator

import pytest

from autoresearch.run.backends import Backend, LocalBackend
from autoresearch.run.slots import local_slots
from autoresearch.testing.backend import BackendConformance

RAY_CPUS = 2  # two slots, so that the concurrent-slots test runs two at once


class TestLocalBackendConformance(BackendConformance):
    def make_backend(self, repo: Path, state_dir: Path) -> Backend:
        return LocalBackend(repo, state_dir, local_slots(2))


@pytest.mark.skipif(importlib.util.find_spec("ray") is None, reason="needs ray (pip install 'autoresearch[ray]')")
class TestRayBackendConformance(BackendConformance):
    @pytest.fixture(scope="class", autouse=True)
    @classmethod
    def cluster(cls, tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
        import ray
        from ray.cluster_utils import Cluster

        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("HOME", str(tmp_path_factory.mktemp("ray-home")))  # inherited by the workers
            # Ray's single-machine mode: every node and address on 127.0.0.1 (as tests/run/test_ray_backend.py).
            mp.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
            mp.setattr(ray._private.ray_constants, "ENABLE_RAY_CLUSTER", False)
            cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": RAY_CPUS, "include_dashboard": False})
            try:
                ray.init(address=cluster.address, log_to_driver=False, logging_level=logging.WARNING)
                yield
            finally:
                ray.shutdown()
                cluster.shutdown()

    def make_backend(self, repo: Path, state_dir: Path) -> Backend:
        from autoresearch.run.ray_backend import RayBackend

        return RayBackend(repo, state_dir)
