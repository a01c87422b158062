"""--ray's edges: without Ray installed, a unit that needs more memory than any node, --ray-nodes alone."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from attest.cluster import RayExecutor
from attest.executor import ClusterError, WorkUnit
from tests.distributed.faults import refuse
from tests.support.cli import run_attest as run_inprocess


def test_ray_option_without_ray_installed_exits_2(minilm_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` now fails as it does without the extra
    code, out, err = run_inprocess(["hash", minilm_dir, "--json", "--ray", "local"])
    assert (code, out) == (2, "")
    assert 'pip install "attest-weights[ray]"' in err


def test_ray_nodes_without_ray_is_a_usage_error(minilm_dir: Path, tmp_path: Path) -> None:
    code, _, err = run_inprocess(["hash", minilm_dir, "--ray-nodes", tmp_path / "nodes.yaml"])
    assert code == 2 and "--ray-nodes needs --ray" in err


def test_a_unit_larger_than_any_node_is_refused_before_it_runs(ray_cluster: object) -> None:
    """Ray would keep such a task pending forever; each unit asks for its largest tensor's memory."""
    with RayExecutor("auto") as ex, pytest.raises(ClusterError, match="more than the largest node offers"):
        ex.map("test", refuse, [WorkUnit("x", ("x",), 1, 1, 1 << 60)])
