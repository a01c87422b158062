"""in-toto Statement v1 and SLSA Provenance v1, as pydantic models (SPEC.md section 2).

Field names are the wire names (camelCase) so the models read like the specs. Unknown fields are kept, not dropped:
in-toto consumers must ignore what they do not know, and a re-serialised statement must not lose anything.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
SLSA_PROVENANCE_V1 = "https://slsa.dev/provenance/v1"
PAYLOAD_TYPE = "application/vnd.in-toto+json"

BUILD_TYPE_PREFIX = "https://attest.dev/buildtypes/"
StepKind = Literal["merge", "finetune", "distill", "quantize", "convert"]
STEP_KINDS: tuple[StepKind, ...] = ("merge", "finetune", "distill", "quantize", "convert")
BUILD_TYPES: dict[StepKind, str] = {k: f"{BUILD_TYPE_PREFIX}{k}/v1" for k in STEP_KINDS}
"""One buildType URI per step kind; the version suffix changes when externalParameters change meaning."""
STEP_OF_BUILD_TYPE: dict[str, StepKind] = {uri: kind for kind, uri in BUILD_TYPES.items()}
"""The step kind a buildType URI records (the inverse of BUILD_TYPES)."""

DEFAULT_BUILDER_ID = "https://attest.dev/builders/attest-record/v1"

Role = Literal["base", "parent", "teacher", "student-init"]
ROLES: tuple[Role, ...] = ("base", "parent", "teacher", "student-init")
"""Roles of a model dependency (`annotations.role`); datasets have role `dataset`, code has role `code`."""

_HEX = re.compile(r"^[0-9a-f]+$")
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
SUBJECT_DIGESTS = frozenset({"sha256", "sha384", "sha512", "sha3_256", "sha3_384", "sha3_512"})
"""What sigstore-python accepts in a subject digest set: a statement with anything else cannot be Sigstore-signed."""


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class ResourceDescriptor(_Open):
    """in-toto ResourceDescriptor v1: at least one of uri, digest, content must be set."""

    name: str | None = None
    uri: str | None = None
    digest: dict[str, str] | None = None
    content: str | None = Field(None, description="base64 of the resource's bytes")
    downloadLocation: str | None = None
    mediaType: str | None = None
    annotations: dict[str, Any] | None = None

    @property
    def sha256(self) -> str | None:
        """The sha256 entry of the digest set (a model root for a model dependency), None when there is none."""
        return (self.digest or {}).get("sha256")

    @property
    def role(self) -> Any:
        """`annotations.role` as recorded (a model role, `dataset`, `code`), None when there is none."""
        return (self.annotations or {}).get("role")

    @field_validator("digest")
    @classmethod
    def _lower_hex(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        if v is not None:
            for alg, value in v.items():
                if alg != "gitCommit" and not _HEX.match(value):
                    raise ValueError(f"digest {alg} is not lowercase hex")
        return v

    @model_validator(mode="after")
    def _identified(self) -> ResourceDescriptor:
        if self.uri is None and self.digest is None and self.content is None:
            raise ValueError("a resource descriptor needs at least one of uri, digest, content")
        return self


class Subject(_Open):
    """A statement subject: a name and a digest set (sha256 of the model root for attest's statements)."""

    name: str
    digest: dict[str, str] = Field(min_length=1)
    annotations: dict[str, Any] | None = None

    @field_validator("digest")
    @classmethod
    def _lower_hex(cls, v: dict[str, str]) -> dict[str, str]:
        for alg, value in v.items():
            if not _HEX.match(value):
                raise ValueError(f"digest {alg} is not lowercase hex")
        return v


class Statement(_Open):
    """in-toto Statement v1 with any predicate (used for statements attest did not write)."""

    # Required on parse (SPEC.md 2.2: a payload without `_type` is not a Statement v1); writers pass it explicitly.
    type_: Literal["https://in-toto.io/Statement/v1"] = Field(alias="_type")
    subject: list[Subject] = Field(min_length=1)
    predicateType: str
    predicate: dict[str, Any] | None = None

    model_config = ConfigDict(extra="allow", frozen=True, populate_by_name=True)

    def subject_digests(self, algorithm: str = "sha256") -> list[str]:
        return [s.digest[algorithm] for s in self.subject if algorithm in s.digest]


class Builder(_Open):
    id: str
    version: dict[str, str] | None = None
    builderDependencies: list[ResourceDescriptor] | None = None


class BuildMetadata(_Open):
    invocationId: str | None = None
    startedOn: str | None = None
    finishedOn: str | None = None

    @field_validator("startedOn", "finishedOn")
    @classmethod
    def _rfc3339(cls, v: str | None) -> str | None:
        if v is not None and not _RFC3339.match(v):
            raise ValueError("not an RFC 3339 timestamp")
        return v


class RunDetails(_Open):
    builder: Builder
    metadata: BuildMetadata | None = None
    byproducts: list[ResourceDescriptor] | None = None


class BuildDefinition(_Open):
    buildType: str
    externalParameters: dict[str, Any]
    internalParameters: dict[str, Any] | None = None
    resolvedDependencies: list[ResourceDescriptor] | None = None


class Provenance(_Open):
    """SLSA Provenance v1 predicate."""

    buildDefinition: BuildDefinition
    runDetails: RunDetails


class ProvenanceStatement(Statement):
    """A Statement whose predicate is SLSA Provenance v1: what `attest record` signs."""

    # Required on parse, like `_type` (SPEC.md 2.2); writers pass it explicitly.
    predicateType: Literal["https://slsa.dev/provenance/v1"]
    predicate: Provenance  # type: ignore[assignment]

    def step_kind(self) -> StepKind | None:
        """The attest step kind named by buildType, or None for a foreign buildType."""
        for kind, uri in BUILD_TYPES.items():
            if self.predicate.buildDefinition.buildType == uri:
                return kind
        return None

    def dependencies(self, role: str | None = None) -> list[ResourceDescriptor]:
        deps = self.predicate.buildDefinition.resolvedDependencies or []
        if role is None:
            return list(deps)
        return [d for d in deps if d.role == role]
