"""Which Ray node a work unit should run on: the node a shard-to-node map names for its file, else the host that
serves the file's network mount when that host is a node of the cluster, else Ray's default strategy (which already
prefers nodes holding the task's arguments).

The map file (`--ray-nodes FILE`, JSON or YAML) maps a file name, or an absolute path prefix, to a node: its Ray node
id, IP address or host name. A mapped file runs only on its node (hard affinity: the bytes are there and nowhere
else); a mount's host is a preference (soft affinity: any node can read a network mount).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from attest.errors import InputError
from attest.executor import ClusterError
from attest.strict_yaml import load_yaml

MAX_MAP_BYTES = 16 * 1024 * 1024
NETWORK_FS = frozenset({"nfs", "nfs4", "cifs", "smb3", "glusterfs", "ceph", "fuse.sshfs", "9p"})


@dataclass(frozen=True)
class Node:
    node_id: str
    address: str  # IP
    hostname: str


@dataclass(frozen=True)
class Placement:
    node_id: str | None  # None: Ray's default strategy
    soft: bool


DEFAULT = Placement(None, True)


def load_node_map(path: Path) -> dict[str, str]:
    """file name or absolute path prefix -> node (id, IP or host name)."""
    try:
        if path.stat().st_size > MAX_MAP_BYTES:
            raise InputError(path, f"node map larger than {MAX_MAP_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(path, "node map is not UTF-8 text") from None
    data = load_yaml(text, path, "node map", allow_aliases=False)  # JSON is YAML too
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise InputError(path, "node map must be an object of file name or path prefix -> node id, IP or host name")
    return dict(data)


def network_hosts(mounts: str = "/proc/mounts") -> list[tuple[str, str]]:
    """(mount point, serving host) of the network file systems mounted here, longest mount point first."""
    out = []
    try:
        lines = Path(mounts).read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return []
    for line in lines:
        parts = line.split()
        if len(parts) < 3 or parts[2] not in NETWORK_FS:
            continue
        source, point = parts[0], parts[1].replace("\\040", " ")
        host = source[2:].split("/", 1)[0] if source.startswith("//") else source.split(":", 1)[0]
        if host and host != source:
            out.append((point, host))
    return sorted(out, key=lambda x: -len(x[0]))


class NodeLocator:
    """Placement of a unit from the first file it reads (a Ray node; attest.lineage.locator finds model folders)."""

    def __init__(self, nodes: list[Node], node_map: Mapping[str, str] | None = None, mounts: str = "/proc/mounts"):
        self.nodes = nodes
        self.node_map = dict(node_map or {})
        self.mounts = network_hosts(mounts)
        self._resolved: dict[str, str | None] = {}

    def node_of(self, name: str) -> str | None:
        """The alive node with this id, IP or host name (host names are also resolved to an IP)."""
        if name not in self._resolved:
            hit = next((n.node_id for n in self.nodes if name in (n.node_id, n.address, n.hostname)), None)
            if hit is None:
                try:
                    ip = socket.gethostbyname(name)
                except (OSError, UnicodeError):
                    ip = None
                hit = next((n.node_id for n in self.nodes if ip is not None and n.address == ip), None)
            self._resolved[name] = hit
        return self._resolved[name]

    def _mapped(self, file: str) -> str | None:
        name = PurePosixPath(file).name
        if name in self.node_map:
            return self.node_map[name]
        prefixes = [p for p in self.node_map if os.path.isabs(p) and _under(file, p)]
        return self.node_map[max(prefixes, key=len)] if prefixes else None

    def place(self, file: str) -> Placement:
        named = self._mapped(file)
        if named is not None:
            node = self.node_of(named)
            if node is None:
                alive = ", ".join(f"{n.hostname} ({n.address})" for n in self.nodes) or "none"
                raise ClusterError(
                    f"node {named!r} that the node map names for {file} is not alive in the cluster (alive: {alive})"
                )
            return Placement(node, soft=False)
        for point, host in self.mounts:
            if _under(file, point):
                node = self.node_of(host)
                return Placement(node, soft=True) if node is not None else DEFAULT
        return DEFAULT


def _under(file: str, prefix: str) -> bool:
    return file == prefix or file.startswith(prefix.rstrip("/") + "/")
