"""Where units run: the node a --ray-nodes map names (hard affinity), the host serving a network mount (soft), Ray's
default otherwise; a map naming a node that is not in the cluster is refused before anything runs."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console
from rich.progress import Progress

from attest.cli.cluster import ClusterProgress
from attest.cluster import NodeLocator, RayExecutor, load_node_map
from attest.cluster.locality import Node, network_hosts
from attest.errors import InputError
from attest.executor import ClusterError, InProcess, WorkUnit
from attest.identity import hash_model

NODES = [Node("a" * 56, "10.0.0.1", "alpha"), Node("b" * 56, "10.0.0.2", "beta")]


def test_map_by_file_name_and_by_path_prefix_is_hard_affinity(tmp_path: Path) -> None:
    node_map = {"model-00002-of-00002.safetensors": "beta", "/data/a/": "10.0.0.1"}
    loc = NodeLocator(NODES, node_map, mounts="/nonexistent")
    assert loc.place("/x/model-00002-of-00002.safetensors") == loc.place("/y/model-00002-of-00002.safetensors")
    assert loc.place("/x/model-00002-of-00002.safetensors").node_id == "b" * 56
    assert not loc.place("/x/model-00002-of-00002.safetensors").soft
    assert loc.place("/data/a/m.safetensors").node_id == "a" * 56
    assert loc.place("/data/ab/m.safetensors").node_id is None  # a prefix is a folder, not a string prefix


def test_a_mapped_node_not_in_the_cluster_is_refused() -> None:
    loc = NodeLocator(NODES, {"m.safetensors": "gamma.invalid"}, mounts="/nonexistent")
    with pytest.raises(ClusterError, match=r"gamma.invalid.*not alive.*alpha \(10.0.0.1\)"):
        loc.place("/x/m.safetensors")


def test_a_network_mount_prefers_its_host_softly(tmp_path: Path) -> None:
    mounts = tmp_path / "mounts"
    mounts.write_text(
        "10.0.0.2:/export/models /mnt/models nfs4 rw 0 0\n"
        "//alpha/share /mnt/share cifs rw 0 0\n"
        "/dev/sda1 / ext4 rw 0 0\n"
    )
    assert network_hosts(str(mounts)) == [("/mnt/models", "10.0.0.2"), ("/mnt/share", "alpha")]
    loc = NodeLocator(NODES, None, mounts=str(mounts))
    assert loc.place("/mnt/models/q/model.safetensors").node_id == "b" * 56
    assert loc.place("/mnt/models/q/model.safetensors").soft
    assert loc.place("/mnt/share/x.safetensors").node_id == "a" * 56
    assert loc.place("/home/x.safetensors").node_id is None


def test_node_map_file_is_checked(tmp_path: Path) -> None:
    good = tmp_path / "nodes.json"
    good.write_text(json.dumps({"model.safetensors": "10.0.0.1"}))
    assert load_node_map(good) == {"model.safetensors": "10.0.0.1"}
    bad = tmp_path / "bad.yaml"
    bad.write_text("- just\n- a list\n")
    with pytest.raises(InputError, match=r"bad\.yaml: node map must be an object"):
        load_node_map(bad)


def test_hard_affinity_to_the_real_node_gives_the_same_root(
    ray_cluster: object, minilm_dir: Path, tmp_path: Path
) -> None:
    with RayExecutor("auto") as probe:
        node = probe.nodes()[0]
    node_map = tmp_path / "nodes.yaml"
    node_map.write_text(f"model.safetensors: {node.node_id}\n")
    with RayExecutor("auto", node_map=node_map) as ex:
        assert ex.locator.place(str(minilm_dir / "model.safetensors")).node_id == node.node_id
        assert hash_model(minilm_dir, executor=ex) == hash_model(minilm_dir)


def test_cluster_progress_counts_tensors_and_bytes() -> None:
    out = io.StringIO()
    with Progress(console=Console(file=out, force_terminal=True, width=100)) as bar:
        progress = ClusterProgress(bar)
        units = [WorkUnit(i, ("f",), 1000, 2, 0) for i in range(3)]
        InProcess(progress).map("hashing", lambda i: i, units)
        (task,) = bar.tasks
        assert (task.completed, task.total, task.fields["tensors"]) == (3000, 3000, "6/6 tensors")
