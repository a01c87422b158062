"""Weights root and model root on real checkpoints: what must not move them (sharding, tensor order, metadata,
excluded paths) and what must (one flipped bit, a rename, a reshape or retype of the same bytes, a new file)."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import pickle
import random
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

import attest
from attest.identity import IdentityManifest, diff_manifests
from tests.support.cli import attest_process

REPO = Path(__file__).resolve().parents[2]
Tensor = tuple[str, str, list[int], bytes]  # name, dtype, shape, bytes


def read_tensors(path: Path) -> tuple[list[Tensor], dict[str, str]]:
    """All tensors of one safetensors file, in file order, read with nothing but struct and json."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    metadata = header.pop("__metadata__", {})
    data = raw[8 + n :]
    items = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    return [(k, v["dtype"], v["shape"], data[v["data_offsets"][0] : v["data_offsets"][1]]) for k, v in items], metadata


def write_safetensors(path: Path, tensors: list[Tensor], metadata: dict[str, str] | None = None) -> None:
    """Write tensors in exactly the given order (the safetensors library would sort them)."""
    header: dict[str, object] = {"__metadata__": metadata} if metadata is not None else {}
    offset = 0
    for name, dtype, shape, data in tensors:
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(raw)) + raw)
        for t in tensors:
            fh.write(t[3])


def copy_other_files(src: Path, dst: Path) -> None:
    """Every file of src except the weight files and shard indexes."""

    def skip(folder: str, names: list[str]) -> list[str]:
        return [n for n in names if n.endswith((".safetensors", ".safetensors.index.json"))]

    shutil.copytree(src, dst, ignore=skip, dirs_exist_ok=True)


def load_all(folder: Path) -> list[Tensor]:
    out: list[Tensor] = []
    for f in sorted(folder.glob("*.safetensors")):
        out.extend(read_tensors(f)[0])
    return out


