"""attest against every conformance vector (conformance/vectors.json), through the library and the CLI in-process;
and the checked-in suite must be exactly what scripts/generate_conformance.py writes."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

from attest.cli.identity import load_json_model
from attest.conformance import Roots, Vector
from attest.errors import AttestError
from attest.identity import check_proof, hash_model
from attest.identity.proofs import TensorProof
from attest.lineage.store import merge_envelopes, parse_bundle
from attest.signing.dsse import Envelope
from attest.signing.keys import load_public_key
from attest.signing.verify import verify_envelope
from attest.statements import parse_provenance
from attest.trust.policy_file import load_policy
from tests.conformance.conformance_runner import (
    CONFORMANCE,
    REPO,
    Outcome,
    dangling,
    load_manifest,
    mismatches,
    spec_vector_refs,
    unreferenced,
)
from tests.support.cli import run_attest

MANIFEST = load_manifest()
VECTORS = MANIFEST.vectors
KEYS = {p.stem: load_public_key(p) for p in sorted((CONFORMANCE / "keys").glob("*.pub"))}


def refused(exc: AttestError) -> Outcome:
    return Outcome("reject", exc.exit_code, error=type(exc).__name__, message=str(exc))


def run_library(v: Vector) -> Outcome:
    path = CONFORMANCE / v.path
    try:
        if v.kind == "identity":
            roots = {}
            for alg in ("sha256", "blake3"):
                m = hash_model(path, alg)
                roots[alg] = Roots(weights_root=m.weights_root, files_root=m.files_root, model_root=m.model_root)
            return Outcome("accept", 0, roots=roots)
        if v.kind == "proof":
            assert v.root is not None
            proof = load_json_model(path, TensorProof)
            return Outcome("accept", 0, matched=check_proof(proof, v.root, v.tree_size))
        if v.kind == "envelope":
            env = Envelope.from_json(path.read_bytes())
            trusted = [KEYS[k] for k in v.keys or []]
            done = verify_envelope(env, trusted, threshold=v.threshold or 1, subject_digest=v.subject)
            names = {KEYS[k].spki_der: k for k in v.keys or []}
            return Outcome("accept", 0, signers=[names[s.spki_der] for s in done.signers])
        if v.kind == "statement":
            parse_provenance(path.read_bytes())
            return Outcome("accept", 0)
        if v.kind == "policy":
            policy, _ = load_policy(path)
            return Outcome(
                "accept", 0, key_names=[k.name for k in policy.keys], trusted_roots=list(policy.root_names())
            )
        merge_envelopes(parse_bundle(path.read_bytes(), path), path)  # the bounds apply after merging
        return Outcome("accept", 0)
    except AttestError as exc:
        return refused(exc)


def run_cli(v: Vector, capsys: pytest.CaptureFixture[str]) -> Outcome:
    """`attest hash --json` (both algorithms), `attest check-proof` or `attest verify --policy`, in-process, through
    main()'s exit codes."""

    def attest(*args: str) -> tuple[int, str, str]:
        return run_attest(args)

    path = str(CONFORMANCE / v.path)
    if v.kind == "identity":
        roots = {}
        for alg in ("sha256", "blake3"):
            code, out, err = attest("hash", path, "--json", "--no-cache", "--algorithm", alg)
            if code:
                return Outcome("reject", code, message=err)
            m = json.loads(out)
            roots[alg] = Roots(weights_root=m["weights_root"], files_root=m["files_root"], model_root=m["model_root"])
        return Outcome("accept", 0, roots=roots)
    if v.kind == "policy":
        # `attest verify` reads the policy first: a refused policy is exit 2, an accepted one leads to a verdict
        # (1 here: the folder has no statement), never to exit 2.
        code, out, err = attest("verify", str(CONFORMANCE / "identity/valid/single-file"), "--policy", path)
        return Outcome("reject", code, message=err) if code == 2 else Outcome("accept", 0)
    assert v.root is not None
    extra = ["--tree-size", str(v.tree_size)] if v.tree_size is not None else []
    code, out, err = attest("check-proof", path, "--root", v.root, *extra)
    if code:
        return Outcome("reject", code, message=err)
    return Outcome("accept", 0, matched="weights_root" if "weights root" in out else "model_root")


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATTEST_CACHE_DIR", str(tmp_path / "cache"))


@pytest.mark.parametrize("vector", VECTORS, ids=[v.id for v in VECTORS])
def test_library_conforms(vector: Vector) -> None:
    assert mismatches(vector, run_library(vector), check_reason=False, check_attest=True) == []


CLI_VECTORS = [v for v in VECTORS if v.kind in ("identity", "proof", "policy")]


@pytest.mark.parametrize("vector", CLI_VECTORS, ids=[v.id for v in CLI_VECTORS])
def test_cli_conforms(vector: Vector, capsys: pytest.CaptureFixture[str]) -> None:
    got = run_cli(vector, capsys)
    want = vector.expect
    assert (got.verdict, got.exit_code) == (want.verdict, want.exit_code), got.message
    if want.verdict == "reject":
        assert want.message and want.message.lower() in got.message.lower() and got.message.count("\n") == 1
    elif vector.kind != "policy":  # verify does not print the policy's contents
        assert mismatches(vector, got, check_reason=False, check_attest=False) == []


def _generator() -> object:
    spec = importlib.util.spec_from_file_location("generate_conformance", REPO / "scripts" / "generate_conformance.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_checked_in_vectors_are_what_the_generator_writes(tmp_path: Path) -> None:
    fresh = tmp_path / "conformance"
    _generator().generate(fresh, reuse=CONFORMANCE)  # type: ignore[attr-defined]
    want, have = _tree(fresh), _tree(CONFORMANCE)
    assert sorted(want) == sorted(have), "conformance/ is stale: run python scripts/generate_conformance.py"
    stale = [name for name in want if want[name] != have[name]]
    assert stale == [], f"stale vectors (run python scripts/generate_conformance.py): {stale[:5]}"


def test_suite_is_small_and_ids_unique() -> None:
    assert sum(len(b) for b in _tree(CONFORMANCE).values()) < 5 * 1024 * 1024
    ids = [v.id for v in VECTORS]
    assert len(ids) == len(set(ids))
    assert {v.expect.verdict for v in VECTORS} == {"accept", "reject"}


def test_spec_links_every_vector() -> None:
    refs = spec_vector_refs((REPO / "SPEC.md").read_text())
    assert dangling(MANIFEST, refs) == [], "SPEC.md names vectors that do not exist"
    assert unreferenced(MANIFEST, refs) == [], "vectors no SPEC.md rule names"


def test_every_vector_names_sections_that_exist() -> None:
    headings = set(re.findall(r"^#+ (\d+(?:\.\d+)*)[. ]", (REPO / "SPEC.md").read_text(), re.M))
    assert {s for v in VECTORS for s in v.spec} <= headings
