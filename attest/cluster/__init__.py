"""Running attest's work units on a Ray cluster (attest-weights[ray]): RayExecutor implements attest.executor's
Executor; the library's hash, replay and detect take it and return the same roots and reports as in one process."""

from attest.cluster.locality import NodeLocator, Placement, load_node_map
from attest.cluster.ray_executor import RayExecutor

__all__ = ["NodeLocator", "Placement", "RayExecutor", "load_node_map"]
