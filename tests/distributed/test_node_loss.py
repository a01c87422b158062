"""A node that leaves the cluster mid-run fails the command with a clear error and exit 2, and prints no root."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.distributed import node_loss


@pytest.mark.slow
def test_a_node_that_disappears_fails_the_run(ray_cluster: object, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path.cwd()), os.environ.get("PYTHONPATH", "")])}
    run = subprocess.run(
        [sys.executable, node_loss.__file__, str(tmp_path)], capture_output=True, text=True, timeout=300, env=env
    )
    lines = [x for x in run.stdout.splitlines() if x.startswith('{"code"')]
    assert lines, run.stdout[-2000:] + run.stderr[-2000:]
    result = json.loads(lines[-1])
    assert result["code"] == 2, result
    assert result["stdout"] == ""  # no root, not even part of one
    assert "cluster:" in result["stderr"] and "model.safetensors" in result["stderr"], result["stderr"]
