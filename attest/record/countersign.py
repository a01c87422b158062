"""`attest countersign`: an auditor adds a signature only to a statement that verifies under the auditor's trust.

A countersignature says "I checked this". So the folder is verified first (SPEC.md section 4: re-hashed, every
signature checked against the given trust, the lineage walked to trusted roots); a folder that does not verify is
refused, and only the model's own statements that a trusted signer made get the new signature, never an unsigned
statement lying next to them. A key that already signed a statement adds nothing, and the result says so.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from attest.errors import InputError
from attest.lineage.store import bundle_path, load_bundle, write_bundle
from attest.signing.dsse import add_signature
from attest.signing.keys import PrivateKey
from attest.trust.trust_set import TrustSet
from attest.verify.engine import VerifyOptions, verify_lineage


@dataclass
class CountersignResult:
    model_root: str
    statements: int
    """How many of the model's own, verified statements were countersigned."""
    added: dict[str, int] = field(default_factory=dict)
    """keyid -> signatures this key added (0: it had already signed every one)."""
    bundle: Path | None = None
    """The rewritten bundle; None when nothing was added (the folder is left as it was)."""


def countersign(folder: str | os.PathLike[str], keys: list[PrivateKey], trust: TrustSet) -> CountersignResult:
    """Verify `folder` under `trust`, then add one signature per key to each of its own trusted statements."""
    folder = Path(folder)
    if not keys:
        raise InputError(None, "no key to countersign with: give --key KEY")
    if not trust.keys and not trust.identities:
        raise InputError(
            None,
            "countersign signs only what verifies: give the signers you trust (--policy FILE or --trusted-key PUB)",
        )
    envelopes = load_bundle(folder)
    if not envelopes:
        raise InputError(bundle_path(folder), "no attestations to countersign")
    lineage = verify_lineage(folder, trust, VerifyOptions())  # a policy's procurement rules count too
    report = lineage.report
    if not report.verified or report.lineage is None or report.lineage.verdict != "verified":
        why = report.problems[0].message if report.problems else "no trusted statement names this model"
        raise InputError(bundle_path(folder), f"not countersigned: the folder does not verify ({why})")
    root = report.model_root
    own = lineage.trusted_statements.get(root, set())
    result = CountersignResult(root, 0, {k.public.keyid: 0 for k in keys})
    updated = []
    for env in envelopes:
        if env.payload_digest in own:
            result.statements += 1
            for key in keys:
                signed = add_signature(env, key)
                if signed is not env:
                    result.added[key.public.keyid] += 1
                env = signed
        updated.append(env)
    if any(result.added.values()):
        result.bundle = write_bundle(folder, updated)
    return result
