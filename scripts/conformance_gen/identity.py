"""Identity and proof vectors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from attest.conformance import Expectation, Roots, Vector
from attest.identity import hash_model, make_proof
from attest.identity.chunked import CHUNK_SIZE
from scripts.conformance_gen.common import accept, reject, write
from scripts.conformance_gen.folders import INVALID_FOLDERS, VALID_FOLDERS


def identity_vectors(out: Path) -> tuple[list[Vector], dict[str, dict[str, Roots]]]:
    vectors, roots = [], {}
    for name, build, spec, description in VALID_FOLDERS:
        rel = f"identity/valid/{name}"
        for path, data in build().items():
            write(out, f"{rel}/{path}", data)
        per_alg = {}
        for alg in ("sha256", "blake3"):
            m = hash_model(out / rel, alg)
            per_alg[alg] = Roots(weights_root=m.weights_root, files_root=m.files_root, model_root=m.model_root)
        roots[name] = per_alg
        vectors.append(
            Vector(
                id=f"id-{name}",
                kind="identity",
                path=rel,
                spec=spec,
                description=description,
                expect=accept(roots=per_alg),
            )
        )
    for name, files, reason, message in INVALID_FOLDERS:
        rel = f"identity/invalid/{name}"
        for path, data in files.items():
            write(out, f"{rel}/{path}", data)
        section = "1.5" if name == "no-weights" else "1.6"
        vectors.append(
            Vector(
                id=f"id-{name}",
                kind="identity",
                path=rel,
                spec=[section],
                description=f"refused: {reason}",
                expect=reject(2, reason, "InputError", message),
            )
        )
    return vectors, roots


def proof_vectors(out: Path, roots: dict[str, dict[str, Roots]]) -> list[Vector]:
    vectors: list[Vector] = []
    dtypes = hash_model(out / "identity/valid/every-dtype")
    dtypes_b3 = hash_model(out / "identity/valid/every-dtype", "blake3")
    single = hash_model(out / "identity/valid/single-file")
    multi = hash_model(out / "identity/valid/multi-chunk")
    wide = hash_model(out / "identity/valid/non-ascii")
    base = make_proof(dtypes, "t.F32").model_dump(mode="json")  # index 4 of 22: the left 16-leaf subtree

    def add(
        vid: str, proof: dict[str, Any], root: str, expect: Expectation, description: str, tree_size: int | None = None
    ) -> None:
        rel = f"proofs/{'valid' if expect.verdict == 'accept' else 'invalid'}/{vid}.json"
        write(out, rel, (json.dumps(proof, indent=2, ensure_ascii=False) + "\n").encode())
        spec = ["1.7"] if "2p53" not in vid else ["1.6", "1.7"]
        vectors.append(
            Vector(
                id=f"proof-{vid}",
                kind="proof",
                path=rel,
                spec=spec,
                description=description,
                root=root,
                tree_size=tree_size,
                expect=expect,
            )
        )

    def edited(edit: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
        doc = json.loads(json.dumps(base))
        edit(doc)
        return doc

    m_root, w_root = dtypes.model_root, dtypes.weights_root
    add("model-root", base, m_root, accept(matched="model_root"), "t.F32 of every-dtype against its model root")
    add("weights-root", base, w_root, accept(matched="weights_root"), "the same proof against the weights root")
    add("trusted-count", base, m_root, accept(matched="model_root"), "with the trusted tensor count 22", 22)
    add(
        "blake3",
        make_proof(dtypes_b3, "t.BF16").model_dump(mode="json"),
        dtypes_b3.model_root,
        accept(matched="model_root"),
        "algorithm blake3 is taken from the proof",
    )
    add(
        "first-of-three",
        make_proof(single, "embed.weight").model_dump(mode="json"),
        single.model_root,
        accept(matched="model_root"),
        "first leaf of single-file's three",
    )
    add(
        "last-of-three",
        make_proof(single, "lm_head.weight").model_dump(mode="json"),
        single.model_root,
        accept(matched="model_root"),
        "last leaf of three (the path skips a level)",
    )
    add(
        "one-tensor-tree",
        make_proof(multi, "big").model_dump(mode="json"),
        multi.weights_root,
        accept(matched="weights_root"),
        "a tree of one leaf: empty path, the leaf is the root",
    )
    add(
        "non-ascii-name",
        make_proof(wide, "x\U0001f642").model_dump(mode="json"),
        wide.model_root,
        accept(matched="model_root"),
        "a non-ASCII tensor name (JCS writes UTF-8)",
    )
    add(
        "other-tree-size",
        edited(lambda d: d.update(tree_size=23)),
        m_root,
        accept(matched="model_root"),
        "tree_size 23 fits the same path: without a trusted count a proof shows inclusion only",
    )
    for vid, edit, description in [
        ("name", lambda d: d["tensor"].update(name="t.F64"), "tensor name changed"),
        ("dtype", lambda d: d["tensor"].update(dtype="I32"), "dtype changed"),
        ("shape", lambda d: d["tensor"].update(shape=[1, 2]), "shape changed"),
        ("nbytes", lambda d: d["tensor"].update(nbytes=9), "nbytes changed"),
        ("data-root", lambda d: d["tensor"].update(data_root="00" * 32), "data root changed"),
        ("path-element", lambda d: d["path"].__setitem__(0, "00" * 32), "an audit path hash changed"),
        ("files-root", lambda d: d.update(files_root="00" * 32), "files_root changed (model root check)"),
        ("index", lambda d: d.update(index=5), "index changed (same path length)"),
        ("path-reversed", lambda d: d["path"].reverse(), "audit path in the wrong order"),
    ]:
        add(
            vid,
            edited(edit),
            m_root,
            reject(1, "proof-root-mismatch", "VerificationError", "does not lead to"),
            description,
        )
    add(
        "files-root-as-root",
        base,
        dtypes.files_root,
        reject(1, "proof-root-mismatch", "VerificationError", "does not lead to"),
        "the files root is neither a model root nor a weights root of the proof",
    )
    add(
        "path-too-long",
        edited(lambda d: d["path"].append("00" * 32)),
        m_root,
        reject(1, "proof-path-length", "VerificationError", "longer than the tree is deep"),
        "one hash more than (index, tree_size) implies",
    )
    add(
        "path-too-short",
        edited(lambda d: d["path"].pop()),
        m_root,
        reject(1, "proof-path-length", "VerificationError", "shorter than the tree is deep"),
        "one hash fewer than (index, tree_size) implies",
    )
    add(
        "index-outside-tree",
        edited(lambda d: d.update(index=22)),
        m_root,
        reject(1, "proof-index-outside", "VerificationError", "outside a tree"),
        "index = tree_size",
    )
    add(
        "chunk-size",
        edited(lambda d: d.update(chunk_size=CHUNK_SIZE * 2)),
        m_root,
        reject(1, "proof-chunk-size", "VerificationError", "chunk size"),
        "chunk_size other than 1048576",
    )
    add(
        "untrusted-count",
        edited(lambda d: d.update(tree_size=23)),
        m_root,
        reject(1, "proof-tree-size", "VerificationError", "trusted count is 22"),
        "tree_size 23 fits the path but the trusted count is 22",
        22,
    )
    add(
        "bad-hex",
        edited(lambda d: d["path"].__setitem__(0, "zz" * 32)),
        m_root,
        reject(1, "proof-malformed", "VerificationError", "malformed proof"),
        "an audit path entry that is not hex",
    )
    for vid, edit, description in [
        ("extra-key", lambda d: d.update(note="x"), "a key the schema does not have"),
        ("negative-index", lambda d: d.update(index=-1), "a negative index"),
        ("zero-tree-size", lambda d: d.update(tree_size=0), "tree_size 0"),
        ("dimension-above-2p53", lambda d: d["tensor"].update(shape=[2**53]), "an integer above 2^53 - 1"),
        ("unknown-algorithm", lambda d: d.update(algorithm="md5"), "an algorithm other than sha256/blake3"),
        ("wrong-type", lambda d: d.update(type="https://attest.dev/tensor-proof/v2"), "another proof type"),
    ]:
        add(vid, edited(edit), m_root, reject(2, "proof-schema", "InputError", "not a valid TensorProof"), description)
    dup = json.dumps(base, indent=2)[:-2] + ',\n  "index": 5\n}'
    vectors_dup = reject(2, "proof-schema", "InputError", "duplicate key 'index'")
    rel = "proofs/invalid/duplicate-key.json"
    write(out, rel, (dup + "\n").encode())
    vectors.append(
        Vector(
            id="proof-duplicate-key",
            kind="proof",
            path=rel,
            spec=["1.7"],
            root=m_root,
            description="a repeated key (the last one would change the index)",
            expect=vectors_dup,
        )
    )
    return vectors
