"""Incremental re-hashing: an unchanged folder is re-hashed without reading a byte of it, a touched or modified
file (and only it) is read again, a just-written file is never trusted, and use_cache=False never looks."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import attest
import attest.identity.chunked as chunked
from attest.identity.cache import RACY_NS, RootCache

COPIES = ["unchanged", "touched", "poisoned", "algorithms"]


@pytest.fixture(scope="module")
def aged(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Copies of the real MiniLM folder, old enough (RACY_NS) that the cache may trust their timestamps."""
    root = tmp_path_factory.mktemp("cache-models")
    out = {name: Path(shutil.copytree(minilm_dir, root / name)) for name in COPIES}
    time.sleep(RACY_NS / 1e9 + 0.05)
    return out


@pytest.fixture()
def reads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Every (file name, bytes) that hashing reads, by counting calls of the function that reads file data."""
    seen: list[tuple[str, int]] = []
    real = chunked._hash_unit

    def counting(algorithm, spans, unit):  # type: ignore[no-untyped-def]
        s = spans[unit[0].span]
        seen.append((s.path.name, sum(min(s.length, p.last * chunked.CHUNK_SIZE) for p in unit)))
        return real(algorithm, spans, unit)

    monkeypatch.setattr(chunked, "_hash_unit", counting)
    return seen


def names(seen: list[tuple[str, int]]) -> set[str]:
    return {n for n, _ in seen}


def test_unchanged_folder_reads_nothing(aged: dict[str, Path], reads: list[tuple[str, int]]) -> None:
    folder = aged["unchanged"]
    listing = sorted(p.relative_to(folder) for p in folder.rglob("*"))
    reference = attest.hash_model(folder, use_cache=False)
    assert "model.safetensors" in names(reads) and "vocab.txt" in names(reads)
    reads.clear()

    first = attest.hash_model(folder, use_cache=True)
    assert names(reads) == {f.path.split("/")[-1] for f in reference.files} | {"model.safetensors"}
    reads.clear()
    second = attest.hash_model(folder, use_cache=True)
    assert reads == []  # not one byte of tensor data (or of any file) was read
    assert first == second == reference
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == listing  # the cache lives elsewhere


def test_touched_or_modified_file_is_the_only_one_read(aged: dict[str, Path], reads: list[tuple[str, int]]) -> None:
    folder = aged["touched"]
    before = attest.hash_model(folder, use_cache=True)
    reads.clear()

    os.utime(folder / "config.json")  # same bytes, new timestamps
    again = attest.hash_model(folder, use_cache=True)
    assert names(reads) == {"config.json"} and again == before
    reads.clear()

    vocab = folder / "vocab.txt"
    data = bytearray(vocab.read_bytes())
    data[100] ^= 1
    vocab.write_bytes(bytes(data))  # same size
    changed = attest.hash_model(folder, use_cache=True)
    # config.json changed less than RACY_NS ago, so it is read again until it is older: still nothing else is.
    assert names(reads) == {"vocab.txt", "config.json"}
    assert changed == attest.hash_model(folder, use_cache=False)
    assert changed.weights_root == before.weights_root and changed.model_root != before.model_root
    reads.clear()

    with open(folder / "model.safetensors", "r+b") as fh:  # one byte of one tensor, in place
        fh.seek(fh.seek(0, os.SEEK_END) // 2)
        b = fh.read(1)
        fh.seek(-1, os.SEEK_CUR)
        fh.write(bytes([b[0] ^ 0x80]))
    tensors = attest.hash_model(folder, use_cache=True)
    assert names(reads) == {"model.safetensors", "vocab.txt", "config.json"}
    assert tensors.weights_root != before.weights_root
    assert tensors == attest.hash_model(folder, use_cache=False)


def test_just_written_files_are_not_trusted(minilm_dir: Path, tmp_path: Path, reads: list[tuple[str, int]]) -> None:
    """A file younger than the timestamp granularity could change again without its stat changing."""
    folder = Path(shutil.copytree(minilm_dir, tmp_path / "fresh"))
    os.utime(folder / "model.safetensors")  # just now, however long the copy took
    attest.hash_model(folder, use_cache=True)
    reads.clear()
    attest.hash_model(folder, use_cache=True)
    assert "model.safetensors" in names(reads)


def _cache_file(folder: Path, algorithm: str = "sha256") -> Path:
    return RootCache(folder, algorithm).path


def test_no_cache_never_consults_the_cache(aged: dict[str, Path], reads: list[tuple[str, int]]) -> None:
    folder = aged["poisoned"]
    good = attest.hash_model(folder, use_cache=True)
    cache = _cache_file(folder)
    data = json.loads(cache.read_text())
    for entry in data["files"].values():
        entry["roots"] = dict.fromkeys(entry["roots"], "ab" * 32)
    cache.write_text(json.dumps(data))

    # The poisoned cache is read when allowed (so the checks below can fail) ...
    assert attest.hash_model(folder, use_cache=True).model_root != good.model_root
    poisoned_bytes = cache.read_bytes()
    # ... and never when not: every byte is read again, the result is right and the cache is not rewritten.
    reads.clear()
    assert attest.hash_model(folder, use_cache=False) == good
    assert "model.safetensors" in names(reads)
    assert cache.read_bytes() == poisoned_bytes

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "attest", *args], capture_output=True, text=True, timeout=120)

    assert os.environ["ATTEST_CACHE_DIR"] and str(cache).startswith(os.environ["ATTEST_CACHE_DIR"])
    no_cache = cli("hash", "--json", "--no-cache", str(folder))
    assert json.loads(no_cache.stdout)["model_root"] == good.model_root
    cached = cli("hash", "--json", str(folder))
    assert json.loads(cached.stdout)["model_root"] != good.model_root  # `attest hash` does use it by default
    # A command that checks things never uses it: diff against a manifest of the true folder says identical.
    manifest = folder.parent / "good.json"
    manifest.write_text(good.model_dump_json())
    assert cli("diff", str(manifest), str(folder)).returncode == 0


def test_cache_is_per_algorithm_and_survives_garbage(aged: dict[str, Path], reads: list[tuple[str, int]]) -> None:
    folder = aged["algorithms"]
    sha = attest.hash_model(folder, use_cache=True)
    reads.clear()
    b3 = attest.hash_model(folder, "blake3", use_cache=True)
    assert "model.safetensors" in names(reads) and b3.model_root != sha.model_root
    assert b3 == attest.hash_model(folder, "blake3", use_cache=False)

    _cache_file(folder).write_text('{"version": 1, "files": [')  # a damaged cache is ignored, then rewritten
    reads.clear()
    assert attest.hash_model(folder, use_cache=True) == sha
    assert "model.safetensors" in names(reads)
    reads.clear()
    assert attest.hash_model(folder, use_cache=True) == sha
    assert reads == []