def raw_reshard(src: Path, dst: Path, shards: int, seed: int) -> list[list[str]]:
    """Re-shard byte for byte: shuffled tensor order inside each file, new file names, new __metadata__."""
    tensors = load_all(src)
    rng = random.Random(seed)
    rng.shuffle(tensors)
    groups = [tensors[i::shards] for i in range(shards)]
    dst.mkdir(parents=True)
    weight_map = {}
    for i, group in enumerate(groups):
        name = f"weights-{seed}-{i}.safetensors"
        write_safetensors(dst / name, group, {"shard": str(i), "seed": str(seed), "made_by": "test"})
        weight_map.update({t[0]: name for t in group})
    if shards > 1:
        (dst / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    copy_other_files(src, dst)
    return [[t[0] for t in g] for g in groups]


def with_weights(src: Path, dst: Path, tensors: list[Tensor]) -> Path:
    """A copy of src whose single weight file holds `tensors` (in their given order)."""
    copy_other_files(src, dst)
    write_safetensors(dst / "model.safetensors", tensors, {"format": "pt"})
    return dst


def manifest_of(folder: Path) -> IdentityManifest:
    done = attest_process("hash", "--json", "--no-cache", str(folder))
    assert done.returncode == 0, done.stderr
    return IdentityManifest.model_validate_json(done.stdout)


@pytest.fixture(scope="module")
def minilm_tensors(minilm_dir: Path) -> list[Tensor]:
    return read_tensors(minilm_dir / "model.safetensors")[0]


@pytest.fixture(scope="module")
def minilm_manifest(minilm_dir: Path) -> IdentityManifest:
    return attest.hash_model(minilm_dir)


# -- sharding does not matter ------------------------------------------------------------------------------------


@pytest.mark.parametrize("shards", [1, 3, 7])
def test_minilm_resharded_same_roots(
    minilm_dir: Path, minilm_manifest: IdentityManifest, tmp_path: Path, shards: int
) -> None:
    """1, 3 and 7 shards, shuffled order inside each file, other file names and __metadata__: same roots."""
    groups = raw_reshard(minilm_dir, tmp_path / "m", shards, seed=shards)
    original_order = [t[0] for t in read_tensors(minilm_dir / "model.safetensors")[0]]
    first = groups[0]
    assert first != sorted(first) and first != [n for n in original_order if n in set(first)]
    m = attest.hash_model(tmp_path / "m")
    assert len({t.file for t in m.tensors}) == shards
    assert m.weights_root == minilm_manifest.weights_root
    assert m.model_root == minilm_manifest.model_root
    assert [t.digest for t in m.tensors] == [t.digest for t in minilm_manifest.tensors]


def test_minilm_resharded_same_roots_blake3(minilm_dir: Path, tmp_path: Path) -> None:
    raw_reshard(minilm_dir, tmp_path / "m", 3, seed=11)
    a, b = attest.hash_model(minilm_dir, "blake3"), attest.hash_model(tmp_path / "m", "blake3")
    assert (a.weights_root, a.model_root) == (b.weights_root, b.model_root)
    assert a.model_root != attest.hash_model(minilm_dir).model_root  # the algorithm is part of the identity


@pytest.mark.parametrize("shards", [1, 3, 7])
def test_tiny_transformers_resharded_same_roots(tiny_models: dict[str, Path], tmp_path: Path, shards: int) -> None:
    base = tiny_models["base"]
    raw_reshard(base, tmp_path / "m", shards, seed=100 + shards)
    a, b = attest.hash_model(base), attest.hash_model(tmp_path / "m")
    assert {t.dtype for t in a.tensors} == {"BF16"}
    assert (a.weights_root, a.model_root) == (b.weights_root, b.model_root)


def test_tiny_transformers_resharded_by_example_script(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    """examples/reshard.py goes through torch and the safetensors library: still the same roots. The fine-tunes
    of the same architecture have other roots."""
    spec = importlib.util.spec_from_file_location("reshard_example", REPO / "examples" / "reshard.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = module.reshard(tiny_models["base"], tmp_path / "r", 3, seed=5)
    a, b = attest.hash_model(tiny_models["base"]), attest.hash_model(out)
    assert len(list(out.glob("*.safetensors"))) == 3
    assert (a.weights_root, a.model_root) == (b.weights_root, b.model_root)
    ft = attest.hash_model(tiny_models["ft_a"])
    assert ft.weights_root != a.weights_root
    assert set(diff_manifests(a, ft).changed_tensors) == {t.name for t in a.tensors}


# -- what must change the roots ------------------------------------------------------------------------------------


def test_one_flipped_bit_names_exactly_that_tensor(
    minilm_dir: Path, minilm_tensors: list[Tensor], tmp_path: Path
) -> None:
    target = "encoder.layer.3.attention.self.query.weight"
    flipped = []
    for name, dtype, shape, data in minilm_tensors:
        if name == target:
            b = bytearray(data)
            b[len(b) // 2 + 3] ^= 0x10
            data = bytes(b)
        flipped.append((name, dtype, shape, data))
    with_weights(minilm_dir, tmp_path / "flipped", flipped)
    base = with_weights(minilm_dir, tmp_path / "base", minilm_tensors)

    done = attest_process("diff", str(base), str(tmp_path / "flipped"), "--json")
    assert done.returncode == 1, done.stderr
    d = json.loads(done.stdout)
    assert d["changed_tensors"] == [target]
    assert d["missing_tensors"] == d["added_tensors"] == d["changed_files"] == []
    assert d["same_weights"] is False and d["same_model"] is False

    a, b = attest.hash_model(base), attest.hash_model(tmp_path / "flipped")
    assert a.weights_root != b.weights_root and a.model_root != b.model_root
    assert diff_manifests(a, b).changed_tensors == [target]
    assert diff_manifests(a, attest.hash_model(minilm_dir)).identical


def _edit(tensors: list[Tensor], target: str, **change: object) -> list[Tensor]:
    out = []
    for name, dtype, shape, data in tensors:
        if name == target:
            name = str(change.get("name", name))
            dtype = str(change.get("dtype", dtype))
            shape = list(change.get("shape", shape))  # type: ignore[call-overload]
        out.append((name, dtype, shape, data))
    return out


MINILM_TARGET = "encoder.layer.0.attention.self.key.weight"  # F32 [384, 384]


@pytest.mark.parametrize(
    "change",
    [
        {"name": "encoder.layer.0.attention.self.key.weight2"},
        {"name": "a.first.in.order"},
        {"shape": [384 * 384]},
        {"shape": [192, 768]},
        {"shape": [384, 384, 1]},
        {"dtype": "I32"},
        {"dtype": "U32"},
    ],
    ids=["rename", "rename-moves", "reshape-flat", "reshape", "reshape-unsqueeze", "retype-I32", "retype-U32"],
)
def test_rename_reshape_retype_same_bytes_change_roots(
    minilm_dir: Path, minilm_tensors: list[Tensor], minilm_manifest: IdentityManifest, tmp_path: Path, change: dict
) -> None:
    edited = with_weights(minilm_dir, tmp_path / "e", _edit(minilm_tensors, MINILM_TARGET, **change))
    m = attest.hash_model(edited)
    assert m.weights_root != minilm_manifest.weights_root
    assert m.model_root != minilm_manifest.model_root
    d = diff_manifests(minilm_manifest, m)
    new_name = change.get("name", MINILM_TARGET)
    # Same bytes: the data root is untouched, only the record moved.
    assert m.tensor(new_name).data_root == minilm_manifest.tensor(MINILM_TARGET).data_root  # type: ignore[union-attr]
    if "name" in change:
        assert (d.missing_tensors, d.added_tensors, d.changed_tensors) == ([MINILM_TARGET], [new_name], [])
    else:
        assert (d.missing_tensors, d.added_tensors, d.changed_tensors) == ([], [], [MINILM_TARGET])


@pytest.mark.parametrize("dtype", ["F16", "I16", "U16"])
def test_retype_bf16_same_bytes_changes_roots(tiny_models: dict[str, Path], tmp_path: Path, dtype: str) -> None:
    base = tiny_models["base"]
    tensors = load_all(base)
    target = next(t[0] for t in tensors if t[1] == "BF16" and len(t[2]) == 2)
    edited = with_weights(base, tmp_path / "e", _edit(tensors, target, dtype=dtype))
    a, b = attest.hash_model(base), attest.hash_model(edited)
    assert a.weights_root != b.weights_root and a.model_root != b.model_root
    assert diff_manifests(a, b).changed_tensors == [target]
    assert b.tensor(target).dtype == dtype  # type: ignore[union-attr]


def test_tokenizer_file_changes_model_root_only(
    minilm_dir: Path, minilm_manifest: IdentityManifest, tmp_path: Path
) -> None:
    folder = tmp_path / "m"
    shutil.copytree(minilm_dir, folder)
    (folder / "added_tokens.json").write_text('{"<extra>": 30522}')
    m = attest.hash_model(folder)
    assert m.weights_root == minilm_manifest.weights_root
    assert m.model_root != minilm_manifest.model_root
    d = diff_manifests(minilm_manifest, m)
    assert d.added_files == ["added_tokens.json"] and d.same_weights and not d.same_model

    (folder / "added_tokens.json").unlink()
    tok = folder / "tokenizer.json"
    tok.write_bytes(tok.read_bytes().replace(b'"[UNK]"', b'"[UNKNOWN]"', 1))
    m2 = attest.hash_model(folder)
    assert m2.weights_root == minilm_manifest.weights_root
    assert diff_manifests(minilm_manifest, m2).changed_files == ["tokenizer.json"]


def test_excluded_paths_do_not_change_roots(
    minilm_dir: Path, minilm_manifest: IdentityManifest, tmp_path: Path
) -> None:
    """VCS folders, attest's own folder, model-signing's model.sig and the HF download cache are not content."""
    folder = tmp_path / "m"
    shutil.copytree(minilm_dir, folder)
    (folder / ".git" / "objects" / "ab").mkdir(parents=True)
    (folder / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (folder / ".git" / "objects" / "ab" / "cdef").write_bytes(b"\x78\x9c" + bytes(100))
    write_safetensors(folder / ".git" / "stray.safetensors", [("x", "U8", [1], b"\x01")])
    (folder / ".attest").mkdir()
    (folder / ".attest" / "lineage.intoto.jsonl").write_text('{"payloadType": "x"}\n')
    (folder / "model.sig").write_text('{"mediaType": "application/vnd.dev.sigstore.bundle.v0.3+json"}')
    (folder / ".cache" / "huggingface").mkdir(parents=True)
    (folder / ".cache" / "huggingface" / "download.lock").write_text("")
    m = attest.hash_model(folder)
    assert (m.weights_root, m.model_root) == (minilm_manifest.weights_root, minilm_manifest.model_root)
    assert {".git/", ".attest/", "model.sig", ".cache/huggingface/"} <= set(m.excluded)
    # The same kinds of file under other names are content.
    (folder / "sub").mkdir()
    (folder / "sub" / "model.sig").write_text("{}")
    assert attest.hash_model(folder).model_root != minilm_manifest.model_root


def _effectful_pickle(marker: Path) -> bytes:
    """A pickle whose loading creates `marker` (as a hostile pytorch_model.bin would run code)."""

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            import os

            return (os.mkdir, (str(marker),))

    return pickle.dumps(Payload())


def test_pickle_hashed_opaquely_never_unpickled(minilm_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "unpickled-marker"
    folder = tmp_path / "m"
    shutil.copytree(minilm_dir, folder)
    blob = _effectful_pickle(marker)
    (folder / "pytorch_model.bin").write_bytes(blob)

    table = attest_process("hash", "--no-cache", str(folder))
    assert table.returncode == 0, table.stderr
    assert "pytorch_model.bin" in table.stdout and "never unpickled" in table.stdout
    m = manifest_of(folder)
    entry = next(f for f in m.files if f.path == "pytorch_model.bin")
    assert entry.kind == "pickle" and entry.size == len(blob)
    assert any("pytorch_model.bin" in n and "never unpickled" in n for n in m.notes)
    lib = attest.hash_model(folder)
    assert lib.model_root == m.model_root
    # Opaque bytes: the file record is over the raw bytes, like any other file.
    assert entry.data_root == hashlib.sha256(b"\x00" + blob).hexdigest()

    # A pickle-only folder (no safetensors) is a model too.
    only = tmp_path / "only"
    only.mkdir()
    (only / "pytorch_model.bin").write_bytes(blob)
    (only / "config.json").write_text("{}")
    p = attest.hash_model(only)
    assert p.tensors == [] and p.weights_root == hashlib.sha256(b"").hexdigest()

    assert not marker.exists(), "attest unpickled the file"
    # Control: the payload does run when unpickled, so the check above can fail.
    subprocess.run([sys.executable, "-c", f"import pickle; pickle.loads({blob!r})"], check=True, timeout=60)
    assert marker.is_dir()


def test_hostile_tensor_names_print_safely(minilm_dir: Path, minilm_tensors: list[Tensor], tmp_path: Path) -> None:
    """A tensor name is attacker-chosen text: rich markup and control characters in it must neither crash the
    table (exit 3) nor forge a line or a terminal escape in it."""
    evil = "[/bogus]\x1b[2J\nweights root: 00[bold]"
    folder = with_weights(minilm_dir, tmp_path / "m", _edit(minilm_tensors, MINILM_TARGET, name=evil))
    env = {**os.environ, "COLUMNS": "400"}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "attest", *args], capture_output=True, text=True, timeout=120, env=env
        )

    table = cli("hash", "--no-cache", str(folder))
    assert table.returncode == 0, table.stderr
    assert "\x1b" not in table.stdout
    assert "[/bogus]\\x1b[2J\\nweights root: 00[bold]" in table.stdout
    assert sum(line.startswith("weights root:") for line in table.stdout.splitlines()) == 1
    m = attest.hash_model(folder)
    assert m.tensor(evil) is not None
    proof = tmp_path / "p.json"
    assert cli("prove", str(folder), evil, "-o", str(proof)).returncode == 0
    ok = cli("check-proof", str(proof), "--root", m.model_root)
    assert ok.returncode == 0 and len(ok.stdout.strip().splitlines()) == 1 and "\x1b" not in ok.stdout


@pytest.mark.parametrize(("workers", "unit_mib"), [(1, 32), (2, 1), (3, 3), (64, 32)])
def test_roots_do_not_depend_on_how_work_is_cut(
    minilm_dir: Path, minilm_manifest: IdentityManifest, monkeypatch: pytest.MonkeyPatch, workers: int, unit_mib: int
) -> None:
    """Threads and unit sizes are tuning, not format: any cut of the work gives the same roots."""
    import attest.identity.chunked as chunked

    monkeypatch.setattr(chunked, "UNIT_BYTES", unit_mib << 20)
    m = attest.hash_model(minilm_dir, workers=workers)
    assert m == minilm_manifest


@pytest.mark.parametrize(
    "name",
    [
        "model.layers.0.mlp.experts.511.down_proj.weight",
        'quote"back\\slash',
        "controls\x00\x01\x08\x09\x0a\x0b\x0c\x0d\x1f\x7f",
        "unicode é ß 漢字 \u2028\u2029 \U0001f600 \ufeff",
        "",
    ],
)
def test_fast_tensor_leaf_is_rfc8785(name: str) -> None:
    """The hashing hot path writes the tensor record's canonical JSON itself; it must be byte-identical to RFC 8785."""
    from attest.identity.manifest import tensor_leaf, tensor_leaf_of, tensor_record

    for shape in ([], [0], [3, 4], [2**53 - 1, 1]):
        for algorithm in ("sha256", "blake3"):
            rec = tensor_record(name, "BF16", shape, 2**40 + 7, "ab" * 32)
            fast = tensor_leaf_of(algorithm, name, "BF16", shape, 2**40 + 7, "ab" * 32)
            assert fast == tensor_leaf(algorithm, rec)


def test_tensor_entry_from_validated_is_model_validate() -> None:
    """hash_scan builds entries without pydantic's per-field loop: they must be the validated model in every way."""
    from attest.identity.manifest import TensorEntry

    values = dict(name="a.b", dtype="BF16", shape=[2, 3], nbytes=12, data_root="ab" * 32, digest="cd" * 32, file="x")
    fast = TensorEntry.from_validated(**values)  # type: ignore[arg-type]
    slow = TensorEntry.model_validate(values)
    assert fast == slow and slow == fast
    assert fast.model_dump_json() == slow.model_dump_json()
    assert fast.model_fields_set == slow.model_fields_set
    assert repr(fast) == repr(slow) and hash(fast.name) == hash(slow.name)
    with pytest.raises(ValidationError):
        fast.name = "other"  # type: ignore[misc]
