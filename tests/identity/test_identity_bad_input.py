"""Hostile and broken model folders: every one is refused by `attest hash` with exit code 2 and exactly one line
on stderr that names the file and the problem, never a traceback or a hang. Plus a seeded mutation fuzz of the
header parser (hypothesis is not a dependency of this project)."""

from __future__ import annotations

import json
import os
import random
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from attest.errors import InputError
from attest.identity.safetensors_reader import MAX_HEADER_BYTES, parse_header

ST = "model.safetensors"


def st_bytes(header: object, data: bytes = b"", raw_header: bytes | None = None) -> bytes:
    raw = raw_header if raw_header is not None else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def entry(dtype: str, shape: list[int], begin: int, end: int) -> dict[str, object]:
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


GOOD = {"a": entry("F32", [2], 0, 8), "b": entry("U8", [4], 8, 12)}
GOOD_DATA = struct.pack("<2f", 1.0, 2.0) + bytes([1, 2, 3, 4])


def model(folder: Path, weights: bytes | None = None, name: str = ST) -> Path:
    """A small valid model folder (config + one weight file), then whatever the case breaks."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text('{"model_type": "test"}')
    (folder / name).write_bytes(weights if weights is not None else st_bytes(GOOD, GOOD_DATA))
    return folder


# Each case builds a folder under tmp and returns (folder to hash, text naming the file, text naming the problem).
Case = Callable[[Path], tuple[Path, str, str]]


def truncated(tmp: Path) -> tuple[Path, str, str]:
    full = st_bytes(GOOD, GOOD_DATA)
    return model(tmp / "m", full[:-5]), ST, "truncated"


def truncated_before_length(tmp: Path) -> tuple[Path, str, str]:
    return model(tmp / "m", b"\x10\x00\x00"), ST, "truncated"


def header_beyond_file(tmp: Path) -> tuple[Path, str, str]:
    return model(tmp / "m", struct.pack("<Q", 4096) + b'{"a": 1}'), ST, "runs past the end"


def header_over_limit(tmp: Path) -> tuple[Path, str, str]:
    """Only the 8-byte length claims 100 MB + 1: nothing that large is ever written or read."""
    return model(tmp / "m", struct.pack("<Q", MAX_HEADER_BYTES + 1) + b"{}"), ST, "exceeds the 100000000-byte limit"


def header_huge_length(tmp: Path) -> tuple[Path, str, str]:
    return model(tmp / "m", b"\xff" * 8 + b"{}"), ST, "exceeds the 100000000-byte limit"


def invalid_json(tmp: Path) -> tuple[Path, str, str]:
    return model(tmp / "m", st_bytes(None, b"", raw_header=b'{"a": {"dtype": "U8",')), ST, "not valid JSON"


def non_object_json(tmp: Path) -> tuple[Path, str, str]:
    return model(tmp / "m", st_bytes([1, 2, 3])), ST, "not a JSON object"


def non_object_json_padded(tmp: Path) -> tuple[Path, str, str]:
    return model(tmp / "m", st_bytes(None, raw_header=b'  "{}"  ')), ST, "not a JSON object"


def not_utf8(tmp: Path) -> tuple[Path, str, str]:
    return model(tmp / "m", st_bytes(None, raw_header=b'{"\xff": 1}')), ST, "not valid UTF-8"


def unknown_dtype(tmp: Path) -> tuple[Path, str, str]:
    return model(tmp / "m", st_bytes({"a": entry("F128", [1], 0, 16)}, bytes(16))), ST, "unknown dtype 'F128'"


def size_mismatch(tmp: Path) -> tuple[Path, str, str]:
    h = {"a": entry("F32", [3], 0, 8)}
    return model(tmp / "m", st_bytes(h, bytes(8))), ST, "needs 12 bytes but data_offsets span 8"


def sub_byte_mismatch(tmp: Path) -> tuple[Path, str, str]:
    h = {"a": entry("F4", [3], 0, 2)}  # 12 bits is not a whole number of bytes
    return model(tmp / "m", st_bytes(h, bytes(2))), ST, "the element count does not fill whole bytes"


def overlapping(tmp: Path) -> tuple[Path, str, str]:
    h = {"a": entry("U8", [8], 0, 8), "b": entry("U8", [8], 4, 12)}
    return model(tmp / "m", st_bytes(h, bytes(12))), ST, "overlaps"


def overlapping_alias(tmp: Path) -> tuple[Path, str, str]:
    """Two names for the same bytes: a classic way to make one tensor's edit show up in another."""
    h = {"a": entry("U8", [8], 0, 8), "b": entry("U8", [8], 0, 8)}
    return model(tmp / "m", st_bytes(h, bytes(8))), ST, "overlaps"


