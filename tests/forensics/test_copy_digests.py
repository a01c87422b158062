"""attest.forensics.digests.copy_digest / confirm_copies: detect's pass samples the large tensors instead of digesting
them whole, and only those whose sample the other side shares are digested whole after it; every comparison of a
model digest with a candidate digest still says what raw digests would. The tiny fixture models' tensors are all
under SAMPLED_ABOVE, so these tests use models 4x wider and synthetic folders."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from attest.checkpoint.canonical import CanonicalView
from attest.checkpoint.reader import SAMPLE_BYTES, Checkpoint
from attest.executor import InProcess
from attest.forensics import detect
from attest.forensics.digests import SAMPLED_ABOVE, DigestMap, NameIndex, confirm_copies, copy_digest
from attest.forensics.report import report_json_chunks
from tests.support.builders import make_tiny_model

LARGE = SAMPLED_ABOVE // 2 + 1024  # bf16 elements: just over SAMPLED_ABOVE bytes


def _folder(root: Path, tensors: dict[str, torch.Tensor]) -> Path:
    root.mkdir(parents=True)
    save_file(tensors, str(root / "model.safetensors"))
    return root


def _view(folder: Path) -> CanonicalView:
    return CanonicalView(Checkpoint(folder, with_config=False))


@pytest.fixture
def synthetic(tmp_path: Path) -> tuple[Path, Path]:
    g = torch.Generator().manual_seed(0)

    def big() -> torch.Tensor:
        return torch.randn(LARGE, generator=g).to(torch.bfloat16)

    shared, unique, other = big(), big(), big()
    near = other.clone()
    near[SAMPLE_BYTES] += 1.0  # an element between the sampled pages: same samples, other bytes
    small = torch.randn(64, generator=g).to(torch.bfloat16)
    model = _folder(tmp_path / "model", {"a": shared, "b": unique, "c": near, "s": small})
    cand = _folder(tmp_path / "cand", {"x": shared.clone(), "y": other, "s": small.clone(), "z": big()})
    return model, cand


def test_sample_digest_is_keyed_apart_and_follows_the_sampled_bytes(synthetic: tuple[Path, Path]) -> None:
    m, c = _view(synthetic[0]), _view(synthetic[1])
    assert m.sample_digest("a") == c.sample_digest("x")  # equal bytes under other names: equal samples
    assert m.raw_digest("a") == c.raw_digest("x")
    assert m.sample_digest("a") != m.raw_digest("a")
    assert m.sample_digest("c") == c.sample_digest("y")  # differs only between the sampled pages
    assert m.raw_digest("c") != c.raw_digest("y")
    assert m.sample_digest("b") != c.sample_digest("z")


def _maps(*views: CanonicalView) -> list[DigestMap]:
    """Each view's tensors as detect's pass records them: the paired names (those every view has) in a column, the
    others in the dict, each digest by copy_digest."""
    paired = sorted(set.intersection(*(set(v.names) for v in views)))
    index = NameIndex(paired)
    out = []
    for v in views:
        column = np.frombuffer(b"".join(copy_digest(v, n) for n in paired), np.uint8).reshape(len(paired), 32).copy()
        out.append(DigestMap(paired, index, column, {n: copy_digest(v, n) for n in v.names if n not in index}))
    return out


def test_confirm_digests_whole_only_what_the_other_side_shares(synthetic: tuple[Path, Path]) -> None:
    m, c = _view(synthetic[0]), _view(synthetic[1])
    assert copy_digest(m, "b") == m.sample_digest("b") and copy_digest(m, "s") == m.raw_digest("s")
    mdig, cdig = _maps(m, c)
    assert confirm_copies(mdig, [cdig], [m, c]) == 4  # a, c and x, y: equal samples
    assert mdig["a"] == cdig["x"] == m.raw_digest("a")
    assert mdig["c"] == m.raw_digest("c") != cdig["y"] == c.raw_digest("y")  # same samples, different bytes
    assert mdig["b"] == m.sample_digest("b") and cdig["z"] == c.sample_digest("z")  # no copy possible: kept
    assert mdig["s"] == cdig["s"] == m.raw_digest("s")  # small: always whole
    # every model digest equals a candidate digest exactly when the raw digests are equal
    for name in ("a", "b", "c", "s"):
        for other in ("x", "y", "s", "z"):
            assert (mdig[name] == cdig[other]) == (m.raw_digest(name) == c.raw_digest(other)), (name, other)


@pytest.fixture(scope="module")
def wide(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two independent tiny Qwen2 models of hidden 256 (MLP matrices of 256 KiB) and a passthrough frankenmerge of
    them written by mergekit 0.1.5: layer 0 from B's layer 1, layer 1 from A's layer 0."""
    mergekit_config = pytest.importorskip("mergekit.config")
    from mergekit.merge import MergeOptions, run_merge

    root = tmp_path_factory.mktemp("wide")
    a = make_tiny_model(root / "a", seed=11, hidden=256)
    b = make_tiny_model(root / "b", seed=12, hidden=256)
    cfg = {
        "merge_method": "passthrough",
        "dtype": "bfloat16",
        "slices": [
            {"sources": [{"model": str(b), "layer_range": [1, 2]}]},
            {"sources": [{"model": str(a), "layer_range": [0, 1]}]},
        ],
    }
    out = root / "passthrough"
    run_merge(
        mergekit_config.MergeConfiguration.model_validate(cfg),
        str(out),
        options=MergeOptions(copy_tokenizer=False, write_model_card=False, quiet=True),
    )
    return {"a": a, "b": b, "passthrough": out}


