"""hash_model's manifest holds its tensor entries as columns (attest.identity.manifest.TensorEntries), not as one
pydantic object each: it must be the manifest its own JSON reads back as (a list of TensorEntry) in every way the
API offers, and every text written from it (`attest hash --json`, the recorded identity.json) byte for byte."""

from __future__ import annotations

import gc
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

import attest
from attest.identity import IdentityManifest, TensorEntries, TensorEntry, diff_manifests, make_proof
from attest.identity.manifest import manifest_json
from attest.lineage.recorded_identity import IDENTITY_FILE, load_recorded_manifest, write_recorded_manifest
from attest.lineage.store import attest_dir
from tests.support.cli import run_attest

HOSTILE = ['quote"back\\slash', "controls\x01\x08\x09\x0a\x1f\x7f", "unicode é 漢字 \u2028 \U0001f600", "z", "a.b"]


@pytest.fixture(scope="module")
def hostile_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two shards whose tensor names need JSON escapes, of several dtypes and shapes (a scalar and an empty one)."""
    folder = tmp_path_factory.mktemp("hostile")
    g = torch.Generator().manual_seed(0)
    first = {n: torch.randn(3, 5, generator=g).to(torch.bfloat16) for n in HOSTILE[:3]}
    second = {"z": torch.tensor(1.5), "a.b": torch.zeros(0, 4, dtype=torch.float16)}
    save_file(first, folder / "model-00001-of-00002.safetensors", metadata={"format": "pt"})
    save_file(second, folder / "model-00002-of-00002.safetensors", metadata={"format": "pt"})
    weight_map = {n: "model-00001-of-00002.safetensors" for n in first}
    weight_map |= {n: "model-00002-of-00002.safetensors" for n in second}
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    (folder / "config.json").write_text("{}")
    return folder


def _entries_alive() -> int:
    return sum(isinstance(o, TensorEntry) for o in gc.get_objects())


def test_hash_model_holds_columns_not_entry_objects(minilm_dir: Path) -> None:
    before = _entries_alive()
    m = attest.hash_model(minilm_dir)
    assert isinstance(m.tensors, TensorEntries) and len(m.tensors) > 100
    assert _entries_alive() == before
    assert m.tensors.held_bytes() <= 90 * len(m.tensors)  # beside the names, which the header tables share
    entries = list(m.tensors)  # made on access
    assert _entries_alive() == before + len(entries)


@pytest.mark.parametrize("which", ["minilm", "hostile"])
def test_packed_manifest_is_the_manifest_its_json_reads_back_as(
    which: str, minilm_dir: Path, hostile_dir: Path
) -> None:
    m = attest.hash_model(minilm_dir if which == "minilm" else hostile_dir)
    ref = IdentityManifest.model_validate_json(m.model_dump_json())
    assert isinstance(ref.tensors, list) and isinstance(m.tensors, TensorEntries)
    assert m == ref and ref == m and m.tensors == ref.tensors and ref.tensors == m.tensors
    assert m.model_dump() == ref.model_dump() and m.model_dump(mode="json") == ref.model_dump(mode="json")
    for indent in (None, 2, 4):
        text = ref.model_dump_json(indent=indent)
        assert m.model_dump_json(indent=indent) == text
        assert "".join(manifest_json(m, indent)) == text == "".join(manifest_json(ref, indent))
    assert list(m.tensors) == ref.tensors and m.tensors[-1] == ref.tensors[-1] and m.tensors[1:3] == ref.tensors[1:3]
    with pytest.raises(IndexError):
        m.tensors[len(ref.tensors)]
    for t in ref.tensors:
        assert m.tensor(t.name) == t and make_proof(m, t.name) == make_proof(ref, t.name)
    assert diff_manifests(m, ref).model_dump() == diff_manifests(ref, ref).model_dump()
    changed = ref.model_copy(update={"tensors": [*ref.tensors[:-1], ref.tensors[-1].model_copy(update={"nbytes": 1})]})
    assert m != changed and m.tensors != changed.tensors


def test_cli_json_and_recorded_identity_are_the_same_bytes(hostile_dir: Path, tmp_path: Path) -> None:
    ref = IdentityManifest.model_validate_json(attest.hash_model(hostile_dir).model_dump_json())
    run = run_attest(["hash", hostile_dir, "--json", "--no-cache"])
    assert run.code == 0, run.err
    assert run.out == ref.model_dump_json(indent=2, by_alias=True, exclude_none=True) + "\n"  # print_json's text
    folder = tmp_path / "model"
    shutil.copytree(hostile_dir, folder)
    m = attest.hash_model(folder)
    write_recorded_manifest(folder, m)
    assert (attest_dir(folder) / IDENTITY_FILE).read_bytes() == (ref.model_dump_json() + "\n").encode("utf-8")
    assert load_recorded_manifest(folder, m.model_root) == m


def test_a_manifest_without_tensors_streams_like_its_dump(tmp_path: Path) -> None:
    (tmp_path / "README.md").write_text("no weights\n")
    m = attest.hash_model(tmp_path, require_weights=False)
    assert isinstance(m.tensors, TensorEntries) and len(m.tensors) == 0 and len(m.files) == 1
    for indent in (None, 2):
        assert "".join(manifest_json(m, indent)) == m.model_dump_json(indent=indent)
