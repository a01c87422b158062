"""Everything a verifier trusts, gathered from the policy file and the command line into one value.

Trust comes only from here: keys and Sigstore identities the user named, and root digests the user allow-listed.
Nothing found inside a model folder (embedded keys, keyids, certificates) ever enters this set.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.serialization import load_pem_public_key
from pydantic import ValidationError

from attest.errors import InputError
from attest.signing.keys import PublicKey, load_public_key
from attest.trust.policy_file import TrustedRoot, TrustPolicy, load_policy


@dataclass(frozen=True)
class NamedKey:
    name: str
    key: PublicKey


@dataclass(frozen=True)
class NamedIdentity:
    identity: str
    issuer: str
    name: str


@dataclass
class TrustSet:
    keys: list[NamedKey] = field(default_factory=list)
    identities: list[NamedIdentity] = field(default_factory=list)
    sigstore_trust_root: Path | None = None
    staging: bool = False
    roots: dict[str, str] = field(default_factory=dict)  # model root digest -> name
    policy: TrustPolicy | None = None
    policy_dir: Path | None = None
    policy_path: Path | None = None

    def key_name(self, key: PublicKey) -> str:
        for k in self.keys:
            if k.key.spki_der == key.spki_der:
                return k.name
        return f"key {key.keyid[:16]}"

    @property
    def empty(self) -> bool:
        return not self.keys and not self.identities and not self.roots


def _load_key(text_or_path: str, base: Path | None, name: str) -> NamedKey:
    if "-----BEGIN" in text_or_path:
        try:
            return NamedKey(name, PublicKey.from_crypto(load_pem_public_key(text_or_path.encode())))  # type: ignore[arg-type]
        except ValueError as exc:
            raise InputError(None, f"trusted key {name!r}: not a PEM public key ({exc})") from None
    path = Path(text_or_path)
    if base is not None and not path.is_absolute():
        path = base / path
    return NamedKey(name, load_public_key(path))


def parse_trusted_root(spec: str) -> TrustedRoot:
    """`NAME=sha256:HEX` (or `NAME=HEX`): the name may itself contain '=', the digest is after the last one."""
    name, sep, digest = spec.rpartition("=")
    if not sep or not name:
        raise InputError(None, f"--trusted-root {spec!r}: expected NAME=sha256:HEX")
    try:
        return TrustedRoot(name=name, digest=digest)
    except ValidationError:
        raise InputError(None, f"--trusted-root {spec!r}: the digest must be sha256:<64 hex digits>") from None


def build_trust(
    policy_path: Path | None = None,
    keys: tuple[Path, ...] = (),
    identity: str | None = None,
    issuer: str | None = None,
    trust_root: Path | None = None,
    staging: bool = False,
    *,
    roots: tuple[str, ...] = (),
) -> TrustSet:
    """`roots`: allow-listed model roots from the command line, each `NAME=sha256:HEX` (`--trusted-root`)."""
    trust = TrustSet(staging=staging, sigstore_trust_root=trust_root)
    if policy_path is not None:
        policy, base = load_policy(policy_path)
        trust.policy, trust.policy_dir, trust.policy_path = policy, base, policy_path
        for k in policy.keys:
            trust.keys.append(_load_key(k.public_key, base, k.name))
        for i in policy.sigstore_identities:
            trust.identities.append(NamedIdentity(i.identity, i.issuer, i.name or i.identity))
        trust.roots.update(policy.root_names())
        root_setting = policy.sigstore_trust_root
        if root_setting == "staging":
            trust.staging = True
        elif root_setting not in (None, "production") and trust.sigstore_trust_root is None:
            p = Path(root_setting)
            trust.sigstore_trust_root = p if p.is_absolute() else base / p
    for path in keys:  # named by the file the user gave (`p256.key.pub`), never by a private key's name
        trust.keys.append(NamedKey(path.name, load_public_key(path)))
    for spec in roots:
        root = parse_trusted_root(spec)
        trust.roots[root.digest] = root.name
    if (identity is None) != (issuer is None):
        raise InputError(None, "--identity and --issuer go together")
    if identity is not None and issuer is not None:
        trust.identities.append(NamedIdentity(identity, issuer, identity))
    return trust
