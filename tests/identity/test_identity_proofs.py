"""Inclusion proofs: `attest prove` / `attest check-proof` on real checkpoints, tampering, and RFC 9162 audit paths
checked against an independent implementation for every leaf of trees of 1..33 leaves."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

import attest
from attest.errors import VerificationError
from attest.identity import TensorProof, check_proof, make_proof
from attest.identity.merkle import audit_path, root, root_from_path
from tests.identity.test_identity_roots import copy_other_files, read_tensors, write_safetensors
from tests.support.cli import attest_process


@pytest.fixture(scope="module")
def minilm_proofs(minilm_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """One CLI proof for a MiniLM tensor (104 tensors in the tree), and the roots to check it against."""
    out = tmp_path_factory.mktemp("proofs")
    m = attest.hash_model(minilm_dir)
    assert len(m.tensors) == 104
    proof = out / "proof.json"
    done = attest_process("prove", str(minilm_dir), "encoder.layer.2.output.dense.weight", "-o", str(proof))
    assert done.returncode == 0, done.stderr
    return {"manifest": m, "proof": proof, "dir": out}


def _tampered(src: Path, dst: Path, edit: object) -> Path:
    data = json.loads(src.read_text())
    edit(data)  # type: ignore[operator]
    dst.write_text(json.dumps(data))
    return dst


def test_cli_proof_checks_against_model_and_weights_root(minilm_proofs: dict) -> None:
    m, proof = minilm_proofs["manifest"], minilm_proofs["proof"]
    p = json.loads(proof.read_text())
    assert p["tree_size"] == 104 and len(p["path"]) == 7 and p["model_root"] == m.model_root
    for which, r in (("model root", m.model_root), ("weights root", m.weights_root)):
        done = attest_process("check-proof", str(proof), "--root", r)
        assert done.returncode == 0, done.stderr
        assert f"included in {which}" in done.stdout and "encoder.layer.2.output.dense.weight" in done.stdout
    other = attest_process("check-proof", str(proof), "--root", m.files_root)
    assert other.returncode == 1 and "Traceback" not in other.stderr
    upper = TensorProof.model_validate_json(proof.read_text())
    assert check_proof(upper, m.model_root.upper()) == "model_root"


def _flip_hex(s: str) -> str:
    return ("1" if s[0] == "0" else "0") + s[1:]


TAMPERS = {
    "path-element-0": lambda d: d["path"].__setitem__(0, _flip_hex(d["path"][0])),
    "path-element-last": lambda d: d["path"].__setitem__(-1, _flip_hex(d["path"][-1])),
    "path-dropped": lambda d: d["path"].pop(),
    "path-extra": lambda d: d["path"].append("00" * 32),
    "path-not-hex": lambda d: d["path"].__setitem__(0, "zz" * 32),
    "record-dtype": lambda d: d["tensor"].__setitem__("dtype", "I32"),
    "record-shape": lambda d: d["tensor"].__setitem__("shape", list(reversed(d["tensor"]["shape"]))),
    "record-name": lambda d: d["tensor"].__setitem__("name", d["tensor"]["name"] + "x"),
    "record-nbytes": lambda d: d["tensor"].__setitem__("nbytes", d["tensor"]["nbytes"] + 4),
    "record-data-root": lambda d: d["tensor"].__setitem__("data_root", _flip_hex(d["tensor"]["data_root"])),
    "index-plus-one": lambda d: d.__setitem__("index", d["index"] + 1),
    "index-minus-one": lambda d: d.__setitem__("index", d["index"] - 1),
    "index-beyond-tree": lambda d: d.__setitem__("index", d["tree_size"]),
    # RFC 9162 roots do not commit to the tree size (CT signs it in the tree head): a size giving the same path
    # shape (104 -> 105 here) still leads to the same root and proves the same, true inclusion. Sizes that change
    # the shape must fail.
    "tree-size-one": lambda d: d.__setitem__("tree_size", 1),
    "tree-size-doubled": lambda d: d.__setitem__("tree_size", 2 * d["tree_size"]),
    "tree-size-smaller": lambda d: d.__setitem__("tree_size", d["index"] + 1),
    "files-root": lambda d: d.__setitem__("files_root", _flip_hex(d["files_root"])),
    "algorithm": lambda d: d.__setitem__("algorithm", "blake3"),
}


CLI_TAMPERS = ["path-element-0", "record-dtype", "index-plus-one"]


@pytest.mark.parametrize("tamper", CLI_TAMPERS)
def test_cli_tampered_proof_fails_with_exit_1(minilm_proofs: dict, tamper: str) -> None:
    m, proof = minilm_proofs["manifest"], minilm_proofs["proof"]
    bad = _tampered(proof, minilm_proofs["dir"] / f"{tamper}.json", TAMPERS[tamper])
    done = attest_process("check-proof", str(bad), "--root", m.model_root)
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1
    assert done.stdout == ""


@pytest.mark.parametrize("tamper", sorted(TAMPERS))
def test_tampered_proof_fails(minilm_proofs: dict, tamper: str) -> None:
    """Every field a verifier recomputes from: changing it breaks the link to both roots."""
    m, proof = minilm_proofs["manifest"], minilm_proofs["proof"]
    bad = TensorProof.model_validate_json(
        _tampered(proof, minilm_proofs["dir"] / f"lib-{tamper}.json", TAMPERS[tamper]).read_text()
    )
    with pytest.raises(VerificationError):
        check_proof(bad, m.model_root)
    if tamper != "files-root":  # the files root only enters the model root
        with pytest.raises(VerificationError):
            check_proof(bad, m.weights_root)
    assert check_proof(TensorProof.model_validate_json(proof.read_text()), m.model_root) == "model_root"


def test_proof_of_a_one_tensor_model(minilm_dir: Path, tmp_path: Path) -> None:
    tensors = read_tensors(minilm_dir / "model.safetensors")[0]
    one = [t for t in tensors if t[0] == "pooler.dense.weight"] or tensors[:1]
    folder = tmp_path / "one"
    copy_other_files(minilm_dir, folder)
    write_safetensors(folder / "model.safetensors", one)
    m = attest.hash_model(folder)
    assert len(m.tensors) == 1 and m.weights_root == m.tensors[0].digest
    done = attest_process("prove", str(folder), one[0][0])
    assert done.returncode == 0, done.stderr
    (tmp_path / "p.json").write_text(done.stdout)
    p = json.loads(done.stdout)
    assert p["path"] == [] and p["tree_size"] == 1 and p["index"] == 0
    assert attest_process("check-proof", str(tmp_path / "p.json"), "--root", m.model_root).returncode == 0
    proof = TensorProof.model_validate_json(done.stdout)
    assert check_proof(proof, m.weights_root) == "weights_root"
    bad = _tampered(tmp_path / "p.json", tmp_path / "bad.json", TAMPERS["record-dtype"])
    assert attest_process("check-proof", str(bad), "--root", m.model_root).returncode == 1
    longer = TensorProof.model_validate_json(
        _tampered(tmp_path / "p.json", tmp_path / "longer.json", TAMPERS["path-extra"]).read_text()
    )
    with pytest.raises(VerificationError):
        check_proof(longer, m.model_root)


def test_library_proof_of_every_minilm_tensor(minilm_proofs: dict) -> None:
    m = minilm_proofs["manifest"]
    for i, t in enumerate(m.tensors):
        proof = make_proof(m, t.name)
        assert proof.index == i
        assert check_proof(proof, m.model_root) == "model_root"
        assert check_proof(proof, m.weights_root) == "weights_root"
        moved = proof.model_copy(update={"index": (i + 1) % len(m.tensors)})
        with pytest.raises(VerificationError):
            check_proof(moved, m.model_root)


def test_blake3_proof_and_unknown_tensor(minilm_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    m = attest.hash_model(minilm_dir, "blake3")
    done = attest_process(
        "prove", str(minilm_dir), "pooler.dense.bias", "--algorithm", "blake3", "-o", str(tmp_path / "p")
    )
    assert done.returncode == 0, done.stderr
    assert attest_process("check-proof", str(tmp_path / "p"), "--root", m.model_root).returncode == 0
    sha = attest.hash_model(minilm_dir)
    with pytest.raises(VerificationError):
        check_proof(TensorProof.model_validate_json((tmp_path / "p").read_text()), sha.model_root)

    from attest.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["prove", str(minilm_dir), "no.such.tensor"])
    assert exited.value.code == 2 and "no.such.tensor" in capsys.readouterr().err


def test_malformed_proof_file_is_input_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from attest.cli import main

    (tmp_path / "p.json").write_text('{"type": "https://attest.dev/tensor-proof/v1", "index": -1}')
    with pytest.raises(SystemExit) as exited:
        main(["check-proof", str(tmp_path / "p.json"), "--root", "00" * 32])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "p.json" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit) as exited:
        main(["check-proof", str(tmp_path / "p.json"), "--root", "not-hex"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "not a root" in err and len(err.strip().splitlines()) == 1


def test_proof_survives_resharding(minilm_dir: Path, minilm_proofs: dict, tmp_path: Path) -> None:
    """A proof made on the original checks against the root of a re-sharded copy: roots do not see sharding."""
    from tests.identity.test_identity_roots import raw_reshard

    raw_reshard(minilm_dir, tmp_path / "r", 7, seed=3)
    r = attest.hash_model(tmp_path / "r")
    proof = TensorProof.model_validate_json(minilm_proofs["proof"].read_text())
    assert check_proof(proof, r.model_root) == "model_root"


# -- RFC 9162 audit paths, checked against an implementation written from the RFC text ---------------------------


def _h(*parts: bytes) -> bytes:
    return hashlib.sha256(b"".join(parts)).digest()


def _ref_mth(leaves: list[bytes]) -> bytes:
    """RFC 9162 2.1.1 MTH with attest's leaves (already tagged hashes) and 0x01 inner nodes."""
    if not leaves:
        return _h(b"")
    if len(leaves) == 1:
        return leaves[0]
    k = 1 << ((len(leaves) - 1).bit_length() - 1)
    return _h(b"\x01", _ref_mth(leaves[:k]), _ref_mth(leaves[k:]))


