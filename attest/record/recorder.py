"""Record one step: hash the output, build the provenance statement, sign it, store it with the ancestors' chain.

Everything that can fail (reading, hashing, validating, signing, even Sigstore's network round trip) happens before
the first byte is written, so a refused or killed `record` leaves the output folder as it was.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from attest.errors import InputError
from attest.identity import IdentityManifest, hash_model
from attest.lineage.recorded_identity import write_recorded_manifest
from attest.lineage.store import load_bundle, load_sigstore_bundles, sigstore_file_name, write_bundle
from attest.record.refs import ModelRef
from attest.signing.dsse import Envelope, sign_envelope
from attest.signing.keys import PrivateKey
from attest.signing.sigstore import identity_token, sign_sigstore
from attest.statements.builders import (
    model_dependency,
    model_subject,
    now_rfc3339,
    package_versions,
    provenance_statement,
)
from attest.statements.models import DEFAULT_BUILDER_ID, ProvenanceStatement, ResourceDescriptor, StepKind
from attest.statements.parse import statement_bytes

TRAINING_KINDS: frozenset[StepKind] = frozenset({"finetune", "distill"})


@dataclass(frozen=True)
class Signing:
    """How to sign: one DSSE signature per key, and/or a Sigstore keyless bundle."""

    keys: list[PrivateKey] = field(default_factory=list)
    sigstore: bool = False
    staging: bool = False
    token: str | None = None

    def check(self) -> None:
        if not self.keys and not self.sigstore:
            raise InputError(None, "no signer: give --key KEY (or --sigstore)")

    def prepared(self) -> Signing:
        """Checked, with the Sigstore OIDC token already obtained: fail before any hashing or training, not after."""
        self.check()
        if not self.sigstore or self.token:
            return self
        return Signing(self.keys, self.sigstore, self.staging, identity_token(None, staging=self.staging))


@dataclass(frozen=True)
class RecordResult:
    statement: ProvenanceStatement
    payload: bytes
    envelope: Envelope | None
    sigstore_bundle: str | None
    bundle_path: Path
    manifest: IdentityManifest


def internal_parameters(
    seed: int | None = None, device: str | None = None, dtype: str | None = None, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    out: dict[str, Any] = {"versions": package_versions()}
    for k, v in (("seed", seed), ("device", device), ("dtype", dtype)):
        if v is not None:
            out[k] = v
    out.update(extra or {})
    return out


def check_output_folder(output: Path) -> None:
    if not output.exists():
        raise InputError(output, "no such output folder")
    if not output.is_dir():
        raise InputError(output, "output is not a folder")


def refuse_unchanged(kind: StepKind, output: IdentityManifest, inputs: list[tuple[str, ModelRef]]) -> None:
    """A training step whose output weights equal an input's changed nothing: refuse to sign that claim."""
    if kind not in TRAINING_KINDS:
        return
    for role, ref in inputs:
        if ref.weights_root == output.weights_root:
            raise InputError(
                ref.path,
                f"the {kind} output has bit-identical weights to this {role} (weights root "
                f"{output.weights_root[:16]}…): a training step that changed nothing; pass --allow-unchanged "
                "if that is really what happened",
            )


def record_step(
    kind: StepKind,
    output: Path,
    inputs: list[tuple[str, ModelRef]],
    signing: Signing,
    *,
    external: dict[str, Any],
    internal: dict[str, Any],
    extra_dependencies: list[ResourceDescriptor] | None = None,
    byproducts: list[ResourceDescriptor] | None = None,
    started_on: str | None = None,
    invocation_id: str | None = None,
    builder_id: str = DEFAULT_BUILDER_ID,
    allow_unchanged: bool = False,
) -> RecordResult:
    """Hash `output`, sign a statement naming `inputs` (role, model) and write `.attest/` (see module docstring)."""
    signing.check()
    check_output_folder(output)
    existing = load_bundle(output)
    existing_sigstore = load_sigstore_bundles(output)
    manifest = hash_model(output)
    if not allow_unchanged:
        refuse_unchanged(kind, manifest, inputs)
    deps = [model_dependency(r.name, r.uri, r.model_root, r.weights_root, role, r.statement) for role, r in inputs]
    statement = provenance_statement(
        kind,
        model_subject(output.resolve().name, manifest),
        external=external,
        internal=internal,
        dependencies=deps + list(extra_dependencies or []),
        started_on=started_on or now_rfc3339(),
        finished_on=now_rfc3339(),
        invocation_id=invocation_id,
        builder_id=builder_id,
        byproducts=byproducts,
    )
    payload = statement_bytes(statement)
    envelope = sign_envelope(payload, signing.keys) if signing.keys else None
    sigstore_json: str | None = None
    if signing.sigstore:
        sigstore_json = sign_sigstore(payload, staging=signing.staging, token=signing.token)

    envelopes = ([envelope] if envelope else []) + existing
    sigstore = dict(existing_sigstore)
    for _, ref in inputs:
        envelopes += ref.envelopes
        sigstore.update(ref.sigstore)
    if sigstore_json is not None:
        data = sigstore_json.encode("utf-8")
        sigstore[sigstore_file_name(envelope.payload_digest if envelope else _digest(payload), data)] = data
    path = write_bundle(output, envelopes, sigstore)
    write_recorded_manifest(output, manifest)
    return RecordResult(statement, payload, envelope, sigstore_json, path, manifest)


def _digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()
