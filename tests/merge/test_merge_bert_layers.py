"""BERT-style checkpoints (`encoder.layer.N.*`, as in all-MiniLM-L6-v2) merge and replay layer by layer.

mergekit 0.1.5 cannot plan BERT (its architecture file's aliases are tuples: TypeError); attest's planner reads
`layer.N` as a layer index like `layers.N`, which examples/case_2026.py relies on.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.cli import run_attest


def _tiny_bert(out: Path, seed: int) -> Path:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(seed)
    cfg = transformers.BertConfig(
        vocab_size=128, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64
    )
    transformers.BertModel(cfg).save_pretrained(out, safe_serialization=True)
    return out


def test_linear_merge_of_bert_layers_replays_bit_for_bit(tmp_path: Path) -> None:
    a, b = _tiny_bert(tmp_path / "a", 0), _tiny_bert(tmp_path / "b", 1)
    cfg = tmp_path / "merge.yml"
    cfg.write_text(
        f"merge_method: linear\nmodels:\n  - model: {a}\n    parameters: {{weight: 1.0}}\n"
        f"  - model: {b}\n    parameters: {{weight: 0.75}}\ndtype: float32\n"
    )
    code, out, err = run_attest(["merge", cfg, tmp_path / "m"])
    assert code == 0, err
    assert "2 layers" in out
    code, out, err = run_attest(["replay", cfg, tmp_path / "m"])
    assert code == 0, out + err
    assert "bit for bit" in out
