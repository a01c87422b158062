"""The conformance vector manifest (`conformance/vectors.json`): every vector of the suite with its expected outcome.

A second implementation of SPEC.md runs itself against each vector and compares with `expect`; attest and the
independent reference verifier in tests/conformance/reference/ both do (tests/conformance/test_conformance.py).
"""

from __future__ import annotations

from typing import Final, Literal

from pydantic import BaseModel, ConfigDict, Field

VECTORS_TYPE: Final = "https://attest.dev/conformance-vectors/v1"

VectorKind = Literal["identity", "proof", "envelope", "statement", "bundle", "policy"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Roots(_Strict):
    weights_root: str
    files_root: str
    model_root: str


class Expectation(_Strict):
    verdict: Literal["accept", "reject"]
    exit_code: Literal[0, 1, 2] = Field(description="What the attest CLI exits with (SPEC.md exit codes)")
    reason: str | None = Field(
        None, description="Stable id of the refusal (reject only): both implementations must name the same one"
    )
    error: str | None = Field(None, description="The attest error class raised (reject only)")
    message: str | None = Field(None, description="A substring of attest's one-line message (reject only)")
    roots: dict[Literal["sha256", "blake3"], Roots] | None = Field(None, description="identity: the roots per hash")
    matched: Literal["model_root", "weights_root"] | None = Field(None, description="proof: which root matched")
    signers: list[str] | None = Field(None, description="envelope: the trusted keys whose signatures verify")
    key_names: list[str] | None = Field(None, description="policy: the names of its keys, in order")
    trusted_roots: list[str] | None = Field(None, description="policy: its allow-listed roots, normalised")


class Vector(_Strict):
    id: str = Field(description="Unique; SPEC.md names rules' vectors by this id")
    kind: VectorKind
    path: str = Field(description="File or folder, relative to conformance/")
    spec: list[str] = Field(description="SPEC.md sections the vector exercises")
    description: str
    root: str | None = Field(None, description="proof: the trusted root (hex) to check against")
    tree_size: int | None = Field(None, description="proof: the trusted tensor count, when one is given")
    keys: list[str] | None = Field(None, description="envelope: trusted keys (conformance/keys/<name>.pub)")
    threshold: int | None = Field(None, description="envelope: distinct trusted signers needed (default 1)")
    subject: str | None = Field(None, description="envelope: the model root the caller expects as a subject")
    expect: Expectation


class VectorManifest(_Strict):
    type: Literal["https://attest.dev/conformance-vectors/v1"] = VECTORS_TYPE
    chunk_size: int = Field(description="CHUNK_SIZE of identity v1 the roots were computed with")
    vectors: list[Vector]
