"""Header entries held as columns (attest.identity.header_table) and the folder scan's name index: the same entries,
order, names and errors as one object per tensor, with one string per name shared between folders."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import struct
from pathlib import Path

import pytest
from safetensors import safe_open

from attest.errors import InputError
from attest.executor import InProcess
from attest.identity import hash_model, hash_roots, read_header
from attest.identity.folder import scan_folder
from attest.identity.header_table import HeaderEntries, TensorInfo
from tests.identity.test_identity_roots import raw_reshard, write_safetensors


def _plain_entries(path: Path) -> list[TensorInfo]:
    """The entries as the reader gave them before: one TensorInfo per tensor, sorted by (begin, end), stable."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    header.pop("__metadata__", None)
    infos = [
        TensorInfo(k, v["dtype"], tuple(v["shape"]), 8 + n + v["data_offsets"][0], 8 + n + v["data_offsets"][1])
        for k, v in header.items()
    ]
    return sorted(infos, key=lambda t: (t.begin, t.end))


def test_columns_give_the_entries_one_object_per_tensor_gave(minilm_dir: Path) -> None:
    path = minilm_dir / "model.safetensors"
    table = read_header(path).tensors
    expected = _plain_entries(path)
    with safe_open(path, framework="pt") as reference:  # the safetensors library's view of the same file
        keys = set(reference.keys())
    assert isinstance(table, HeaderEntries) and len(table) == len(expected) == len(keys) > 100
    assert list(table) == expected and table.names == [t.name for t in expected] and set(table.names) == keys
    assert [table[i] for i in range(len(table))] == expected == [table.info(i) for i in range(len(table))]
    assert table[-1] == expected[-1] and table[2:5] == expected[2:5] and table[::-7] == expected[::-7]
    for i in (-len(table) - 1, len(table)):
        with pytest.raises(IndexError):
            table[i]
    assert all(table.begin(i) == t.begin and table.end(i) == t.end for i, t in enumerate(expected))
    assert all(table.dtype(i) == t.dtype and table.shape(i) == t.shape for i, t in enumerate(expected))
    assert all(a.end == b.begin for a, b in itertools.pairwise(table))
    # Per tensor: a list slot, 8 bytes of offset, a dtype code and a 4-byte shape number (plus the one end offset).
    assert table.held_bytes() == (8 + 8 + 1 + 4) * len(table) + 8
    # Equal shapes are one tuple; the same name read twice (a parent and its merge) is one string.
    shapes = {t.shape for t in table}
    assert len({id(table.shape(i)) for i in range(len(table))}) == len(shapes)
    again = read_header(path).tensors
    assert all(a is b for a, b in zip(table.names, again.names, strict=True))


def test_empty_tensors_keep_their_header_order(tmp_path: Path) -> None:
    """Entries at the same offset (empty tensors) stay in the header's order, as the stable sort kept them."""
    path = tmp_path / "model.safetensors"
    write_safetensors(path, [("z", "F32", [0], b""), ("a", "F32", [0], b""), ("m", "U8", [2], b"xy")])
    table = read_header(path).tensors
    assert table.names == ["z", "a", "m"] and list(table) == _plain_entries(path)
    assert [t.nbytes for t in table] == [0, 0, 2]


def test_scan_index_finds_every_tensor_across_shards(minilm_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "sharded"
    groups = raw_reshard(minilm_dir, folder, 4, seed=3)
    scan = scan_folder(folder)
    rels = list(scan.headers)
    assert len(scan.index) == sum(map(len, groups)) and scan.starts[0] == 0
    for rel, names in zip(sorted(rels), groups, strict=True):
        for name in names:
            k, i = scan.locate(scan.index[name])
            assert rels[k] == rel and scan.headers[rel].tensors.names[i] == name
    # In file order, then data-offset order: the order the files' entries were stored before.
    assert list(scan.index) == [t.name for h in scan.headers.values() for t in h.tensors]


def test_shard_index_is_checked_through_the_name_index(minilm_dir: Path, tmp_path: Path) -> None:
    """A weight_map that misplaces, omits or invents tensors across several shards is refused with the message the
    per-shard name sets gave: the first shard in weight_map order that differs, its first wrong name in sorted
    order, a missing name before an extra one."""
    folder = tmp_path / "sharded"
    raw_reshard(minilm_dir, folder, 3, seed=7)
    index = folder / "model.safetensors.index.json"
    doc = json.loads(index.read_text())
    wm = doc["weight_map"]
    first, *_ = wm.values()
    other = next(s for s in wm.values() if s != first)
    moved = sorted(n for n, s in wm.items() if s == first)[:2]
    for name in moved:  # listed in another shard: the first shard holds them unlisted
        wm[name] = other
    index.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=f"{first} holds '{moved[0]}', which weight_map does not list"):
        scan_folder(folder)
    wm["zzz.invented"] = first  # and a name the first shard does not hold: reported first
    index.write_text(json.dumps(doc))
    with pytest.raises(InputError, match=f"weight_map puts 'zzz.invented' in {first}, which does not hold it"):
        scan_folder(folder)
    del wm["zzz.invented"]
    for name in moved:
        wm[name] = first
    index.write_text(json.dumps(doc))
    assert len(scan_folder(folder).index) == len(wm)