def test_passthrough_of_large_tensors_is_mapped(wide: dict[str, Path]) -> None:
    m, a, b = _view(wide["passthrough"]), _view(wide["a"]), _view(wide["b"])
    assert any(m.info(n).nbytes > SAMPLED_ABOVE for n in m.names)
    mdig, *cdig = _maps(m, a, b)
    assert confirm_copies(mdig, cdig, [m, a, b]) > 0
    assert mdig["model.layers.1.mlp.down_proj.weight"] == cdig[0]["model.layers.0.mlp.down_proj.weight"]  # A's 0
    assert mdig["model.layers.0.mlp.down_proj.weight"] == cdig[1]["model.layers.1.mlp.down_proj.weight"]  # B's 1
    report = detect(wide["passthrough"], [wide["a"], wide["b"]])
    mapping = {(x.model_layer, x.candidate, x.candidate_layer) for x in report.layer_mapping}
    assert mapping == {(0, str(wide["b"]), 1), (1, str(wide["a"]), 0)}
    assert report.hints[0].method == "passthrough"
    units = detect(wide["passthrough"], [wide["a"], wide["b"]], executor=InProcess())
    assert "".join(report_json_chunks(units)) == "".join(report_json_chunks(report))


def test_a_copy_changed_between_the_sampled_pages_is_no_copy(wide: dict[str, Path], tmp_path: Path) -> None:
    """The sampled pages only decide what is digested whole: one element changed where no page is sampled makes
    the layer no bit-identical copy (with sample digests compared, it would still map). The layer-copy check on
    samples (SPEC.md §6.6) then reads a passthrough merge changed afterwards, which it is."""
    changed = tmp_path / "changed"
    shutil.copytree(wide["passthrough"], changed)
    name = "model.layers.1.mlp.down_proj.weight"
    (file,) = changed.glob("*.safetensors")
    tensors = load_file(str(file))
    flat = tensors[name].view(-1)
    flat[SAMPLE_BYTES] = flat[SAMPLE_BYTES] * 2 + 1  # element 4096: byte 8192, after the first sampled page
    save_file(tensors, str(file), metadata={"format": "pt"})
    report = detect(changed, [wide["a"], wide["b"]])
    assert report.verdict == "merge_plus_training" and not report.reason.startswith("passthrough: every layer")
    assert "not every layer is a bit-identical copy" in report.reason, report.reason
    assert [h.evidence.startswith("layers copied, then changed") for h in report.hints] == [True]
    mapping = {(x.model_layer, x.candidate, x.candidate_layer) for x in report.layer_mapping}
    assert mapping == {(0, str(wide["b"]), 1), (1, str(wide["a"]), 0)}


def test_a_large_candidate_given_as_the_model_is_identical(wide: dict[str, Path]) -> None:
    report = detect(wide["a"], [wide["b"], wide["a"]])
    assert "bit-identical" in report.reason


def test_unrelated_large_models_digest_nothing_whole(wide: dict[str, Path]) -> None:
    a, b = _view(wide["a"]), _view(wide["b"])
    mdig, cdig = _maps(a, b)
    large = [n for n in a.names if a.info(n).nbytes > SAMPLED_ABOVE]
    assert large and confirm_copies(mdig, [cdig], [a, b]) == 0
    assert all(mdig[n] == a.sample_digest(n) for n in large)
