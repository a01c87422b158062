"""The trust policy file (YAML): trusted keys, Sigstore identities, and allow-listed root digests.

The procurement issue extends the same file with rules; unknown top-level keys are refused so that a typo in a
policy never silently weakens it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, field_validator

from attest.errors import InputError
from attest.strict_yaml import load_yaml

MAX_POLICY_BYTES = 4 * 1024 * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class TrustedKey(_Strict):
    name: str = Field(description="Who holds the key (shown as the signer)")
    public_key: str = Field(description="A PEM public key, inline or as a path relative to the policy file")


class SigstoreIdentity(_Strict):
    identity: str = Field(description="Certificate subject (e-mail or workflow URI), matched exactly")
    issuer: str = Field(description="OIDC issuer URL, matched exactly")
    name: str | None = None


class TrustedRoot(_Strict):
    name: str = Field(description="What the root is, e.g. an official base release")
    digest: str = Field(
        pattern=r"^(sha256:)?[0-9a-fA-F]{64}$", description="The model root (sha256 hex, optionally prefixed 'sha256:')"
    )

    @field_validator("digest")
    @classmethod
    def _hex(cls, v: str) -> str:
        v = v.removeprefix("sha256:").lower()
        if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
            raise ValueError("must be a 64-digit sha256 hex digest")
        return v


def _switch(value: Any) -> Any:
    """`rule: true` turns a rule on with its defaults, `rule: false` (or absent) leaves it off."""
    if value is True:
        return {}
    if value is False:
        return None
    return value


def _on_off(model: Any, *, has_defaults: bool) -> BeforeValidator:
    """The `true`/`false` shorthand, also in the exported JSON Schema (validation mode): `true` only where the rule
    has defaults for everything, since the loader refuses `licenses: true` (no allow-list) and so must the schema."""
    shorthand = bool if has_defaults else Literal[False]
    return BeforeValidator(_switch, json_schema_input_type=model | shorthand | None)


class RequiredSigners(_Strict):
    signers: list[str] = Field(min_length=1, description="Names of policy keys / Sigstore identities; all must sign")
    scope: Literal["model", "every_step"] = Field(
        default="model", description="model: the model's own statement; every_step: every attested step"
    )


class AttestedToRoots(_Strict):
    """Every path of the lineage ends at an allow-listed root digest (`trusted_roots`)."""


class FullDisclosure(_Strict):
    candidates: list[str] = Field(
        default_factory=list,
        description="Model folders (relative to the policy file) `attest detect` tests as undisclosed contributors",
    )
    base: str | None = Field(default=None, description="Common base folder for detect (task-arithmetic form)")


class ReplayMerges(_Strict):
    parents_dirs: list[str] = Field(
        default_factory=list, description="Folders holding parent checkpoints by name (relative to the policy file)"
    )
    device: Literal["cpu", "cuda"] = Field(default="cpu", description="cpu: bit-exact; cuda: within 1 ulp")


LICENSE_ID = r"^[A-Za-z0-9][A-Za-z0-9.+-]*$"
"""A plain license id (SPDX idstring characters, as Hugging Face's `license:` values are): no expression, no space."""


class Licenses(_Strict):
    allow: list[Annotated[str, Field(pattern=LICENSE_ID, max_length=64)]] = Field(
        min_length=1, description="Allowed license ids (Hugging Face / SPDX), case-insensitive"
    )


class ClaimsConsistent(_Strict):
    card: bool = Field(default=True, description="Also check the model card against the statements")


TrainingKind = Literal["finetune", "distill"]
TRAINING_KINDS: tuple[TrainingKind, ...] = ("finetune", "distill")


class TrainingReplayed(_Strict):
    segments: int = Field(default=1, ge=1, description="Segments of each training transcript to re-execute")
    scope: Literal["model", "every_step"] = Field(
        default="model", description="model: the model's own step; every_step: every step of the kinds below"
    )
    kinds: list[TrainingKind] = Field(
        default_factory=lambda: list(TRAINING_KINDS), min_length=1, description="Step kinds the rule covers"
    )
    checkpoints_dirs: list[str] = Field(
        default_factory=list, description="Folders holding the transcripts' checkpoints (relative to the policy file)"
    )
    data: list[str] = Field(default_factory=list, description="Training data files, bound by their recorded sha256")
    parents_dirs: list[str] = Field(default_factory=list, description="Folders holding teachers by name")


class ProcurementRules(_Strict):
    """Procurement rules (SPEC.md section 7.1); each present rule is evaluated and must pass."""

    required_signers: Annotated[RequiredSigners | None, _on_off(RequiredSigners, has_defaults=False)] = None
    attested_to_roots: Annotated[AttestedToRoots | None, _on_off(AttestedToRoots, has_defaults=True)] = None
    full_disclosure: Annotated[FullDisclosure | None, _on_off(FullDisclosure, has_defaults=True)] = None
    replay_merges: Annotated[ReplayMerges | None, _on_off(ReplayMerges, has_defaults=True)] = None
    licenses: Annotated[Licenses | None, _on_off(Licenses, has_defaults=False)] = None
    claims_consistent: Annotated[ClaimsConsistent | None, _on_off(ClaimsConsistent, has_defaults=True)] = None
    training_replayed: Annotated[TrainingReplayed | None, _on_off(TrainingReplayed, has_defaults=True)] = None


class TrustPolicy(_Strict):
    version: Literal[1] = 1
    keys: list[TrustedKey] = Field(default_factory=list)
    sigstore_identities: list[SigstoreIdentity] = Field(default_factory=list)
    sigstore_trust_root: str | None = Field(
        default=None, description="'production', 'staging', or a trusted_root.json path relative to the policy file"
    )
    trusted_roots: list[TrustedRoot] = Field(default_factory=list)
    name: str | None = Field(default=None, description="A title for reports")
    rules: ProcurementRules | None = Field(default=None, description="Procurement rules (attest verify --policy)")

    @field_validator("version", mode="before")
    @classmethod
    def _integer_one(cls, v: Any) -> Any:
        # As in JSON Schema: the number 1 (`1.0` is the same number), never `true` (equal to 1 only in Python).
        if isinstance(v, bool) or not isinstance(v, int | float) or v != 1:
            raise ValueError("must be the number 1")
        return 1

    def root_names(self) -> dict[str, str]:
        return {r.digest: r.name for r in self.trusted_roots}


def load_policy(path: str | os.PathLike[str]) -> tuple[TrustPolicy, Path]:
    """Parse a policy file; returns the policy and the folder its relative paths are resolved against.
    A key given twice anywhere is refused (attest/strict_yaml.py): the last one must not silently turn a rule off."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_POLICY_BYTES:
            raise InputError(p, f"policy file larger than {MAX_POLICY_BYTES} bytes")
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(p, f"cannot read policy: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(p, "policy is not valid YAML (not UTF-8 text)") from None
    data = load_yaml(text, p, "policy")
    if not isinstance(data, dict):
        raise InputError(p, "policy must be a YAML mapping")
    try:
        return TrustPolicy.model_validate(data), p.parent
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "policy"
        raise InputError(p, f"invalid policy ({where}: {first['msg']})") from None
