"""OpenSSF model-signing (`model.sig`) compatibility: read, verify and write its signatures.

A `model.sig` is a Sigstore bundle v0.3 holding one DSSE envelope over an in-toto Statement with predicate type
`https://model_signing/signature/v1.0`: the predicate lists one digest per file (or per file shard) and the subject
digest is SHA-256 over those digests. It comes in three variants: signed by an elliptic-curve key, by a key with an
X.509 certificate chain, or keyless through Sigstore (Fulcio certificate + Rekor entry).

The model-signing library is a peer we test against, not code we reuse: this module reads the bundle as plain JSON,
verifies signatures with `cryptography` (key, certificate) or sigstore-python's `Verifier` (keyless), and re-hashes
the folder itself. Material inside the bundle (an embedded public key, the key hint, a keyid) never selects trust:
only the key, certificate roots or Sigstore identity the caller passes do. Paths named in the signature are never
opened; the folder is walked and its relative names compared with the signed ones.
"""

from __future__ import annotations

import base64
import binascii
import concurrent.futures
import datetime
import hashlib
import json
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Protocol

import blake3
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509 import verification as x509_verification
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from attest.atomic import atomic_write_bytes
from attest.errors import InputError
from attest.strict_json import reject_duplicate_keys

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
SIGNATURE_NAME = "model.sig"

GIT_PATHS = (".git", ".gitattributes", ".github", ".gitignore")
"""model-signing ignores these on both sides by default; so do we, or a peer-made signature would not verify."""
ATTEST_DIR = ".attest"
"""attest's own folder (attestations written after signing): not model content, ignored on both sides."""

MAX_SIGNATURE_BYTES = 64 * 1024 * 1024
READ_CHUNK = 1024 * 1024
CURVE_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "secp256r1": hashes.SHA256,
    "secp384r1": hashes.SHA384,
    "secp521r1": hashes.SHA512,
}
"""The Sigstore / model-signing pairing of curve and ECDSA digest; other curves are refused."""
HASH_TYPES = ("sha256", "blake2", "blake3")
DIGEST_HEX_LEN = {"sha256": 64, "blake2": 128, "blake3": 64}

SignatureKind = Literal["elliptic-key", "certificate", "sigstore"]
Status = Literal["changed", "missing", "extra", "refused"]
BytesCallback = Callable[[int], None]


# ---------------------------------------------------------------------------------------------------------------
# Public result types


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


# ---------------------------------------------------------------------------------------------------------------
# Trust the caller passes


@dataclass(frozen=True)
class KeyTrust:
    """Trust one elliptic-curve public key."""

    public_key: ec.EllipticCurvePublicKey
    source: str = "public key"


@dataclass(frozen=True)
class CertificateTrust:
    """Trust signing certificates that chain to one of these certificates (all are trust anchors)."""

    anchors: tuple[x509.Certificate, ...]
    source: str = "certificate chain"


@dataclass(frozen=True)
class SigstoreTrust:
    """Trust a Sigstore keyless identity (certificate SAN) from an OIDC issuer, under a trusted root."""

    identity: str
    issuer: str
    trusted_root: Path | None = None  # None: sigstore-python's bundled production root, offline


Trust = KeyTrust | CertificateTrust | SigstoreTrust