def _ref_path(m: int, leaves: list[bytes]) -> list[bytes]:
    """RFC 9162 2.1.3.1 PATH(m, D[n])."""
    n = len(leaves)
    if n == 1:
        return []
    k = 1 << ((n - 1).bit_length() - 1)
    if m < k:
        return [*_ref_path(m, leaves[:k]), _ref_mth(leaves[k:])]
    return [*_ref_path(m - k, leaves[k:]), _ref_mth(leaves[:k])]


@pytest.mark.parametrize("size", range(1, 34))
def test_rfc9162_audit_paths(size: int) -> None:
    leaves = [_h(b"\x02", f"leaf {i}".encode()) for i in range(size)]
    want_root = _ref_mth(leaves)
    assert root("sha256", leaves) == want_root
    for i in range(size):
        path = audit_path("sha256", leaves, i)
        assert path == _ref_path(i, leaves)
        assert root_from_path("sha256", leaves[i], i, size, path) == want_root
        for j in range(len(path)):  # any changed sibling changes the root
            bad = [*path[:j], _h(path[j]), *path[j + 1 :]]
            assert root_from_path("sha256", leaves[i], i, size, bad) != want_root
        for other in range(size):  # the path of leaf i proves nothing for another position or leaf
            if other != i:
                try:
                    assert root_from_path("sha256", leaves[i], other, size, path) != want_root
                except ValueError:
                    pass
                assert root_from_path("sha256", leaves[other], i, size, path) != want_root
        with pytest.raises(ValueError):
            root_from_path("sha256", leaves[i], i, size, [*path, leaves[0]])
        if path:
            with pytest.raises(ValueError):
                root_from_path("sha256", leaves[i], i, size, path[:-1])
    with pytest.raises(ValueError):
        root_from_path("sha256", leaves[0], size, size, [])


