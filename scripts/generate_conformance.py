"""Write the conformance vector suite (conformance/): model folders, proofs, envelopes, statements and bundles, each
with its expected outcome in conformance/vectors.json (schema schemas/conformance-vectors.schema.json).

Deterministic: every byte comes from fixed seeds; the test keys are derived from fixed strings; Ed25519 signatures are
deterministic, and ECDSA signatures (random by nature) are kept in conformance/keys/ecdsa-signatures.json and reused
whenever they still verify over the same bytes. Expected roots of the valid folders are attest's; every verdict of an
invalid vector is written here by hand, from SPEC.md. tests/test_conformance.py regenerates into a temporary folder
and fails when the checked-in suite differs.

    python scripts/generate_conformance.py [OUT]    (default: conformance/ of the repository)
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from attest.conformance import VectorManifest  # noqa: E402
from attest.identity.chunked import CHUNK_SIZE  # noqa: E402
from scripts.conformance_gen.common import ECDSA_CACHE, Signer, write_keys  # noqa: E402
from scripts.conformance_gen.identity import identity_vectors, proof_vectors  # noqa: E402
from scripts.conformance_gen.signed import (  # noqa: E402
    bundle_vectors,
    envelope_vectors,
    policy_vectors,
    statement_vectors,
)

DEFAULT_OUT = REPO / "conformance"


def generate(out: Path, reuse: Path | None = None) -> VectorManifest:
    """Write the whole suite into `out` (emptied first); ECDSA signatures are reused from `reuse`'s cache."""
    cache_file = (reuse or out) / ECDSA_CACHE
    cache = json.loads(cache_file.read_text()) if cache_file.is_file() else {}
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    write_keys(out)
    signer = Signer(cache)
    identity, roots = identity_vectors(out)
    subject_root = roots["single-file"]["sha256"].model_root
    vectors = [
        *identity,
        *proof_vectors(out, roots),
        *envelope_vectors(out, signer, subject_root),
        *statement_vectors(out, subject_root),
        *bundle_vectors(out, signer, subject_root),
        *policy_vectors(out),
    ]
    (out / ECDSA_CACHE).write_text(json.dumps(dict(sorted(signer.used.items())), indent=2) + "\n")
    manifest = VectorManifest(chunk_size=CHUNK_SIZE, vectors=vectors)
    (out / "vectors.json").write_text(manifest.model_dump_json(indent=2, exclude_none=True) + "\n")
    return manifest


if __name__ == "__main__":
    target = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_OUT
    m = generate(target, reuse=DEFAULT_OUT)
    valid = sum(v.expect.verdict == "accept" for v in m.vectors)
    print(f"{target}: {len(m.vectors)} vectors ({valid} valid, {len(m.vectors) - valid} invalid)")