def load_public_key(path: str | os.PathLike[str]) -> KeyTrust:
    """Read a PEM public key (SubjectPublicKeyInfo) of a curve model-signing supports."""
    p = Path(path)
    data = _read_small(p, 1024 * 1024)
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InputError(p, f"not a PEM public key ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in CURVE_HASHES:
        raise InputError(p, "not an EC P-256, P-384 or P-521 public key (what model-signing uses)")
    return KeyTrust(key, str(p))


def load_certificate_anchors(paths: Iterable[str | os.PathLike[str]]) -> CertificateTrust:
    """Read PEM certificates (one or more per file); every one becomes a trust anchor, as model-signing does."""
    anchors: list[x509.Certificate] = []
    names = []
    for path in paths:
        p = Path(path)
        try:
            anchors.extend(x509.load_pem_x509_certificates(_read_small(p, 16 * 1024 * 1024)))
        except ValueError as exc:
            raise InputError(p, f"not PEM certificates ({exc})") from None
        names.append(str(p))
    if not anchors:
        raise InputError(None, "no certificates given")
    return CertificateTrust(tuple(anchors), ", ".join(names))


class EncryptedKeyError(InputError):
    """The private key needs a passphrase that was not given (the CLI may then prompt)."""


def load_private_key(path: str | os.PathLike[str], passphrase: bytes | None = None) -> ec.EllipticCurvePrivateKey:
    """Read a PEM private key (PKCS#8 or SEC1) on P-256, P-384 or P-521."""
    p = Path(path)
    data = _read_small(p, 1024 * 1024)
    try:
        try:
            key = serialization.load_pem_private_key(data, passphrase)
        except TypeError:
            if passphrase is None:
                raise EncryptedKeyError(p, "the private key is encrypted: give its passphrase") from None
            key = serialization.load_pem_private_key(data, None)  # a passphrase for a plain key: unused
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise InputError(p, f"cannot load the private key (wrong passphrase or not a PEM key: {exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in CURVE_HASHES:
        raise InputError(p, "not an EC P-256, P-384 or P-521 private key (what model-signing accepts)")
    return key


def key_hint(public_key: ec.EllipticCurvePublicKey) -> str:
    """model-signing's `publicKey.hint`: sha256 hex of the SPKI PEM. A label for humans, never a trust decision."""
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(pem).hexdigest()


# ---------------------------------------------------------------------------------------------------------------
# Reading the bundle (unverified)


@dataclass
class ModelSigBundle:
    """A parsed, not yet verified `model.sig`."""

    path: Path
    raw: bytes
    kind: SignatureKind
    media_type: str
    payload_type: str
    payload: bytes
    signature: bytes
    material: dict[str, Any]


def read_model_sig(path: str | os.PathLike[str]) -> ModelSigBundle:
    """Parse a `model.sig` far enough to know its variant; nothing in it is trusted yet. Malformed -> InputError."""
    p = Path(path)
    if p.is_symlink():
        raise InputError(p, "the signature is a symlink (refused: it could hide the file it points to from the check)")
    raw = _read_small(p, MAX_SIGNATURE_BYTES)
    doc = _parse_json(p, raw, "signature")
    if not isinstance(doc, dict):
        raise InputError(p, "not a Sigstore bundle (not a JSON object)")
    media_type = doc.get("mediaType")
    if not isinstance(media_type, str) or not media_type.startswith("application/vnd.dev.sigstore.bundle"):
        raise InputError(p, f"not a Sigstore bundle (mediaType {media_type!r})")
    material = doc.get("verificationMaterial")
    envelope = doc.get("dsseEnvelope")
    if not isinstance(material, dict):
        raise InputError(p, "bundle has no verificationMaterial object")
    if not isinstance(envelope, dict):
        raise InputError(p, "bundle holds no DSSE envelope (model-signing signatures always do)")
    payload_type = envelope.get("payloadType")
    signatures = envelope.get("signatures")
    if not isinstance(payload_type, str):
        raise InputError(p, "DSSE envelope has no payloadType string")
    if not isinstance(signatures, list) or len(signatures) != 1 or not isinstance(signatures[0], dict):
        raise InputError(p, "DSSE envelope must hold exactly one signature")
    payload = _b64(p, envelope.get("payload"), "DSSE payload")
    signature = _b64(p, signatures[0].get("sig"), "DSSE signature")
    if "x509CertificateChain" in material:
        kind: SignatureKind = "certificate"
    elif "certificate" in material or material.get("tlogEntries"):
        kind = "sigstore"
    elif "publicKey" in material:
        kind = "elliptic-key"
    else:
        raise InputError(p, "bundle verificationMaterial names no key, certificate chain or certificate")
    return ModelSigBundle(p, raw, kind, media_type, payload_type, payload, signature, material)


# ---------------------------------------------------------------------------------------------------------------
# Verification


class _Rejected(Exception):
    """A signature check that said no; the message is one problem line."""


def verify_model_sig(
    model_path: str | os.PathLike[str],
    trust: Trust,
    *,
    signature_path: str | os.PathLike[str] | None = None,
    ignore: Sequence[str] = (),
    on_total: BytesCallback | None = None,
    on_bytes: BytesCallback | None = None,
) -> ModelSigVerification:
    """Check a model folder (or single file) against its `model.sig` under the given trust.

    Signature first: nothing in the payload is looked at until it verifies. Then payload type, statement and
    predicate types, the subject digest over the resources, and finally every file re-hashed from disk. Unreadable
    or malformed input raises InputError; a check that fails is a problem in the result (verified False).
    """
    model = Path(model_path)
    if not model.exists():
        raise InputError(model, "no such file or folder")
    sig_path = Path(signature_path) if signature_path is not None else default_signature_path(model)
    bundle = read_model_sig(sig_path)
    result = ModelSigVerification(verified=False, model=str(model), signature=str(sig_path), kind=bundle.kind)

    try:
        payload_type, payload, result.signer = _verify_signature(bundle, trust)
    except _Rejected as exc:
        result.problems.append(f"{sig_path}: {exc}")
        return result

    statement = _check_statement(sig_path, payload_type, payload, result)
    if statement is None:
        return result
    serialization_, resources = statement
    _check_files(model, sig_path, serialization_, resources, ignore, result, on_total, on_bytes)
    result.verified = not result.problems
    return result


def default_signature_path(model: Path) -> Path:
    """`model.sig` inside a model folder, or beside a single-file model."""
    return model / SIGNATURE_NAME if model.is_dir() else model.parent / SIGNATURE_NAME


def _verify_signature(bundle: ModelSigBundle, trust: Trust) -> tuple[str, bytes, str]:
    """Return (payload type, payload, signer) once the signature verifies under `trust`; else raise _Rejected."""
    if isinstance(trust, SigstoreTrust):
        return _verify_sigstore(bundle, trust)
    if bundle.media_type != BUNDLE_MEDIA_TYPE:
        raise _Rejected(f"bundle media type {bundle.media_type!r} is not {BUNDLE_MEDIA_TYPE!r}")
    if isinstance(trust, KeyTrust):
        key = trust.public_key
        signer = f"public key {trust.source} (hint {key_hint(key)[:16]})"
    else:
        key, signer = _verify_certificate_chain(bundle, trust)
    try:
        key.verify(bundle.signature, pae(bundle.payload_type, bundle.payload), ec.ECDSA(_curve_hash(key)))
    except InvalidSignature:
        extra = ""
        if isinstance(trust, KeyTrust):  # the hint only explains a failure; it never decides one
            hint = bundle.material.get("publicKey")
            hint = hint.get("hint") if isinstance(hint, dict) else None
            if isinstance(hint, str) and hint and hint != key_hint(trust.public_key):
                extra = " (its key hint names a different key)"
        raise _Rejected(f"signature does not verify with {signer}{extra}") from None
    return bundle.payload_type, bundle.payload, signer


def _verify_certificate_chain(bundle: ModelSigBundle, trust: CertificateTrust) -> tuple[ec.EllipticCurvePublicKey, str]:
    """Path-validate the bundle's leaf certificate to the caller's anchors (now, not a claimed signing time)."""
    chain = bundle.material.get("x509CertificateChain")
    certs = chain.get("certificates") if isinstance(chain, dict) else None
    if not isinstance(certs, list) or not certs:
        raise _Rejected("bundle carries no X.509 certificate chain (not a certificate-signed model.sig)")
    try:
        parsed = [
            x509.load_der_x509_certificate(
                _b64(bundle.path, c.get("rawBytes") if isinstance(c, dict) else None, "certificate")
            )
            for c in certs
        ]
    except ValueError as exc:
        raise _Rejected(f"bundle holds a malformed certificate ({exc})") from None
    leaf, intermediates = parsed[0], parsed[1:]
    # model-signing's own signing certificates are not WebPKI leaves (the vectors' asserts CA:TRUE), so the leaf's
    # extensions are checked below the way model-signing does; CA certificates keep the WebPKI profile.
    verifier = (
        x509_verification.PolicyBuilder()
        .store(x509_verification.Store(list(trust.anchors)))
        .time(datetime.datetime.now(datetime.UTC))
        .extension_policies(
            ca_policy=x509_verification.ExtensionPolicy.webpki_defaults_ca(),
            ee_policy=x509_verification.ExtensionPolicy.permit_all(),
        )
        .build_client_verifier()
    )
    try:
        verifier.verify(leaf, intermediates)
    except x509_verification.VerificationError as exc:
        raise _Rejected(f"signing certificate does not chain to {trust.source}: {exc}") from None
    if not _may_sign(leaf):
        raise _Rejected("signing certificate allows neither digitalSignature nor codeSigning")
    key = leaf.public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name not in CURVE_HASHES:
        raise _Rejected("signing certificate key is not EC P-256, P-384 or P-521")
    fingerprint = leaf.fingerprint(hashes.SHA256()).hex()
    return key, f"certificate {leaf.subject.rfc4514_string()} (sha256 {fingerprint[:16]})"


def _may_sign(cert: x509.Certificate) -> bool:
    try:
        if cert.extensions.get_extension_for_class(x509.KeyUsage).value.digital_signature:
            return True
    except x509.ExtensionNotFound:
        pass
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
        return x509.oid.ExtendedKeyUsageOID.CODE_SIGNING in eku
    except x509.ExtensionNotFound:
        return False


def _verify_sigstore(bundle: ModelSigBundle, trust: SigstoreTrust) -> tuple[str, bytes, str]:
    """Keyless: sigstore-python checks certificate, transparency log, identity policy and DSSE signature, offline."""
    from sigstore.errors import Error as SigstoreError
    from sigstore.errors import VerificationError as SigstoreVerificationError
    from sigstore.models import Bundle, InvalidBundle, TrustedRoot
    from sigstore.verify import Verifier
    from sigstore.verify.policy import Identity

    try:
        sb = Bundle.from_json(bundle.raw)
    except (InvalidBundle, ValueError, KeyError, TypeError) as exc:
        raise _Rejected(f"not a valid Sigstore bundle ({exc})") from None
    try:
        if trust.trusted_root is not None:
            verifier = Verifier(trusted_root=TrustedRoot.from_file(str(trust.trusted_root)))
        else:
            verifier = Verifier.production(offline=True)
    except (SigstoreError, ValueError, OSError) as exc:
        raise InputError(trust.trusted_root, f"cannot load the Sigstore trusted root ({exc})") from None
    try:
        payload_type, payload = verifier.verify_dsse(sb, Identity(identity=trust.identity, issuer=trust.issuer))
    except SigstoreVerificationError as exc:
        raise _Rejected(f"Sigstore verification failed for {trust.identity} / {trust.issuer}: {exc}") from None
    return payload_type, payload, f"{trust.identity} (issuer {trust.issuer}, Sigstore)"


class _Resource(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    name: str
    algorithm: str
    digest: str


class _Serialization(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    method: str
    hash_type: str
    allow_symlinks: bool = False
    shard_size: int | float | None = None
    ignore_paths: list[str] = Field(default_factory=list)


class _Predicate(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    serialization: _Serialization
    resources: list[_Resource]


class _Subject(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True)
    name: str = ""
    digest: dict[str, str]


class _Statement(BaseModel):
    model_config = ConfigDict(extra="ignore", strict=True, populate_by_name=True)
    type_: str = Field(alias="_type")
    subject: list[_Subject]
    predicateType: str
    predicate: dict[str, Any]


def _check_statement(
    sig_path: Path, payload_type: str, payload: bytes, result: ModelSigVerification
) -> tuple[ModelSigSerialization, list[_Resource]] | None:
    """Checks on the authenticated payload; returns the serialization and resources, or None after a problem."""

    def fail(problem: str) -> None:
        result.problems.append(f"{sig_path}: {problem}")

    if payload_type != PAYLOAD_TYPE:
        fail(f"payload type {payload_type!r} is not {PAYLOAD_TYPE!r}")
        return None
    try:
        doc = _parse_json(sig_path, payload, "signed statement")
        st = _Statement.model_validate(doc)
    except InputError as exc:
        fail(exc.problem)
        return None
    except ValidationError as exc:
        fail(f"signed statement is not an in-toto Statement ({_first_error(exc)})")
        return None
    if st.type_ != STATEMENT_TYPE:
        fail(f"statement type {st.type_!r} is not {STATEMENT_TYPE!r}")
        return None
    if st.predicateType != PREDICATE_TYPE:
        fail(f"predicate type {st.predicateType!r} is not {PREDICATE_TYPE!r}")
        return None
    if len(st.subject) != 1 or "sha256" not in st.subject[0].digest:
        fail("statement must have exactly one subject with a sha256 digest")
        return None
    try:
        pred = _Predicate.model_validate(st.predicate)
    except ValidationError as exc:
        fail(f"model-signing predicate is malformed ({_first_error(exc)})")
        return None
    result.model_name = st.subject[0].name
    result.subject_digest = st.subject[0].digest["sha256"]
    s = pred.serialization
    shard_size: int | None = None
    if s.method not in ("files", "shards"):
        fail(f"unknown serialization method {s.method!r}")
        return None
    if s.hash_type not in HASH_TYPES or (s.method == "shards" and s.hash_type == "blake3"):
        fail(f"unsupported hash type {s.hash_type!r} for {s.method} serialization")
        return None
    if s.method == "shards":
        # model-signing stores its predicate as a protobuf Struct, so the shard size arrives as a float (1024.0).
        if s.shard_size is None or s.shard_size != int(s.shard_size) or int(s.shard_size) <= 0:
            fail(f"shards serialization needs a positive integer shard_size, got {s.shard_size!r}")
            return None
        shard_size = int(s.shard_size)
    result.serialization = ModelSigSerialization(
        method=s.method,  # checked above
        hash_type=s.hash_type,
        allow_symlinks=s.allow_symlinks,
        shard_size=shard_size,
        ignore_paths=s.ignore_paths,
    )
    result.resources = len(pred.resources)
    if not pred.resources:
        fail("the signature covers no files")
        return None
    allowed = {s.hash_type} | ({f"{s.hash_type}-sharded-{shard_size}"} if shard_size else set())
    names: set[str] = set()
    subject = hashlib.sha256()
    for r in pred.resources:
        if r.name in names:
            fail(f"resource {r.name!r} is listed twice")
            return None
        names.add(r.name)
        if r.algorithm not in allowed:
            fail(f"resource {r.name!r} uses algorithm {r.algorithm!r}, the serialization says {s.hash_type!r}")
            return None
        if len(r.digest) != DIGEST_HEX_LEN[s.hash_type] or not _is_hex(r.digest):
            fail(f"resource {r.name!r} has a malformed {s.hash_type} digest")
            return None
        subject.update(bytes.fromhex(r.digest))
    if subject.hexdigest() != result.subject_digest.lower():
        fail("subject digest does not match the digests of the listed resources")
        return None
    return result.serialization, list(pred.resources)


# ---------------------------------------------------------------------------------------------------------------
# The folder side


@dataclass
class _Scan:
    files: dict[str, Path] = field(default_factory=dict)  # relative POSIX name -> path to open
    sizes: dict[str, int] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)  # relative name -> why


def _ignore_rules(root: Path, entries: Iterable[str]) -> list[tuple[str, ...]]:
    """Normalise ignore paths to relative part tuples. Absolute paths outside, `..`, and `.` (everything) drop out."""
    rules: set[tuple[str, ...]] = set()
    for entry in entries:
        p = PurePosixPath(str(entry).replace("\\", "/"))
        if p.is_absolute():
            try:
                p = PurePosixPath(Path(str(p)).resolve().relative_to(root.resolve()).as_posix())
            except (ValueError, OSError):
                continue
        parts = tuple(x for x in p.parts if x != ".")
        if not parts or ".." in parts:
            continue
        rules.add(parts)
    return sorted(rules)


def _is_ignored(parts: tuple[str, ...], rules: list[tuple[str, ...]]) -> bool:
    return any(parts[: len(rule)] == rule for rule in rules)


def _scan(model: Path, rules: list[tuple[str, ...]], allow_symlinks: bool) -> _Scan:
    """Every regular file under `model` that no rule ignores. Symlinks only when allowed and inside the folder."""
    scan = _Scan()
    if not model.is_dir():
        st = model.lstat()
        if stat.S_ISLNK(st.st_mode) and not allow_symlinks:
            scan.refused["."] = "is a symlink and the signature does not allow symlinks"
        elif not model.is_file():
            scan.refused["."] = "not a regular file"
        else:
            scan.files["."] = model.resolve()
            scan.sizes["."] = model.stat().st_size
        return scan
    real_root = model.resolve()

    def walk_error(exc: OSError) -> None:
        raise InputError(exc.filename, f"cannot list: {exc.strerror or exc}")

    for dirpath, dirnames, filenames in os.walk(model, followlinks=False, onerror=walk_error):
        rel_dir = Path(dirpath).relative_to(model)
        keep = []
        for name in sorted(dirnames):
            rel = (rel_dir / name).as_posix()
            if _is_ignored(PurePosixPath(rel).parts, rules):
                continue
            if (Path(dirpath) / name).is_symlink():
                scan.refused[rel] = "is a symlinked folder (not followed)"
            else:
                keep.append(name)
        dirnames[:] = keep
        for name in sorted(filenames):
            rel = (rel_dir / name).as_posix()
            full = Path(dirpath) / name
            if _is_ignored(PurePosixPath(rel).parts, rules):
                continue
            try:
                st = full.lstat()
                if stat.S_ISLNK(st.st_mode):
                    if not allow_symlinks:
                        scan.refused[rel] = "is a symlink and the signature does not allow symlinks"
                        continue
                    target = full.resolve(strict=True)
                    if not target.is_relative_to(real_root):
                        scan.refused[rel] = "is a symlink leading outside the model folder"
                        continue
                    full, st = target, target.stat()
            except (OSError, RuntimeError) as exc:
                scan.refused[rel] = f"cannot be read ({getattr(exc, 'strerror', None) or exc})"
                continue
            if not stat.S_ISREG(st.st_mode):
                scan.refused[rel] = "is not a regular file (device, socket or pipe)"
                continue
            scan.files[rel] = full
            scan.sizes[rel] = st.st_size
    return scan


class _Hasher(Protocol):
    def update(self, data: memoryview, /) -> object: ...
    def hexdigest(self) -> str: ...


def _new_hasher(hash_type: str) -> _Hasher:
    if hash_type == "sha256":
        return hashlib.sha256()
    if hash_type == "blake2":
        return hashlib.blake2b()
    if hash_type == "blake3":
        return blake3.blake3()
    raise ValueError(hash_type)


def hash_file(
    path: Path,
    hash_type: str = "sha256",
    start: int = 0,
    end: int | None = None,
    on_bytes: BytesCallback | None = None,
) -> str:
    """Digest of bytes [start, end) of a file, read 1 MiB at a time into one reused buffer (bounded memory)."""
    h = _new_hasher(hash_type)
    buf = bytearray(READ_CHUNK)
    view = memoryview(buf)
    # No following a symlink swapped in after the scan, no blocking on a pipe swapped in: regular files only.
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise OSError(f"{path} is not a regular file")
    with open(fd, "rb", buffering=0) as fh:
        if start:
            fh.seek(start)
        left = end - start if end is not None else None
        while left is None or left > 0:
            want = READ_CHUNK if left is None else min(READ_CHUNK, left)
            n = fh.readinto(view[:want])
            if not n:
                break
            h.update(view[:n])
            if left is not None:
                left -= n
            if on_bytes is not None:
                on_bytes(n)
    return h.hexdigest()


def _shard_spans(size: int, shard_size: int) -> list[tuple[int, int]]:
    """model-signing cuts a file into [k*shard_size, min((k+1)*shard_size, size)); an empty file has no shards."""
    return [(s, min(s + shard_size, size)) for s in range(0, size, shard_size)]


def _hash_many(
    jobs: list[tuple[str, Path, int, int | None]], hash_type: str, on_bytes: BytesCallback | None
) -> dict[tuple[str, int], str | OSError]:
    """Hash (name, path, start, end) jobs on a few threads (hashlib releases the GIL on large updates)."""
    out: dict[tuple[str, int], str | OSError] = {}
    workers = max(1, min(8, os.cpu_count() or 1, len(jobs)))
    with concurrent.futures.ThreadPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(hash_file, p, hash_type, s, e, on_bytes): (n, s) for n, p, s, e in jobs}
        for fut in concurrent.futures.as_completed(futures):
            try:
                out[futures[fut]] = fut.result()
            except OSError as exc:
                out[futures[fut]] = exc
    return out


def _check_files(
    model: Path,
    sig_path: Path,
    s: ModelSigSerialization,
    resources: list[_Resource],
    ignore: Sequence[str],
    result: ModelSigVerification,
    on_total: BytesCallback | None,
    on_bytes: BytesCallback | None,
) -> None:
    """Re-hash the folder and name every file that is changed, missing or extra."""
    rules = _ignore_rules(model, _verify_ignores(model, sig_path, ignore, s.ignore_paths))
    result.ignored = ["/".join(r) for r in rules]
    scan = _scan(model, rules, s.allow_symlinks)
    names = [r.name for r in resources]
    if names == ["."] and model.is_dir():
        # Signed as a single file (the resource is '.'): the folder must hold that one file and nothing else.
        if len(scan.files) == 1 and not scan.refused:
            only = next(iter(scan.files))
            result.notes.append(f"the signature covers a single file; checked {only} against it")
            scan.files = {".": scan.files[only]}
            scan.sizes = {".": scan.sizes[only]}
            shown = {".": only}
        else:
            held = sorted(scan.files) + sorted(scan.refused)
            listed = ", ".join(str(model / rel) for rel in held[:5]) + (" …" if len(held) > 5 else "")
            result.problems.append(
                f"{sig_path}: signs the single file {model / (result.model_name or '?')} (its subject name), but "
                f"{model} holds {len(held)} files{': ' + listed if held else ''}"
            )
            return
    else:
        shown = {}

    def where(rel: str) -> str:
        rel = shown.get(rel, rel)
        return str(model) if rel == "." else str(model / rel)

    def finding(rel: str, status: Status, detail: str) -> None:
        result.findings.append(ModelSigFinding(path=shown.get(rel, rel), status=status, detail=detail))
        result.problems.append(f"{where(rel)}: {detail}")

    for rel, why in sorted(scan.refused.items()):
        finding(rel, "refused", why)

    if s.method == "files":
        expected = {r.name: r.digest.lower() for r in resources}
        present = [rel for rel in sorted(scan.files) if rel in expected]
        jobs: list[tuple[str, Path, int, int | None]] = [(rel, scan.files[rel], 0, None) for rel in present]
        if on_total is not None:
            on_total(sum(scan.sizes[rel] for rel in present))
        digests = _hash_many(jobs, s.hash_type, on_bytes)
        result.files_checked = len(present)
        for rel in present:
            got = digests[(rel, 0)]
            if isinstance(got, OSError):
                finding(rel, "refused", f"cannot be read ({got.strerror or got})")
            elif got != expected[rel]:
                finding(rel, "changed", f"changed ({s.hash_type} signed {expected[rel][:16]}…, now {got[:16]}…)")
        signed_files = set(expected)
    else:
        assert s.shard_size is not None
        by_file: dict[str, dict[tuple[int, int], str]] = {}
        for r in resources:
            # a shard name is "path:start:end"; the path may itself contain ':'
            head, _, end_txt = r.name.rpartition(":")
            file_name, _, start_txt = head.rpartition(":")
            if not (file_name and start_txt.isdigit() and end_txt.isdigit()):
                result.problems.append(f"{sig_path}: shard resource {r.name!r} is not 'path:start:end'")
                return
            span = (int(start_txt), int(end_txt))
            by_file.setdefault(file_name, {})[span] = r.digest.lower()
        present = [rel for rel in sorted(scan.files) if rel in by_file]
        jobs = []
        for rel in present:
            spans = _shard_spans(scan.sizes[rel], s.shard_size)
            if set(spans) != set(by_file[rel]):
                signed_size = max(e for _, e in by_file[rel])
                finding(rel, "changed", f"changed (size {scan.sizes[rel]} bytes, signed {signed_size})")
                continue
            jobs.extend((rel, scan.files[rel], a, b) for a, b in spans)
        if on_total is not None:
            on_total(sum(b - a for _, _, a, b in jobs if b is not None))
        digests = _hash_many(jobs, s.hash_type, on_bytes)
        result.files_checked = len({rel for rel, *_ in jobs})
        bad: dict[str, list[str]] = {}
        for rel, _, a, b in jobs:
            got = digests[(rel, a)]
            if isinstance(got, OSError):
                bad.setdefault(rel, []).append(f"unreadable {a}-{b}")
            elif b is not None and got != by_file[rel][(a, b)]:
                bad.setdefault(rel, []).append(f"bytes {a}-{b}")
        for rel, spans_bad in sorted(bad.items()):
            finding(rel, "changed", f"changed ({', '.join(spans_bad[:4])}{' …' if len(spans_bad) > 4 else ''})")
        signed_files = set(by_file)
        empty_extra = [rel for rel in scan.files if rel not in by_file and scan.sizes[rel] == 0]
        if empty_extra:
            result.notes.append(
                f"empty files have no shards and cannot be signed in shards serialization: {', '.join(empty_extra)}"
            )
            for rel in empty_extra:
                del scan.files[rel]

    for rel in sorted(signed_files - set(scan.files) - set(scan.refused)):
        parts = PurePosixPath(rel).parts
        if _is_ignored(parts, rules):
            finding(rel, "missing", "signed, but excluded by an ignore path")
        else:
            finding(rel, "missing", "missing (signed, not in the folder)")
    for rel in sorted(set(scan.files) - signed_files):
        finding(rel, "extra", "extra file (not covered by the signature)")


def _verify_ignores(model: Path, sig_path: Path, user: Sequence[str], signed: Sequence[str]) -> list[str]:
    """What verification leaves out: the signer's ignore_paths, the caller's, git files, attest's folder, the
    signature itself. Signed resources under an ignored path are reported missing (as model-signing does)."""
    entries = [*GIT_PATHS, ATTEST_DIR, SIGNATURE_NAME, *signed, *user]
    if model.is_dir():
        # The signature's own path as written (never resolved: a symlinked model.sig would hide its target).
        try:
            entries.append(sig_path.absolute().relative_to(model.absolute()).as_posix())
        except ValueError:
            pass
    return entries


# ---------------------------------------------------------------------------------------------------------------
# Signing


def sign_model_sig(
    model_path: str | os.PathLike[str],
    private_key: ec.EllipticCurvePrivateKey,
    *,
    ignore: Sequence[str] = (),
    signature_path: str | os.PathLike[str] | None = None,
    on_total: BytesCallback | None = None,
    on_bytes: BytesCallback | None = None,
) -> ModelSigSigned:
    """Write a key-signed `model.sig` (files serialization, sha256) that model-signing 1.x verifies.

    The ignore paths (git files, `.attest`, `model.sig`, and `ignore`) are recorded in the predicate so that a
    verifier leaves out the same files. The signature file is written atomically.
    """
    model = Path(model_path)
    if not model.is_dir():
        raise InputError(model, "no such folder" if not model.exists() else "not a folder")
    if private_key.curve.name not in CURVE_HASHES:
        raise InputError(None, f"unsupported curve {private_key.curve.name}")
    sig_path = Path(signature_path) if signature_path is not None else model / SIGNATURE_NAME
    entries = [*GIT_PATHS, ATTEST_DIR, SIGNATURE_NAME, *ignore]
    try:
        entries.append(sig_path.resolve().relative_to(model.resolve()).as_posix())
    except (ValueError, OSError):
        pass
    rules = _ignore_rules(model, entries)
    scan = _scan(model, rules, allow_symlinks=False)
    for rel, why in sorted(scan.refused.items()):
        raise InputError(model / rel, why)
    if not scan.files:
        raise InputError(model, "no files to sign (all ignored or the folder is empty)")
    names = sorted(scan.files, key=lambda rel: PurePosixPath(rel).parts)
    if on_total is not None:
        on_total(sum(scan.sizes.values()))
    digests = _hash_many([(rel, scan.files[rel], 0, None) for rel in names], "sha256", on_bytes)
    resources = []
    subject = hashlib.sha256()
    for rel in names:
        got = digests[(rel, 0)]
        if isinstance(got, OSError):
            raise InputError(model / rel, f"cannot read: {got.strerror or got}")
        resources.append({"name": rel, "algorithm": "sha256", "digest": got})
        subject.update(bytes.fromhex(got))
    ignore_paths = ["/".join(r) for r in rules]
    model_name = model.resolve().name
    statement = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": model_name, "digest": {"sha256": subject.hexdigest()}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": {
                "method": "files",
                "hash_type": "sha256",
                "allow_symlinks": False,
                "ignore_paths": ignore_paths,
            },
            "resources": resources,
        },
    }
    payload = json.dumps(statement, indent=2, ensure_ascii=False).encode("utf-8")
    atomic_write_bytes(sig_path, make_key_bundle(payload, private_key))
    return ModelSigSigned(
        signature=str(sig_path),
        model_name=model_name,
        subject_digest=subject.hexdigest(),
        resources=len(resources),
        ignore_paths=ignore_paths,
    )


def make_key_bundle(payload: bytes, private_key: ec.EllipticCurvePrivateKey) -> bytes:
    """A model-signing key-mode bundle over `payload`: v0.3, DSSE, `publicKey.hint`, no transparency log entries."""
    public_key = private_key.public_key()
    sig = private_key.sign(pae(PAYLOAD_TYPE, payload), ec.ECDSA(_curve_hash(public_key)))
    bundle = {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": key_hint(public_key)}, "tlogEntries": []},
        "dsseEnvelope": {
            "payload": base64.b64encode(payload).decode("ascii"),
            "payloadType": PAYLOAD_TYPE,
            "signatures": [{"sig": base64.b64encode(sig).decode("ascii"), "keyid": ""}],
        },
    }
    return (json.dumps(bundle, indent=2) + "\n").encode("utf-8")


# ---------------------------------------------------------------------------------------------------------------
# Small helpers


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding: what the signature covers (an encoding, not crypto)."""
    t = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(t), t, len(payload), payload)


def _curve_hash(key: ec.EllipticCurvePublicKey) -> hashes.HashAlgorithm:
    try:
        return CURVE_HASHES[key.curve.name]()
    except KeyError:
        raise _Rejected(f"unsupported curve {key.curve.name}") from None


def _read_small(path: Path, limit: int) -> bytes:
    """Read a whole small input file, refusing anything over `limit` bytes before reading it."""
    try:
        with open(path, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                raise InputError(path, "not a regular file")
            data = fh.read(limit + 1)
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise InputError(path, f"larger than {limit} bytes")
    return data


def _parse_json(path: Path, data: bytes, what: str) -> Any:
    """Strict JSON: UTF-8, no duplicate keys (two parsers must never see two different documents)."""

    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=reject_duplicate_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InputError(path, f"{what} is not valid JSON ({exc})") from None


def _b64(path: Path, value: object, what: str) -> bytes:
    """Protobuf-JSON bytes: standard base64, URL-safe accepted too."""
    if not isinstance(value, str) or not value:
        raise InputError(path, f"{what} is missing or not a base64 string")
    std = value.replace("-", "+").replace("_", "/").rstrip("=")
    try:
        return base64.b64decode(std + "=" * (-len(std) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise InputError(path, f"{what} is not valid base64") from None


def _is_hex(s: str) -> bool:
    return all(c in "0123456789abcdefABCDEF" for c in s)


def _first_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(x) for x in first["loc"]) or "document"
    return f"{where}: {first['msg']}"
