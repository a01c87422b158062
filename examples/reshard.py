"""Re-shard a safetensors checkpoint into N shards (tensor order shuffled) with a model.safetensors.index.json.

Used by the demo and the tests to show that identity does not depend on sharding. Copies every non-weight file.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
from pathlib import Path

from safetensors import safe_open
from safetensors.torch import save_file


def reshard(src: Path, dst: Path, shards: int, seed: int = 0) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for f in sorted(src.glob("*.safetensors")):
        with safe_open(f, "pt") as fh:
            for k in fh.keys():
                tensors[k] = fh.get_tensor(k)
    names = list(tensors)
    random.Random(seed).shuffle(names)
    weight_map = {}
    groups = [names[i::shards] for i in range(shards)]
    for i, group in enumerate(groups):
        fname = f"model-{i + 1:05d}-of-{shards:05d}.safetensors" if shards > 1 else "model.safetensors"
        save_file({k: tensors[k].contiguous() for k in group}, dst / fname, metadata={"format": "pt", "shard": str(i)})
        weight_map.update(dict.fromkeys(group, fname))
    if shards > 1:
        total = sum(t.numel() * t.element_size() for t in tensors.values())
        (dst / "model.safetensors.index.json").write_text(
            json.dumps({"metadata": {"total_size": total}, "weight_map": weight_map}, indent=2)
        )
    for p in src.rglob("*"):
        rel = p.relative_to(src)
        if p.is_file() and not p.name.endswith(".safetensors") and not p.name.endswith(".safetensors.index.json"):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(p, dst / rel)
    return dst


if __name__ == "__main__":
    reshard(Path(sys.argv[1]), Path(sys.argv[2]), int(sys.argv[3]))
