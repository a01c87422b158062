"""The fused expert view (attest.merge.moe_layout.FusedExpertView) holds each fused tensor's parts as positions in
the parent's name index: the fused tensor is still the stored per-expert tensors concatenated expert by expert."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from attest.checkpoint.reader import Checkpoint
from attest.merge.moe_layout import FusedExpertView, fused_views


def test_fused_tensors_are_the_stored_experts_in_order(
    moe_models: Callable[[str], dict[str, Path]], tmp_path: Path
) -> None:
    src = moe_models("mixtral")["ft_a"]
    folder = tmp_path / "sharded"
    shutil.copytree(src, folder)
    stored = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    names = sorted(stored)
    half = len(names) // 2  # two shards, so a fused tensor's parts come from both files
    save_file({n: stored[n] for n in names[:half]}, folder / "a.safetensors", metadata={"format": "pt"})
    save_file({n: stored[n] for n in names[half:]}, folder / "b.safetensors", metadata={"format": "pt"})
    with Checkpoint(folder) as ckpt:
        view = fused_views({"m": ckpt}, "mergekit")["m"]
        assert isinstance(view, FusedExpertView)
        fused = [n for n in view.names if n.endswith(("gate_up_proj", "down_proj"))]
        assert fused and not any(".experts.0." in n for n in view.names)
        files = set()
        for name in fused:
            head = name.rsplit(".experts.", 1)[0].replace(".mlp", ".block_sparse_moe")
            count = view.info(name).shape[0]
            projs = ["w2"] if name.endswith("down_proj") else ["w1", "w3"]
            expected = torch.stack(
                [torch.cat([stored[f"{head}.experts.{e}.{p}.weight"] for p in projs]) for e in range(count)]
            )
            assert torch.equal(view.load(name), expected) and view.info(name).shape == tuple(expected.shape)
            files.update(view.files_of(name))
        assert files == {str((folder / f).resolve()) for f in ("a.safetensors", "b.safetensors")}
