"""The trust policy file (YAML): trusted keys, Sigstore identities, and allow-listed root digests.

The procurement issue extends the same file with rules; unknown top-level keys are refused so that a typo in a
policy never silently weakens it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from attest.errors import InputError

MAX_POLICY_BYTES = 4 * 1024 * 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TrustedKey(_Strict):
    name: str = Field(description="Who holds the key (shown as the signer)")
    public_key: str = Field(description="A PEM public key, inline or as a path relative to the policy file")


class SigstoreIdentity(_Strict):
    identity: str = Field(description="Certificate subject (e-mail or workflow URI), matched exactly")
    issuer: str = Field(description="OIDC issuer URL, matched exactly")
    name: str | None = None


class TrustedRoot(_Strict):
    name: str = Field(description="What the root is, e.g. an official base release")
    digest: str = Field(description="The model root (sha256 hex, optionally prefixed 'sha256:')")

    @field_validator("digest")
    @classmethod
    def _hex(cls, v: str) -> str:
        v = v.removeprefix("sha256:").lower()
        if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
            raise ValueError("must be a 64-digit sha256 hex digest")
        return v


class TrustPolicy(_Strict):
    version: Literal[1] = 1
    keys: list[TrustedKey] = Field(default_factory=list)
    sigstore_identities: list[SigstoreIdentity] = Field(default_factory=list)
    sigstore_trust_root: str | None = Field(
        default=None, description="'production', 'staging', or a trusted_root.json path relative to the policy file"
    )
    trusted_roots: list[TrustedRoot] = Field(default_factory=list)

    def root_names(self) -> dict[str, str]:
        return {r.digest: r.name for r in self.trusted_roots}


def load_policy(path: str | os.PathLike[str]) -> tuple[TrustPolicy, Path]:
    """Parse a policy file; returns the policy and the folder its relative paths are resolved against."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_POLICY_BYTES:
            raise InputError(p, f"policy file larger than {MAX_POLICY_BYTES} bytes")
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InputError(p, f"cannot read policy: {exc.strerror or exc}") from None
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        raise InputError(p, f"policy is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise InputError(p, "policy must be a YAML mapping")
    try:
        return TrustPolicy.model_validate(data), p.parent
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "policy"
        raise InputError(p, f"invalid policy ({where}: {first['msg']})") from None
