"""A two-node Ray cluster on this machine whose worker node is removed while `attest hash --ray` reads a shard of
4000 tensors pinned to it (--ray-nodes). Run as a script (its own Ray processes, apart from the session's cluster);
prints one JSON line: the command's exit code, stdout and stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import ray
from ray.cluster_utils import Cluster


def many_tensors(folder: str, n: int = 4000) -> str:
    """A checkpoint of n small tensors in one shard (n work units at 16 KiB each)."""
    import numpy as np
    from safetensors.numpy import save_file

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    save_file({f"t.{i}": rng.standard_normal(4096, dtype=np.float32) for i in range(n)}, f"{folder}/model.safetensors")
    return "model.safetensors"


def main(workdir: str) -> None:
    folder = os.path.join(workdir, "model")
    shard = many_tensors(folder)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    node = cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    node_map = os.path.join(workdir, "nodes.json")
    with open(node_map, "w") as fh:
        json.dump({shard: node.node_id}, fh)
    env = {**os.environ, "ATTEST_UNIT_BYTES": str(16 * 1024)}  # thousands of tasks: the node leaves mid-run
    cmd = [sys.executable, "-m", "attest", "hash", folder, "--json", "--no-cache", "--ray", cluster.address]
    proc = subprocess.Popen([*cmd, "--ray-nodes", node_map], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    ray.init(address=cluster.address, log_to_driver=False)
    deadline = time.monotonic() + 120
    while ray.available_resources().get("CPU", 0) >= 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # until the command's tasks run
    time.sleep(1.0)
    cluster.remove_node(node, allow_graceful=False)
    out, err = proc.communicate(timeout=120)
    print(json.dumps({"code": proc.returncode, "stdout": out.decode()[:2000], "stderr": err.decode()[-2000:]}))
    ray.shutdown()
    cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1])