def test_header_errors_still_come_before_index_errors(minilm_dir: Path, tmp_path: Path) -> None:
    """The index is read before the headers, but its errors are raised where they were: after the headers'."""
    folder = tmp_path / "sharded"
    raw_reshard(minilm_dir, folder, 2, seed=5)
    (folder / "model.safetensors.index.json").write_text('{"weight_map": ')
    with pytest.raises(InputError, match="shard index is not valid JSON"):
        scan_folder(folder)
    shard = sorted(folder.glob("*.safetensors"))[1]
    shard.write_bytes(shard.read_bytes()[:-1])  # a truncated shard
    with pytest.raises(InputError) as exc:
        scan_folder(folder)
    assert "shard index" not in str(exc.value) and shard.name in str(exc.value)


def test_duplicate_name_refused_naming_both_files(minilm_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "dup"
    raw_reshard(minilm_dir, folder, 2, seed=9)
    (folder / "model.safetensors.index.json").unlink()
    first = sorted(folder.glob("*.safetensors"))[0]
    name = read_header(first).tensors.names[3]
    write_safetensors(folder / "zz-extra.safetensors", [(name, "U8", [1], b"x")])
    with pytest.raises(InputError, match=f"tensor '{name}' is also stored in {first.name}") as exc:
        scan_folder(folder)
    assert "zz-extra.safetensors" in str(exc.value)


def test_roots_unchanged_by_the_columns(minilm_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "sharded"
    raw_reshard(minilm_dir, folder, 4, seed=11)
    whole, sharded = hash_model(minilm_dir), hash_model(folder)
    assert sharded.weights_root == whole.weights_root and len(sharded.tensors) == len(whole.tensors)
    shutil.rmtree(folder)


@pytest.mark.parametrize("algorithm", ["sha256", "blake3"])
def test_hash_roots_equal_hash_model(minilm_dir: Path, tmp_path: Path, algorithm: str) -> None:
    """hash_roots (what verification and the locator use: 32 bytes per tensor leaf, no manifest) gives the roots
    and notes hash_model gives, hashing file by file in this process or all spans as an executor's units."""
    folder = tmp_path / "sharded"
    raw_reshard(minilm_dir, folder, 4, seed=11)
    (folder / "optimizer.pt").write_bytes(b"opaque")  # a pickle: hashed as bytes, noted
    (folder / "notes.txt").write_text("x")
    m = hash_model(folder, algorithm)  # type: ignore[arg-type]
    for r in (hash_roots(folder, algorithm), hash_roots(folder, algorithm, executor=InProcess())):  # type: ignore[arg-type]
        assert (r.model_root, r.weights_root, r.files_root) == (m.model_root, m.weights_root, m.files_root)
        assert r.tensors == len(m.tensors) > 100 and r.notes == m.notes and r.notes
    assert hash_model(folder, algorithm, executor=InProcess()) == m  # type: ignore[arg-type]
    assert hash_model(folder, algorithm, use_cache=True) == m == hash_model(folder, algorithm, use_cache=True)  # type: ignore[arg-type]


def test_hash_roots_refuses_a_file_changed_while_hashed(minilm_dir: Path, tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import attest.identity.hashing as hashing

    folder = tmp_path / "sharded"
    raw_reshard(minilm_dir, folder, 2, seed=4)
    real = hashing.data_roots
    calls = []

    def touch_then_hash(*a, **k):  # type: ignore[no-untyped-def]
        calls.append(1)
        if len(calls) == 2:  # after the first shard: the last file's stat no longer matches the listing
            victim = sorted(folder.glob("*.safetensors"))[-1]
            os.utime(victim, ns=(1, 1))
        return real(*a, **k)

    monkeypatch.setattr(hashing, "data_roots", touch_then_hash)
    with pytest.raises(InputError, match="changed while it was being hashed"):
        hash_roots(folder)
