"""Helpers for the training-transcript tests: a token data file, a reference run through the real `attest train`
code, a forger that rewrites and re-signs the statement (the prover holds the key), and the verifier's call."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from attest.identity import hash_model
from attest.lineage.store import load_bundle, write_bundle
from attest.policy import verify_with_policy
from attest.record.recorder import Signing
from attest.record.training import TrainJob, TrainResult, train
from attest.signing.dsse import sign_envelope
from attest.signing.keys import PrivateKey
from attest.trust.trust_set import build_trust
from attest.verify.engine import VerifyOptions
from attest.verify.report import VerifyReport
from tests.support.builders import token_batches

STEPS, BATCH, EVERY = 6, 4, 2


def write_data(path: Path, seed: int = 5, records: int = 16, seq: int = 16) -> Path:
    with path.open("w") as fh:
        for batch in token_batches(seed, records // 4, batch=4, seq=seq):
            for row in batch.tolist():
                fh.write(json.dumps({"input_ids": row}) + "\n")
    return path


def run(
    root: Path,
    model: Path,
    data: Path,
    key: PrivateKey,
    *,
    name: str = "out",
    teacher: Path | None = None,
    lr: float = 1e-3,
    steps: int = STEPS,
) -> tuple[Path, Path, TrainResult]:
    out, ckpt = root / name, root / f"{name}-ckpt"
    job = TrainJob(
        objective="distill_kl" if teacher is not None else "causal_lm",
        model=model,
        data=data,
        output=out,
        checkpoints=ckpt,
        steps=steps,
        batch_size=BATCH,
        learning_rate=lr,
        seed=7,
        checkpoint_every=EVERY,
        teacher=teacher,
        temperature=2.0 if teacher is not None else None,
    )
    return out, ckpt, train(job, Signing([key]))


def resign(out: Path, key: PrivateKey, mutate: Callable[[dict[str, Any]], None]) -> None:
    """The prover rewrites its own statement (transcript included), points the subject at the folder as it now is,
    and signs again with its trusted key."""
    doc = json.loads(load_bundle(out)[0].payload_bytes)
    mutate(doc)
    m = hash_model(out)
    subject = doc["subject"][0]
    subject["digest"]["sha256"] = m.model_root
    subject["annotations"].update(weights_root=m.weights_root, files_root=m.files_root)
    write_bundle(out, [sign_envelope(json.dumps(doc, separators=(",", ":")).encode(), [key])], {})


def transcript(doc: dict[str, Any]) -> dict[str, Any]:
    t: dict[str, Any] = doc["predicate"]["buildDefinition"]["externalParameters"]["training_transcript"]
    return t


def write_policy(path: Path, pub: Path, roots: list[Path], rules: dict[str, Any] | None = None) -> Path:
    """A trust policy: the prover's key, the given models as allow-listed roots, and optional rules."""
    doc: dict[str, Any] = {
        "version": 1,
        "keys": [{"name": "prover", "public_key": str(pub)}],
        "trusted_roots": [{"name": r.name, "digest": hash_model(r).model_root} for r in roots],
    }
    if rules is not None:
        doc["rules"] = rules
    path.write_text(yaml.safe_dump(doc))
    return path


def verify(
    out: Path, policy: Path, ckpt: Path, data: Path, segments: int = 10, parents: tuple[Path, ...] = ()
) -> VerifyReport:
    options = VerifyOptions(
        replay_training=segments, checkpoints_dirs=(ckpt,), training_data=(data,), parents_dirs=parents
    )
    return verify_with_policy(out, build_trust(policy), options).report


def training_problems(report: VerifyReport) -> list[str]:
    return [p.message for p in report.problems if p.code == "training_mismatch"]
