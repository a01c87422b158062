"""attest.forensics.hints: the passthrough layer mapping on digests alone."""

from __future__ import annotations

from attest.forensics.digests import shared_digests
from attest.forensics.hints import Mapping, layer_mapping


def _d(*parts: object) -> bytes:
    return "|".join(map(str, parts)).encode().ljust(32, b".")


def _model(layers: dict[int, object], extra: dict[str, bytes] | None = None) -> dict[str, bytes]:
    out = {"model.embed_tokens.weight": _d("embed")}
    for i, tag in layers.items():
        for t in ("self_attn.q_proj.weight", "mlp.up_proj.weight", "input_layernorm.weight"):
            # norms are identical everywhere (all ones): the same digest in every layer of every model
            out[f"model.layers.{i}.{t}"] = _d("norm") if "norm" in t else _d(tag, t)
    return out | (extra or {})


def test_renumbered_layers_map_to_their_sources() -> None:
    a = _model({0: "a0", 1: "a1", 2: "a2"})
    b = _model({0: "b0", 1: "b1"})
    merged = _model({0: "a0", 1: "b1", 2: "a1", 3: "b0"})
    mapping, non_layer_ok, n_layers, cand_layers = layer_mapping(merged, [a, b], shared_digests(merged, [a, b]))
    assert mapping == [Mapping(0, 0, 0), Mapping(1, 1, 1), Mapping(2, 0, 1), Mapping(3, 1, 0)]
    assert non_layer_ok and n_layers == 4 and cand_layers == [3, 2]


def test_a_merged_layer_maps_nowhere_even_with_identical_norms() -> None:
    """Only the norms equal a candidate's: that layer is not a copy (and the index is never built for it)."""
    a, b = _model({0: "a0", 1: "a1"}), _model({0: "b0", 1: "b1"})
    merged = _model({0: "a0", 1: "mix1"}, {"lm_head.weight": _d("new head")})
    mapping, non_layer_ok, n_layers, _ = layer_mapping(merged, [a, b], shared_digests(merged, [a, b]))
    assert mapping == [Mapping(0, 0, 0)] and n_layers == 2
    assert not non_layer_ok  # lm_head equals no candidate's


def test_same_index_preferred_among_identical_sources() -> None:
    a = _model({0: "x", 1: "x"})  # two identical layers in the candidate
    merged = _model({0: "x", 1: "x"})
    mapping, _, _, _ = layer_mapping(merged, [a], shared_digests(merged, [a]))
    assert mapping == [Mapping(0, 0, 0), Mapping(1, 0, 1)]