def test_a_path_fits_other_sizes_unless_the_trusted_count_is_given() -> None:
    """SPEC.md 1.7: a root does not commit to its leaf count; with an authenticated count, index and size are exact."""
    leaves = [hashlib.sha256(bytes([i])).digest() for i in range(51)]
    r = root("sha256", leaves)
    for index in (0, 20, 48, 50):
        path = audit_path("sha256", leaves, index)
        fits = {(i, n) for n in range(1, 130) for i in range(n) if _fits(leaves[index], i, n, path, r)}
        assert (index, 51) in fits and len(fits) > 1  # the ambiguity the spec documents
        assert [i for i, n in fits if n == 51] == [index]  # a fixed size pins the index


def _fits(leaf: bytes, index: int, size: int, path: list[bytes], want: bytes) -> bool:
    try:
        return root_from_path("sha256", leaf, index, size, path) == want
    except ValueError:
        return False


def test_trusted_tree_size_must_match(minilm_proofs: dict) -> None:
    m, path = minilm_proofs["manifest"], minilm_proofs["proof"]
    proof = TensorProof.model_validate_json(path.read_text())
    assert check_proof(proof, m.model_root, 104) == "model_root"
    with pytest.raises(VerificationError, match="trusted count is 105"):
        check_proof(proof, m.model_root, 105)
    done = attest_process("check-proof", str(path), "--root", m.model_root, "--tree-size", "104")
    assert done.returncode == 0 and "at index" in done.stdout, done.stderr
    assert attest_process("check-proof", str(path), "--root", m.model_root, "--tree-size", "103").returncode == 1


def test_repeated_key_in_a_proof_is_refused(minilm_proofs: dict, tmp_path: Path) -> None:
    """A repeated key must not resolve to its last value (two readers would see two proofs)."""
    m, text = minilm_proofs["manifest"], minilm_proofs["proof"].read_text()
    dup = tmp_path / "dup.json"
    dup.write_text(text.rstrip().removesuffix("}") + ', "index": 0}')
    done = attest_process("check-proof", str(dup), "--root", m.model_root)
    assert done.returncode == 2 and "duplicate key 'index'" in done.stderr


def test_cli_check_proof_json(minilm_proofs: dict) -> None:
    from tests.support.json_output import parse_output

    m, proof = minilm_proofs["manifest"], minilm_proofs["proof"]
    done = attest_process("check-proof", str(proof), "--root", m.weights_root, "--json")
    assert done.returncode == 0, done.stderr
    doc = parse_output(done.stdout, "check-proof-output.schema.json")
    assert doc["ok"] and doc["matched"] == "weights_root" and doc["tensor"] == "encoder.layer.2.output.dense.weight"
    done = attest_process("check-proof", str(proof), "--root", m.files_root, "--json")
    doc = parse_output(done.stdout, "check-proof-output.schema.json")
    assert done.returncode == 1 and not doc["ok"] and "matched" not in doc and doc["problem"]