def gapped(tmp: Path) -> tuple[Path, str, str]:
    h = {"a": entry("U8", [4], 0, 4), "b": entry("U8", [4], 8, 12)}
    return model(tmp / "m", st_bytes(h, bytes(12))), ST, "gap of 4 bytes"


def out_of_bounds(tmp: Path) -> tuple[Path, str, str]:
    h = {"a": entry("U8", [4], 0, 4), "b": entry("U8", [1 << 40], 4, 4 + (1 << 40))}
    return model(tmp / "m", st_bytes(h, bytes(8))), ST, "out of bounds"


def reversed_offsets(tmp: Path) -> tuple[Path, str, str]:
    h = {"a": entry("U8", [0], 4, 0)}
    return model(tmp / "m", st_bytes(h, bytes(4))), ST, "begin <= end"


def trailing_bytes(tmp: Path) -> tuple[Path, str, str]:
    return model(tmp / "m", st_bytes(GOOD, GOOD_DATA + b"hidden")), ST, "6 bytes after the last tensor"


def duplicate_keys(tmp: Path) -> tuple[Path, str, str]:
    raw = (
        b'{"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]},'
        b' "a": {"dtype": "I8", "shape": [4], "data_offsets": [0, 4]}}'
    )
    return model(tmp / "m", st_bytes(None, bytes(4), raw_header=raw)), ST, "duplicate key 'a'"


def duplicate_keys_in_entry(tmp: Path) -> tuple[Path, str, str]:
    raw = b'{"a": {"dtype": "U8", "dtype": "I8", "shape": [4], "data_offsets": [0, 4]}}'
    return model(tmp / "m", st_bytes(None, bytes(4), raw_header=raw)), ST, "duplicate key 'dtype'"


def bad_metadata(tmp: Path) -> tuple[Path, str, str]:
    return model(tmp / "m", st_bytes({**GOOD, "__metadata__": {"n": 1}}, GOOD_DATA)), ST, "__metadata__"


def extra_entry_field(tmp: Path) -> tuple[Path, str, str]:
    h = {"a": {**entry("U8", [4], 0, 4), "extra": 1}}
    return model(tmp / "m", st_bytes(h, bytes(4))), ST, "exactly dtype, shape and data_offsets"


def float_offsets(tmp: Path) -> tuple[Path, str, str]:
    h = {"a": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4.0]}}
    return model(tmp / "m", st_bytes(h, bytes(4))), ST, "data_offsets must be two integers"


def negative_shape(tmp: Path) -> tuple[Path, str, str]:
    return model(tmp / "m", st_bytes({"a": entry("U8", [-4], 0, 4)}, bytes(4))), ST, "non-negative integers"


def too_many_dims(tmp: Path) -> tuple[Path, str, str]:
    return model(tmp / "m", st_bytes({"a": entry("U8", [1] * 65, 0, 1)}, bytes(1))), ST, "65 dimensions"


def empty_name(tmp: Path) -> tuple[Path, str, str]:
    return model(tmp / "m", st_bytes({"": entry("U8", [4], 0, 4)}, bytes(4))), ST, "empty tensor name"


def lone_surrogate_name(tmp: Path) -> tuple[Path, str, str]:
    raw = b'{"a\\ud800": {"dtype": "U8", "shape": [4], "data_offsets": [0, 4]}}'
    return model(tmp / "m", st_bytes(None, bytes(4), raw_header=raw)), ST, "not valid Unicode"


