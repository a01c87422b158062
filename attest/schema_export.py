"""Every JSON format attest reads or writes is a pydantic model registered here; `schemas/` holds their JSON Schemas.

Regenerate with `python -m attest.schema_export`; tests/test_schemas.py fails when a file in schemas/ is stale.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel

from attest.atomic import atomic_write_text
from attest.cli import json_outputs as cli
from attest.conformance import VectorManifest
from attest.forensics.report import DetectReport
from attest.identity.diff import ManifestDiff
from attest.identity.manifest import IdentityManifest
from attest.identity.proofs import TensorProof
from attest.publish.report import AuditReport
from attest.replay.report import ReplayReport
from attest.signing.dsse import Envelope
from attest.signing.model_sig import ModelSigVerification
from attest.statements.models import ProvenanceStatement, Statement
from attest.training.replay import TrainingReplayReport
from attest.training.runner import RunnerRequest
from attest.training.transcript import LoopHyperparameters, TrainingHyperparameters, TrainingTranscript
from attest.trust.policy_file import TrustPolicy
from attest.verify.report import VerifyReport

SCHEMA_DIR = Path(__file__).resolve().parent.parent / "schemas"


def registry() -> dict[str, type[BaseModel]]:
    """File name in schemas/ -> the model it describes. Capabilities add their formats here."""
    return {
        "identity-manifest.schema.json": IdentityManifest,
        "tensor-proof.schema.json": TensorProof,
        "manifest-diff.schema.json": ManifestDiff,
        "trust-policy.schema.json": TrustPolicy,
        "verify-report.schema.json": VerifyReport,
        "model-sig-verification.schema.json": ModelSigVerification,
        "detect-report.schema.json": DetectReport,
        "replay-report.schema.json": ReplayReport,
        "in-toto-statement.schema.json": Statement,
        "slsa-provenance-statement.schema.json": ProvenanceStatement,
        "dsse-envelope.schema.json": Envelope,
        "audit-report.schema.json": AuditReport,
        "conformance-vectors.schema.json": VectorManifest,
        "training-transcript.schema.json": TrainingTranscript,
        "training-hyperparameters.schema.json": TrainingHyperparameters,
        "training-replay-report.schema.json": TrainingReplayReport,
        "training-loop-hyperparameters.schema.json": LoopHyperparameters,
        "training-runner-request.schema.json": RunnerRequest,
        "record-output.schema.json": cli.RecordOutput,
        "countersign-output.schema.json": cli.CountersignOutput,
        "keygen-output.schema.json": cli.KeygenOutput,
        "sign-output.schema.json": cli.SignOutput,
        "check-proof-output.schema.json": cli.ProofCheckOutput,
        "card-check-output.schema.json": cli.CardCheckOutput,
        "merge-output.schema.json": cli.MergeOutput,
    }


INPUT_FORMATS = frozenset({"trust-policy.schema.json"})
"""Formats people write and attest only reads: their schema describes what the loader accepts (validation mode,
e.g. the `rule: true` shorthand), not what a model would serialise to."""


def render(model: type[BaseModel], name: str) -> str:
    schema = model.model_json_schema(mode="validation" if name in INPUT_FORMATS else "serialization")
    schema = {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": f"https://attest.dev/schemas/{name}",
        **schema,
    }
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def export(target: Path = SCHEMA_DIR, write: Callable[[Path, str], None] | None = None) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    out = []
    for name, model in registry().items():
        path = target / name
        (write or atomic_write_text)(path, render(model, name))
        out.append(path)
    return out


if __name__ == "__main__":
    for p in export(Path(sys.argv[1]) if len(sys.argv) > 1 else SCHEMA_DIR):
        print(p)
