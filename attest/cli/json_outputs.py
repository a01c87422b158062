"""What `--json` prints for the commands whose result is a few facts (record, sign, keygen, ...): one pydantic model
each, exported to schemas/ like every other format. Paths are printed as given or as written."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Output(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecordOutput(_Output):
    """`attest record KIND --json`: the statement just signed and where it was stored."""

    kind: str = Field(description="The step kind recorded (merge, finetune, distill, quantize, convert)")
    model: str = Field(description="The statement's subject name (the output folder's name)")
    model_root: str = Field(description="The output's model root (sha256 hex): the statement's subject digest")
    weights_root: str
    statement_sha256: str = Field(description="sha256 of the statement bytes (the DSSE payload)")
    keyids: list[str] = Field(description="keyid of each key signature on the envelope")
    sigstore_bundle: str | None = Field(default=None, description="Path of the Sigstore bundle, when --sigstore")
    bundle_path: str = Field(description="The attestation bundle the envelope was added to")
    envelopes: int = Field(description="How many envelopes the bundle holds now (this step's and its parents')")


class CountersignOutput(_Output):
    """`attest countersign --json`."""

    model_root: str
    statements: int = Field(description="How many trusted statements about the model root there are")
    keyids: list[str] = Field(
        description="keyid of each key that added a signature (one that had signed every statement already adds none)"
    )
    bundle_path: str | None = Field(default=None, description="The bundle rewritten; null when nothing was added")


class KeygenOutput(_Output):
    """`attest keygen --json`."""

    key_type: str
    private_key: str = Field(description="Path of the private key (PKCS#8 PEM, mode 0600)")
    public_key: str = Field(description="Path of the public key (SubjectPublicKeyInfo PEM)")
    keyid: str = Field(description="sha256 hex of the public key's SubjectPublicKeyInfo DER (SPEC.md 3.1)")
    encrypted: bool


class SignOutput(_Output):
    """`attest sign --json`: the model-signing signature written."""

    format: Literal["model-signing"]
    method: Literal["key", "certificate", "sigstore"] = Field(description="How the signature was made")
    signature: str = Field(description="Path of the model.sig written")
    files: int = Field(description="How many files the signature covers")
    subject_sha256: str = Field(description="The in-toto subject digest of the signed manifest")
    ignore_paths: list[str]


class ProofCheckOutput(_Output):
    """`attest check-proof --json`; `ok` false (exit 1) when the proof does not lead to the root."""

    ok: bool
    root: str
    matched: Literal["model_root", "weights_root"] | None = Field(default=None, description="Which root it reached")
    tensor: str
    dtype: str
    shape: list[int]
    problem: str | None = None


class CardCheckOutput(_Output):
    """`attest card --check --json`; `checked` false when no statement names the folder (nothing to check against)."""

    card: str = Field(description="The card file checked")
    checked: bool
    agrees: bool = Field(description="True only when checked and nothing contradicts the statements")
    contradictions: list[str]
    notes: list[str]


class MergeOutput(_Output):
    """`attest merge --json`."""

    output: str
    method: str
    tensors: int
    layers: int
    seed: int | None = None
    device: str
    tie_order: str
    layout: str | None = Field(default=None, description="Experts layout of a mixture-of-experts merge")
    parents: dict[str, str] = Field(description="Recipe reference -> folder it was read from")
    notes: list[str]
    statement_sha256: str | None = Field(default=None, description="With --key: the merge statement signed")
    bundle_path: str | None = None
