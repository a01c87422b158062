"""Elementwise merges of tensors larger than SLICE_ELEMENTS run slice by slice (attest.merge.engine.MergedTensor):
a fused expert tensor is read, merged, written or compared a slice at a time, never held whole, with the same bits
as merging it whole. SLICE_ELEMENTS is set small here so that the tiny real MoE models' fused tensors are sliced,
with slices that cut through experts and projections."""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file, save_file

import attest.merge.engine as engine
from attest.merge import parse_recipe, run_merge
from attest.merge.moe_layout import FusedExpertView
from attest.merge.writer import ShardedWriter
from attest.replay import TensorStatus, Verdict, replay
from tests.support.mergekit_peer import differing_tensors

MergekitMoe = Callable[[str, str], tuple[str, Path]]
SMALL_SLICE = 1000  # not a divisor of an expert's 64 x 64 gate/up or 64 x 32 down block
WHOLE = 1 << 40
FUSED = "model.layers.1.mlp.experts.gate_up_proj"


def _parents(text: str) -> dict[str, str]:
    return {ref: ref for ref in parse_recipe(text).referenced_models()}


def _tampered(merged: Path, out: Path) -> Path:
    """A copy of the merge with one element of a fused tensor (in its third slice) changed by one ulp."""
    shutil.copytree(merged, out)
    tensors = load_file(out / "model.safetensors")
    assert tensors[FUSED].dtype == torch.bfloat16
    tensors[FUSED].reshape(-1).view(torch.int16)[2 * SMALL_SLICE + 7] += 1
    save_file(tensors, out / "model.safetensors", metadata={"format": "pt"})
    return out


@pytest.mark.parametrize("arch", ["qwen3_moe", "mixtral"])
def test_sliced_fused_merge_and_replay_are_the_whole_tensor_path_bit_for_bit(
    arch: str, mergekit_moe: MergekitMoe, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    text, by_mergekit = mergekit_moe(arch, "linear")
    recipe, parents = parse_recipe(text), _parents(text)
    bad = _tampered(by_mergekit, tmp_path / "tampered")
    outputs, rows = {}, {}
    for label, size in (("whole", WHOLE), ("sliced", SMALL_SLICE)):
        monkeypatch.setattr(engine, "SLICE_ELEMENTS", size)
        outputs[label] = run_merge(recipe, parents, tmp_path / label).output
        assert replay(recipe, parents, by_mergekit).verdict is Verdict.REPRODUCED
        report = replay(recipe, parents, bad)
        assert report.mismatched == [FUSED]
        rows[label] = next(r for r in report.tensors if r.name == FUSED)
    assert (outputs["sliced"] / "model.safetensors").read_bytes() == (
        outputs["whole"] / "model.safetensors"
    ).read_bytes()
    assert differing_tensors(outputs["sliced"], by_mergekit) == []
    assert rows["sliced"] == rows["whole"]
    assert rows["sliced"].status is TensorStatus.MISMATCH and rows["sliced"].differing_elements == 1
    assert rows["sliced"].max_ulps == 1


def _largest_held(arch: str, text: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, int]:
    """Merge with hooks on every place a fused tensor's working memory is made: the bytes read from the parents'
    per-expert tensors (the fused view's copies), the inputs a merge method gets (in the working dtype), the pieces
    written. The largest of each, in elements."""
    largest = {"read": 0, "merged": 0, "written": 0, "whole_loads": 0}
    real_read, real_load, real_write = FusedExpertView._read, FusedExpertView.load, ShardedWriter.write_pieces

    def read(self: FusedExpertView, name: str, fused: Any, begin: int, end: int) -> bytearray:
        largest["read"] = max(largest["read"], (end - begin) // self.dtype(name).itemsize)
        return real_read(self, name, fused, begin, end)

    def load(self: FusedExpertView, name: str) -> torch.Tensor:
        largest["whole_loads"] += name in self._plan.fused
        return real_load(self, name)

    def group(name: str, tensors: list[torch.Tensor], *args: Any) -> Any:
        largest["merged"] = max(largest["merged"], *(t.numel() for t in tensors))
        return engine_group(name, tensors, *args)

    def write(self: ShardedWriter, name: str, dtype: Any, shape: Any, pieces: Iterable[torch.Tensor]) -> None:
        def counted() -> Iterator[torch.Tensor]:
            for piece in pieces:
                largest["written"] = max(largest["written"], piece.numel())
                yield piece

        real_write(self, name, dtype, shape, counted())

    engine_group = engine.TensorGroup
    monkeypatch.setattr(FusedExpertView, "_read", read)
    monkeypatch.setattr(FusedExpertView, "load", load)
    monkeypatch.setattr(engine, "TensorGroup", group)
    monkeypatch.setattr(ShardedWriter, "write_pieces", write)
    run_merge(parse_recipe(text), _parents(text), tmp_path / f"{arch}-{engine.SLICE_ELEMENTS}")
    monkeypatch.undo()
    return largest


def test_a_fused_merge_never_holds_the_fused_tensor(
    mergekit_moe: MergekitMoe, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    text, by_mergekit = mergekit_moe("qwen3_moe", "linear")
    sizes = {n: t.numel() for n, t in load_file(by_mergekit / "model.safetensors").items()}
    assert sizes[FUSED] == 8 * 64 * 64 and sizes[FUSED] > 2 * 2048
    monkeypatch.setattr(engine, "SLICE_ELEMENTS", 2048)
    sliced = _largest_held("qwen3_moe", text, tmp_path, monkeypatch)
    assert sliced == {"read": 2048, "merged": 2048, "written": 2048, "whole_loads": 0}
    # The same hooks see the whole fused tensor when it is merged whole: they can fail.
    monkeypatch.setattr(engine, "SLICE_ELEMENTS", WHOLE)
    whole = _largest_held("qwen3_moe", text, tmp_path, monkeypatch)
    assert whole["read"] == sizes[FUSED] and whole["merged"] == whole["written"] == max(sizes.values())
    assert whole["whole_loads"] > 0
