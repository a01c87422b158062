"""What checking or writing a `model.sig` reports (exported to schemas/ as `model-sig-verification`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

SignatureKind = Literal["elliptic-key", "certificate", "sigstore"]
Status = Literal["changed", "missing", "extra", "refused"]


class ModelSigSerialization(BaseModel):
    """How the signer serialized the model (the predicate's `serialization`), as read from the signature."""

    method: Literal["files", "shards"]
    hash_type: str
    allow_symlinks: bool = False
    shard_size: int | None = None
    ignore_paths: list[str] = Field(default_factory=list)


class ModelSigFinding(BaseModel):
    """One file that does not match the signature."""

    path: str = Field(description="POSIX path relative to the model folder ('.' for a single-file model)")
    status: Status
    detail: str


class ModelSigVerification(BaseModel):
    """The outcome of checking a model folder against a model-signing `model.sig`."""

    format: Literal["attest-model-sig-verification/v1"] = "attest-model-sig-verification/v1"
    verified: bool
    model: str
    signature: str
    kind: SignatureKind | None = Field(None, description="which variant the bundle is (from its material)")
    signer: str | None = Field(None, description="who signed, as established by the trust the caller passed")
    model_name: str | None = Field(None, description="the subject name (informative only)")
    subject_digest: str | None = Field(None, description="sha256 over the resource digests (hex)")
    serialization: ModelSigSerialization | None = None
    resources: int = Field(0, description="resources (files or shards) the signature lists")
    files_checked: int = Field(0, description="files re-hashed from the folder")
    ignored: list[str] = Field(default_factory=list, description="ignore paths applied (relative POSIX)")
    findings: list[ModelSigFinding] = Field(default_factory=list)
    problems: list[str] = Field(default_factory=list, description="every reason it did not verify, one per line")
    notes: list[str] = Field(default_factory=list)


class ModelSigSigned(BaseModel):
    """What `sign_model_sig` wrote."""

    signature: str
    model_name: str
    subject_digest: str
    resources: int
    ignore_paths: list[str]