def deep_nesting(tmp: Path) -> tuple[Path, str, str]:
    raw = b'{"a": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    return model(tmp / "m", st_bytes(None, raw_header=raw)), ST, "not valid JSON"


def huge_integer(tmp: Path) -> tuple[Path, str, str]:
    raw = b'{"a": {"dtype": "U8", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 4]}}'
    return model(tmp / "m", st_bytes(None, bytes(4), raw_header=raw)), ST, "not valid JSON"


def same_tensor_two_shards(tmp: Path) -> tuple[Path, str, str]:
    m = model(tmp / "m", st_bytes(GOOD, GOOD_DATA), name="model-00001-of-00002.safetensors")
    (m / "model-00002-of-00002.safetensors").write_bytes(st_bytes({"b": entry("U8", [2], 0, 2)}, b"xy"))
    return m, "model-00002-of-00002.safetensors", "tensor 'b' is also stored in model-00001-of-00002.safetensors"


def _index(folder: Path, weight_map: dict[str, str]) -> None:
    (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def index_missing_shard(tmp: Path) -> tuple[Path, str, str]:
    m = model(tmp / "m", name="model-00001-of-00002.safetensors")
    _index(m, {"a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"})
    return m, "model.safetensors.index.json", "missing shard 'model-00002-of-00002.safetensors'"


def index_parent_path(tmp: Path) -> tuple[Path, str, str]:
    """The file `../x.safetensors` exists and is valid: the index must still not reach it."""
    m = model(tmp / "m")
    (tmp / "x.safetensors").write_bytes(st_bytes({"b": entry("U8", [4], 0, 4)}, bytes(4)))
    _index(m, {"a": ST, "b": "../x.safetensors"})
    return m, "model.safetensors.index.json", "points outside the folder: '../x.safetensors'"


def index_absolute_path(tmp: Path) -> tuple[Path, str, str]:
    m = model(tmp / "m")
    _index(m, {"a": str(m / ST)})
    return m, "model.safetensors.index.json", "points outside the folder"


def index_backslash_path(tmp: Path) -> tuple[Path, str, str]:
    m = model(tmp / "m")
    _index(m, {"a": "..\\x.safetensors"})
    return m, "model.safetensors.index.json", "points outside the folder"


def index_names_subfolder_file(tmp: Path) -> tuple[Path, str, str]:
    m = model(tmp / "m")
    (m / "sub").mkdir()
    (m / "sub" / "w.safetensors").write_bytes(st_bytes({"c": entry("U8", [1], 0, 1)}, b"z"))
    _index(m, {"a": ST, "b": ST, "c": "sub/w.safetensors"})
    return m, "model.safetensors.index.json", "not a top-level .safetensors file"


def index_misplaces_tensor(tmp: Path) -> tuple[Path, str, str]:
    m = model(tmp / "m")
    _index(m, {"a": ST, "b": ST, "zzz": ST})
    return m, "model.safetensors.index.json", "'zzz' in model.safetensors, which does not hold it"


def index_omits_tensor(tmp: Path) -> tuple[Path, str, str]:
    m = model(tmp / "m")
    _index(m, {"a": ST})
    return m, "model.safetensors.index.json", "holds 'b', which weight_map does not list"


def index_duplicate_keys(tmp: Path) -> tuple[Path, str, str]:
    m = model(tmp / "m")
    (m / "model.safetensors.index.json").write_text('{"weight_map": {"a": "model.safetensors", "a": "other"}}')
    return m, "model.safetensors.index.json", "duplicate key 'a'"


def index_not_json(tmp: Path) -> tuple[Path, str, str]:
    m = model(tmp / "m")
    (m / "model.safetensors.index.json").write_text('{"weight_map": ')
    return m, "model.safetensors.index.json", "not valid JSON"


def index_no_weight_map(tmp: Path) -> tuple[Path, str, str]:
    m = model(tmp / "m")
    (m / "model.safetensors.index.json").write_text("[]")
    return m, "model.safetensors.index.json", "no weight_map"


def index_metadata_dtype(tmp: Path) -> tuple[Path, str, str]:
    """transformers reads metadata.dtype as the load dtype; the index is outside the roots, so it is refused."""
    m = model(tmp / "m")
    index = {"metadata": {"total_size": 12, "dtype": "float16"}, "weight_map": {"a": ST, "b": ST}}
    (m / "model.safetensors.index.json").write_text(json.dumps(index))
    return m, "model.safetensors.index.json", "metadata has key 'dtype'"


def index_metadata_total_size_not_int(tmp: Path) -> tuple[Path, str, str]:
    m = model(tmp / "m")
    index = {"metadata": {"total_size": "12"}, "weight_map": {"a": ST, "b": ST}}
    (m / "model.safetensors.index.json").write_text(json.dumps(index))
    return m, "model.safetensors.index.json", "'total_size' is not a non-negative integer"


def _zero_size_tensors(first: int, count: int) -> bytes:
    """A valid safetensors file of `count` zero-size tensors (the cheapest way to inflate a tensor count)."""
    body = ",".join(
        f'"t{i:07d}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}' for i in range(first, first + count)
    )
    return st_bytes(None, raw_header=("{" + body + "}").encode())


@pytest.mark.parametrize("shards", [1, 3])
def test_tensor_count_is_bounded_per_folder(
    shards: int, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Zero-size tensors cost nothing to store and a record each to hash: the count is capped per folder (three
    shards each under the cap, together over it, are refused too). The cap is lowered here only to keep the test
    fast; the header parser stops at the cap instead of building the whole header."""
    from attest.cli import main
    from attest.identity import folder as folder_module

    cap = 3000
    monkeypatch.setattr(folder_module, "MAX_TENSORS", cap)
    m = tmp_path / "m"
    m.mkdir()
    per = cap // shards + 1
    for i in range(shards):
        (m / f"model-{i}.safetensors").write_bytes(_zero_size_tensors(i * per, per))
    with pytest.raises(SystemExit) as exited:
        main(["hash", "--no-cache", str(m)])
    out = capsys.readouterr()
    _check_one_line(exited.value.code, out.out, out.err, f"model-{shards - 1}.safetensors", f"more than the {cap}")
    (m / f"model-{shards - 1}.safetensors").write_bytes(_zero_size_tensors((shards - 1) * per, per - shards))
    assert main_ok(m)


def main_ok(folder: Path) -> bool:
    from attest.identity import hash_model

    return len(hash_model(folder).tensors) > 0


def index_empty_weight_map(tmp: Path) -> tuple[Path, str, str]:
    # A pickle-only folder has no safetensors file an empty map could fail to cover: it must still be refused.
    m = tmp / "m"
    m.mkdir()
    (m / "pytorch_model.bin").write_bytes(b"not unpickled")
    _index(m, {})
    return m, "model.safetensors.index.json", "weight_map is empty"


def symlink_out(tmp: Path) -> tuple[Path, str, str]:
    (tmp / "secret.txt").write_text("outside")
    m = model(tmp / "m")
    (m / "tokenizer.json").symlink_to(tmp / "secret.txt")
    return m, "tokenizer.json", "symlink leads outside the model folder"


def symlink_weights_out(tmp: Path) -> tuple[Path, str, str]:
    (tmp / "elsewhere.safetensors").write_bytes(st_bytes(GOOD, GOOD_DATA))
    m = tmp / "m"
    m.mkdir()
    (m / "config.json").write_text("{}")
    (m / ST).symlink_to(tmp / "elsewhere.safetensors")
    return m, ST, "symlink leads outside the model folder"


def symlink_dotdot(tmp: Path) -> tuple[Path, str, str]:
    m = model(tmp / "m")
    (m / "up.txt").symlink_to(Path("..") / "m" / ".." / "outside.txt")
    (tmp / "outside.txt").write_text("x")
    return m, "up.txt", "symlink leads outside"


def symlinked_folder_out(tmp: Path) -> tuple[Path, str, str]:
    (tmp / "other").mkdir()
    m = model(tmp / "m")
    (m / "extra").symlink_to(tmp / "other", target_is_directory=True)
    return m, "extra", "symlink leads outside"


def broken_symlink(tmp: Path) -> tuple[Path, str, str]:
    m = model(tmp / "m")
    (m / "vocab.txt").symlink_to(m / "gone.txt")
    return m, "vocab.txt", "broken or looping symlink"


def looping_symlink(tmp: Path) -> tuple[Path, str, str]:
    m = model(tmp / "m")
    (m / "loop.txt").symlink_to(m / "loop.txt")
    return m, "loop.txt", "broken or looping symlink"


def empty_folder(tmp: Path) -> tuple[Path, str, str]:
    (tmp / "m").mkdir()
    return tmp / "m", "m", "empty folder"


def no_weights(tmp: Path) -> tuple[Path, str, str]:
    m = tmp / "m"
    (m / "sub").mkdir(parents=True)
    (m / "config.json").write_text("{}")
    (m / "sub" / "model.safetensors").write_bytes(st_bytes(GOOD, GOOD_DATA))  # not top level: not weights
    return m, "m", "no weights"


def only_excluded(tmp: Path) -> tuple[Path, str, str]:
    m = tmp / "m"
    (m / ".git").mkdir(parents=True)
    (m / ".git" / ST).write_bytes(st_bytes(GOOD, GOOD_DATA))
    return m, "m", "no weights"


def fifo(tmp: Path) -> tuple[Path, str, str]:
    m = model(tmp / "m")
    os.mkfifo(m / "tokenizer.json")
    return m, "tokenizer.json", "not a regular file"


def fifo_weights(tmp: Path) -> tuple[Path, str, str]:
    m = tmp / "m"
    m.mkdir()
    os.mkfifo(m / ST)
    return m, ST, "not a regular file"


def nonexistent(tmp: Path) -> tuple[Path, str, str]:
    return tmp / "does-not-exist", "does-not-exist", "no such folder"


def not_a_folder(tmp: Path) -> tuple[Path, str, str]:
    (tmp / "file.safetensors").write_bytes(st_bytes(GOOD, GOOD_DATA))
    return tmp / "file.safetensors", "file.safetensors", "not a folder"


def non_utf8_file_name(tmp: Path) -> tuple[Path, str, str]:
    m = model(tmp / "m")
    with open(os.path.join(os.fsencode(m), b"vocab\xff.txt"), "wb") as fh:
        fh.write(b"x")
    return m, "vocab", "file name is not valid UTF-8"


# The cases issue #2 names: each runs the real `attest` command in a subprocess.
ISSUE_CASES: list[Case] = [
    truncated,
    header_beyond_file,
    header_over_limit,
    invalid_json,
    non_object_json,
    unknown_dtype,
    size_mismatch,
    overlapping,
    gapped,
    out_of_bounds,
    trailing_bytes,
    duplicate_keys,
    same_tensor_two_shards,
    index_missing_shard,
    index_parent_path,
    symlink_out,
    empty_folder,
    no_weights,
    fifo,
    nonexistent,
]

# More ways to lie: the same contract, through the same `main()` in this process (interpreter start-up is slow
# on these machines and adds nothing to what these cases show).
MORE_CASES: list[Case] = [
    truncated_before_length,
    header_huge_length,
    non_object_json_padded,
    not_utf8,
    sub_byte_mismatch,
    overlapping_alias,
    reversed_offsets,
    duplicate_keys_in_entry,
    bad_metadata,
    extra_entry_field,
    float_offsets,
    negative_shape,
    too_many_dims,
    empty_name,
    lone_surrogate_name,
    deep_nesting,
    huge_integer,
    index_absolute_path,
    index_backslash_path,
    index_names_subfolder_file,
    index_misplaces_tensor,
    index_omits_tensor,
    index_duplicate_keys,
    index_not_json,
    index_no_weight_map,
    index_metadata_dtype,
    index_metadata_total_size_not_int,
    index_empty_weight_map,
    symlink_weights_out,
    symlink_dotdot,
    symlinked_folder_out,
    broken_symlink,
    looping_symlink,
    only_excluded,
    fifo_weights,
    not_a_folder,
    non_utf8_file_name,
]


def _check_one_line(code: object, stdout: str, stderr: str, names_file: str, names_problem: str) -> None:
    lines = stderr.strip().splitlines()
    assert code == 2, stderr
    assert len(lines) == 1, stderr
    assert "Traceback" not in stderr and stdout == ""
    line = lines[0]
    assert line.startswith("attest: error: "), line
    assert names_file in line, line
    assert names_problem in line, line


@pytest.mark.parametrize("case", ISSUE_CASES, ids=[c.__name__ for c in ISSUE_CASES])
def test_bad_input_cli(case: Case, tmp_path: Path) -> None:
    folder, names_file, names_problem = case(tmp_path)
    done = subprocess.run(
        [sys.executable, "-m", "attest", "hash", "--no-cache", str(folder)],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "ATTEST_DEBUG": ""},
    )
    _check_one_line(done.returncode, done.stdout, done.stderr, names_file, names_problem)


@pytest.mark.parametrize("case", MORE_CASES, ids=[c.__name__ for c in MORE_CASES])
def test_bad_input_main(
    case: Case, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from attest.cli import main

    monkeypatch.delenv("ATTEST_DEBUG", raising=False)
    folder, names_file, names_problem = case(tmp_path)
    with pytest.raises(SystemExit) as exited:
        main(["hash", "--no-cache", str(folder)])
    out = capsys.readouterr()
    _check_one_line(exited.value.code, out.out, out.err, names_file, names_problem)


def test_tensor_cap_stops_the_parser_early() -> None:
    """A header far over the cap is refused from inside the JSON parser: it is never built in memory."""
    from attest.identity.safetensors_reader import TensorCountError

    raw = _zero_size_tensors(0, 50_000)[8:]
    with pytest.raises(TensorCountError, match="more than the 10 tensors"):
        parse_header(Path("m.safetensors"), raw, len(raw) + 8, max_tensors=10)


def test_valid_control_folder_hashes(tmp_path: Path) -> None:
    """The base every case breaks is itself valid, so each case fails for its own reason."""
    m = model(tmp_path / "m")
    _index(m, {"a": ST, "b": ST})
    os.symlink(m / "config.json", m / "config-link.json")  # a symlink inside the folder is fine
    done = subprocess.run(
        [sys.executable, "-m", "attest", "hash", "--no-cache", "--json", str(m)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    assert [t["name"] for t in out["tensors"]] == ["a", "b"]
    assert {f["path"] for f in out["files"]} == {"config.json", "config-link.json"}


def test_library_raises_input_error_naming_the_file(tmp_path: Path) -> None:
    import attest

    folder, _, problem = overlapping(tmp_path)
    with pytest.raises(InputError) as err:
        attest.hash_model(folder)
    assert err.value.path == str(folder / ST) and problem in err.value.problem


def test_hostile_files_are_not_modified(tmp_path: Path) -> None:
    """Refusing a folder leaves every file as it was (nothing is repaired or written)."""
    folder, _, _ = trailing_bytes(tmp_path)
    before = {p: p.read_bytes() for p in folder.iterdir()}
    subprocess.run([sys.executable, "-m", "attest", "hash", str(folder)], capture_output=True, timeout=60)
    assert {p: p.read_bytes() for p in folder.iterdir()} == before


# -- fuzz: random mutations of valid headers either parse or raise InputError, nothing else -----------------------


def _valid_headers() -> list[tuple[bytes, int]]:
    out = []
    for h, data_len in (
        (GOOD, len(GOOD_DATA)),
        ({"__metadata__": {"format": "pt"}, "x": entry("BF16", [2, 3], 0, 12), "y": entry("F4", [4], 12, 14)}, 14),
        ({"e": entry("F8_E4M3", [0], 0, 0)}, 0),
    ):
        raw = json.dumps(h).encode()
        out.append((raw, 8 + len(raw) + data_len))
    return out


TOKENS = [b'"', b"{", b"}", b"[", b"]", b",", b":", b"-1", b"1e9", b"\\u0000", b"\\ud800", b"\xff", b"null", b"NaN"]


def _mutate(rng: random.Random, raw: bytes) -> bytes:
    b = bytearray(raw)
    for _ in range(rng.randint(1, 4)):
        op = rng.randrange(5)
        i = rng.randrange(len(b) + 1)
        if op == 0 and b:
            b[min(i, len(b) - 1)] = rng.randrange(256)
        elif op == 1:
            b[i:i] = rng.choice(TOKENS)
        elif op == 2 and b:
            del b[i : i + rng.randint(1, 8)]
        elif op == 3:
            digits = str(rng.choice([0, 1, 7, 2**31, 2**63, 2**64 + 1, 10**40]))
            b[i:i] = digits.encode()
        else:
            j = rng.randrange(len(b) + 1)
            b[i:i] = b[j : j + rng.randint(1, 16)]
    return bytes(b)


def test_parse_header_mutation_fuzz() -> None:
    rng = random.Random(20261125)
    seen_ok = seen_err = 0
    for raw, size in _valid_headers():
        parse_header(Path("fuzz.safetensors"), raw, size)  # the seeds are valid
        for _ in range(1500):
            mutated = _mutate(rng, raw)
            file_size = rng.choice([size, size + len(mutated) - len(raw), size + 1, max(0, size - 3)])
            try:
                parse_header(Path("fuzz.safetensors"), mutated, file_size)
                seen_ok += 1
            except InputError as exc:
                assert exc.path == "fuzz.safetensors" and "\n" not in str(exc)
                seen_err += 1
    assert seen_err > 1000 and seen_ok > 0


def test_real_minilm_header_mutation_fuzz(minilm_dir: Path) -> None:
    """Mutations of a real 11 kB header: the reader refuses or accepts, and never raises anything else."""
    raw_file = (minilm_dir / ST).open("rb").read(20_000)
    (n,) = struct.unpack("<Q", raw_file[:8])
    raw = raw_file[8 : 8 + n]
    size = (minilm_dir / ST).stat().st_size
    parse_header(Path(ST), raw, size)
    rng = random.Random(7)
    for _ in range(300):
        try:
            parse_header(Path(ST), _mutate(rng, raw), size)
        except InputError:
            pass


@pytest.mark.parametrize("how", ["replaced", "rewritten"])
def test_file_changed_while_hashing_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    """A header validated from one file and bytes read from another would be an identity of nothing that existed."""
    import attest
    import attest.identity.chunked as chunked

    folder = model(tmp_path / "m")
    target = folder / ST
    real = chunked._hash_unit
    done: list[bool] = []

    def swap_then_hash(algorithm, spans, unit):  # type: ignore[no-untyped-def]
        if not done:
            done.append(True)
            other = st_bytes(GOOD, GOOD_DATA[::-1])  # same size, same header, other bytes
            if how == "replaced":
                (tmp_path / "new").write_bytes(other)
                os.replace(tmp_path / "new", target)
            else:
                target.write_bytes(other)
                os.utime(target, ns=(1, 1))
        return real(algorithm, spans, unit)

    good = attest.hash_model(folder)
    target.write_bytes(st_bytes(GOOD, GOOD_DATA))
    monkeypatch.setattr(chunked, "_hash_unit", swap_then_hash)
    with pytest.raises(InputError) as err:
        attest.hash_model(folder, workers=1)
    assert err.value.path == str(target) and "changed while it was being hashed" in err.value.problem
    monkeypatch.setattr(chunked, "_hash_unit", real)
    assert attest.hash_model(folder).model_root != good.model_root  # the new content is a different model


def test_newline_in_a_file_name_cannot_forge_an_output_line(tmp_path: Path) -> None:
    """A hostile file name with a newline and an escape sequence is shown escaped, on the one error line."""
    import subprocess
    import sys

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "evil\nattest: verified OK\x1b[2J.safetensors").write_bytes(b"\x01")
    done = subprocess.run([sys.executable, "-m", "attest", "hash", str(folder)], capture_output=True, text=True)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "\\n" in lines[0] and "\\x1b" in lines[0], done.stderr
