"""The one tensor reader and the layout-canonical view (SPEC.md §1.10) on real safetensors files."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from attest.checkpoint.canonical import CanonicalView, expert_of
from attest.checkpoint.reader import Checkpoint
from attest.errors import InputError
from attest.forensics.pairing import layer_of

E, INTER, HIDDEN = 3, 5, 4


def _experts(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for e in range(E):
        out[f"model.layers.0.mlp.experts.{e}.gate_proj.weight"] = torch.randn(INTER, HIDDEN, generator=g)
        out[f"model.layers.0.mlp.experts.{e}.up_proj.weight"] = torch.randn(INTER, HIDDEN, generator=g)
        out[f"model.layers.0.mlp.experts.{e}.down_proj.weight"] = torch.randn(HIDDEN, INTER, generator=g)
    out["model.layers.0.mlp.gate.weight"] = torch.randn(E, HIDDEN, generator=g)
    return out


def _fused(per: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    p = "model.layers.0.mlp.experts"
    gate_up = torch.stack(
        [torch.cat([per[f"{p}.{e}.gate_proj.weight"], per[f"{p}.{e}.up_proj.weight"]]) for e in range(E)]
    )
    down = torch.stack([per[f"{p}.{e}.down_proj.weight"] for e in range(E)])
    return {
        f"{p}.gate_up_proj": gate_up,
        f"{p}.down_proj": down,
        "model.layers.0.mlp.gate.weight": per["model.layers.0.mlp.gate.weight"],
    }


def _folder(path: Path, tensors: dict[str, torch.Tensor]) -> Path:
    path.mkdir()
    save_file(tensors, str(path / "model.safetensors"))
    return path


def test_fused_view_equals_per_expert_tensors(tmp_path: Path) -> None:
    per = _experts()
    with Checkpoint(_folder(tmp_path / "fused", _fused(per)), with_config=False) as ck:
        view = CanonicalView(ck)
        assert view.fused and len(view.relayouts) == 2
        assert sorted(view.names) == sorted(per)
        for name, want in per.items():
            got = view.load(name)
            assert got.shape == want.shape and torch.equal(got, want), name
        assert (
            view.stored_of["model.layers.0.mlp.experts.1.up_proj.weight"] == "model.layers.0.mlp.experts.gate_up_proj"
        )
        # Lazy: each canonical tensor is a range of the stored fused tensor's bytes, not a copy.
        _, info = view.where["model.layers.0.mlp.experts.2.down_proj.weight"]
        _, stored = ck.where["model.layers.0.mlp.experts.down_proj"]
        assert stored.begin <= info.begin < info.end == stored.end
    with Checkpoint(_folder(tmp_path / "per", per), with_config=False) as ck2:
        view2 = CanonicalView(ck2)
        assert not view2.fused and sorted(view2.names) == sorted(per)
        assert view2.where is ck2.where  # read as stored: no entry copied (~0.35 KB per tensor at 10^5 tensors)
        assert (
            view2.stored_of["model.layers.0.mlp.experts.1.up_proj.weight"]
            == "model.layers.0.mlp.experts.1.up_proj.weight"
        )


def test_both_layouts_of_the_same_experts_is_bad_input(tmp_path: Path) -> None:
    per = _experts()
    both = {**per, **_fused(per)}
    with Checkpoint(_folder(tmp_path / "both", both), with_config=False) as ck, pytest.raises(InputError, match="both"):
        CanonicalView(ck)


def _mixtral(per: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The same experts under Mixtral's stored names (block_sparse_moe, w1 / w3 / w2)."""
    w = {"gate_proj": "w1", "up_proj": "w3", "down_proj": "w2"}
    out = {}
    for name, t in per.items():
        name = name.replace(".mlp.", ".block_sparse_moe.")
        for proj, short in w.items():
            name = name.replace(f".{proj}.weight", f".{short}.weight")
        out[name] = t.clone()
    return out


def test_mixtral_names_read_as_the_canonical_expert_names(tmp_path: Path) -> None:
    per = _experts()
    with Checkpoint(_folder(tmp_path / "mixtral", _mixtral(per)), with_config=False) as ck:
        view = CanonicalView(ck)
        assert sorted(view.names) == sorted(per) and view.renamed == len(per)
        assert "Mixtral" in view.layout
        for name, want in per.items():
            assert torch.equal(view.load(name), want), name
        assert view.stored_of["model.layers.0.mlp.experts.1.up_proj.weight"] == (
            "model.layers.0.block_sparse_moe.experts.1.w3.weight"
        )
    with Checkpoint(_folder(tmp_path / "both", {**per, **_mixtral(per)}), with_config=False) as ck2:
        with pytest.raises(InputError, match="two copies"):
            CanonicalView(ck2)


def test_fused_shapes_that_do_not_fit_stay_stored(tmp_path: Path) -> None:
    t = _fused(_experts())
    t["model.layers.0.mlp.experts.down_proj"] = t["model.layers.0.mlp.experts.down_proj"].transpose(1, 2).contiguous()
    with Checkpoint(_folder(tmp_path / "odd", t), with_config=False) as ck:
        view = CanonicalView(ck)
        assert not view.fused
        assert "model.layers.0.mlp.experts.gate_up_proj" in view.names
        assert view.notes and "unrecognised shape" in view.notes[0]


def test_reader_refuses_a_file_replaced_after_the_scan(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = _folder(tmp_path / "m", _experts())
    import attest.checkpoint.reader as reader

    real_scan = reader.scan_folder

    def scan_then_replace(path: Path) -> object:
        scan = real_scan(path)
        f = folder / "model.safetensors"
        data = f.read_bytes()
        f.unlink()
        f.write_bytes(data)  # same size and header, another inode
        os.utime(f, ns=(1, 1))
        return scan

    monkeypatch.setattr(reader, "scan_folder", scan_then_replace)
    with pytest.raises(InputError, match="changed after the folder was scanned"):
        Checkpoint(folder)


def test_layer_of_takes_the_first_number_not_the_expert_index() -> None:
    """Regression: `model.layers.1.mlp.experts.0.*` is layer 1 (the expert index came out as the layer)."""
    key = layer_of("model.layers.1.mlp.experts.0.gate_proj.weight")
    assert key is not None and key.index == 1 and key.suffix == "mlp.experts.0.gate_proj.weight"
    ek = expert_of("model.layers.1.mlp.experts.0.gate_proj.weight")
    assert ek is not None and ek.expert == 0 and ek.expert_name == "model.layers.1.mlp.experts.0"


def _mapped_kb(path: Path) -> int:
    """Resident kB of this process's mappings of `path` (Linux /proc/self/smaps)."""
    total, inside = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            inside = line.rstrip().endswith(str(path))
        elif inside and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


@pytest.mark.skipif(not Path("/proc/self/smaps").exists(), reason="needs Linux /proc")
def test_released_small_tensors_do_not_stay_resident(tmp_path: Path) -> None:
    """Regression: touching a small tensor maps its whole fault-around block, already released neighbours included;
    read one by one, a model of 4 KiB tensors stayed almost entirely resident (memory grew with the model)."""
    tensors = {f"t.{i:05d}": torch.full((1024,), float(i)) for i in range(2048)}  # 2048 x 4 KiB = 8 MiB
    folder = _folder(tmp_path / "small", tensors)
    with Checkpoint(folder, with_config=False) as ck:
        for name in sorted(ck.names, key=lambda n: ck.info(n).begin):
            assert float(ck.flat(name).sum()) == 1024 * float(int(name[2:]))
            ck.release(name)
        resident = _mapped_kb(folder / "model.safetensors")
        assert resident < 1024, resident
