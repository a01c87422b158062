"""The layer-copy check on samples (SPEC.md §6.6): what a layer's sample holds, and when a layer counts as a copy."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from attest.checkpoint.reader import Checkpoint
from attest.forensics.layer_match import LAYER_SAMPLE, RUN_MIN, _layer_samples, copied_layers

PROJS = ("q_proj", "k_proj", "v_proj", "o_proj")


def _folder(root: Path, tensors: dict[str, torch.Tensor]) -> Checkpoint:
    root.mkdir(parents=True)
    save_file(tensors, str(root / "model.safetensors"))
    return Checkpoint(root, with_config=False)


def _layers(seed: int, n_layers: int = 2, experts: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {"model.embed_tokens.weight": torch.randn(32, 16, generator=g)}
    for i in range(n_layers):
        for proj in PROJS:
            out[f"model.layers.{i}.self_attn.{proj}.weight"] = torch.randn(64, 512, generator=g)
        out[f"model.layers.{i}.input_layernorm.weight"] = torch.randn(16, generator=g)
        for e in range(experts):
            out[f"model.layers.{i}.mlp.experts.{e}.gate_proj.weight"] = torch.randn(8, 16, generator=g)
    return out


def _trained_passthrough(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """b's layer 1 then a's layer 0, each changed by noise 1% of its scale (training after a passthrough)."""
    g = torch.Generator().manual_seed(3)
    model = {k: v.clone() for k, v in a.items()}
    for suffix in [f"self_attn.{p}.weight" for p in PROJS] + ["input_layernorm.weight"]:
        for j, src in ((0, b[f"model.layers.1.{suffix}"]), (1, a[f"model.layers.0.{suffix}"])):
            model[f"model.layers.{j}.{suffix}"] = src + 0.01 * torch.randn(src.shape, generator=g)
    return model


def test_routed_experts_are_left_out_and_the_sample_is_bounded(tmp_path: Path) -> None:
    """A layer's sample is a few runs of each tensor, within LAYER_SAMPLE elements (plus RUN_MIN per tiny tensor);
    routed experts are left out of a layer that has other tensors (a 397B MoE has 10^5 of them)."""
    table = _folder(tmp_path / "m", _layers(0, experts=200))
    layers = _layer_samples(table)
    assert sorted(layers) == [0, 1]
    layer = layers[0]
    assert [s for s, _ in layer.sig] == ["model.layers.input_layernorm.weight"] + [
        f"model.layers.self_attn.{p}.weight" for p in sorted(PROJS)
    ]
    assert 16 < sum(len(x) for x in layer.samples) <= LAYER_SAMPLE + 4 * RUN_MIN


def test_a_renumbered_copy_with_small_changes_maps_and_a_mix_does_not(tmp_path: Path) -> None:
    a, b = _layers(1), _layers(2)
    ca, cb = _folder(tmp_path / "a", a), _folder(tmp_path / "b", b)
    model = _trained_passthrough(a, b)
    copies = copied_layers(_folder(tmp_path / "m", model), [ca, cb])
    assert copies is not None and 0 < copies.worst_margin < 0.01
    assert [(m.model_layer, m.candidate, m.candidate_layer) for m in copies.mapping] == [(0, 1, 1), (1, 0, 0)]
    # the element-wise mean of a and b is about as near to both: no layer is a copy
    even = {k: (a[k] + b[k]) / 2 for k in a}
    assert copied_layers(_folder(tmp_path / "even", even), [ca, cb]) is None


def test_one_outlier_element_or_another_dtype_does_not_hide_the_copies(tmp_path: Path) -> None:
    """Review finding: with a pooled sum of squares one element set to 1e3 (or NaN) made every candidate layer as far
    as any other, and a model saved as F16 against F32 candidates matched no layer; the score is now a median over
    the layer's tensors of each tensor's mean squared difference at finite positions, and dtype is not compared."""
    a, b = _layers(1), _layers(2)
    ca, cb = _folder(tmp_path / "a", a), _folder(tmp_path / "b", b)
    model = _trained_passthrough(a, b)
    model["model.layers.1.input_layernorm.weight"][3] = 1e3
    model["model.layers.0.self_attn.q_proj.weight"][0, 0] = float("nan")
    for name, tensors in (("outlier", model), ("f16", {k: v.half() for k, v in model.items()})):
        copies = copied_layers(_folder(tmp_path / name, tensors), [ca, cb])
        assert copies is not None, name
        assert [(m.model_layer, m.candidate, m.candidate_layer) for m in copies.mapping] == [(0, 1, 1), (1, 0, 0)]


def test_an_exact_tie_is_no_copy(tmp_path: Path) -> None:
    """Review finding: a layer bit-identical in two candidates (distances 0 and 0) counted as a copy of whichever
    candidate came first, so the verdict depended on the candidates' order."""
    a = _layers(1)
    b = {k: v.clone() for k, v in a.items()}
    b["model.layers.1.self_attn.q_proj.weight"] += 0.5
    ca, cb = _folder(tmp_path / "a", a), _folder(tmp_path / "b", b)
    model = {k: v.clone() for k, v in a.items()}
    model["model.layers.1.self_attn.q_proj.weight"] += 0.01
    assert copied_layers(_folder(tmp_path / "m", model), [cb, ca]) is None
    assert copied_layers(_folder(tmp_path / "m2", model), [ca, cb]) is None
