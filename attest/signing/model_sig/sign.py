"""Write a `model.sig` that model-signing 1.x verifies (key, certificate or Sigstore signed): files serialization,
SHA-256, symlinks refused."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath

from cryptography.hazmat.primitives.asymmetric import ec

from attest.atomic import atomic_write_bytes
from attest.errors import InputError
from attest.signing.keys import READABLE_KEY_TYPES, PrivateKey
from attest.signing.model_sig.bundle import SIGNATURE_NAME, check_key_type, make_key_bundle
from attest.signing.model_sig.results import ModelSigSigned
from attest.signing.model_sig.serialization import BytesCallback, hash_many, scan_for_signing
from attest.signing.model_sig.statement import ModelSigResource, files_statement, subject_digest


def sign_model_sig(
    model_path: str | os.PathLike[str],
    private_key: PrivateKey | ec.EllipticCurvePrivateKey | None = None,
    *,
    make_bundle: Callable[[bytes], bytes] | None = None,
    ignore: Sequence[str] = (),
    signature_path: str | os.PathLike[str] | None = None,
    on_total: BytesCallback | None = None,
    on_bytes: BytesCallback | None = None,
) -> ModelSigSigned:
    """Sign a model folder with an EC key (P-256, P-384 or P-521), or with `make_bundle` (statement bytes -> bundle
    bytes: certificate or Sigstore mode, attest.signing.model_sig.signers).

    The ignore paths (git files, `.attest`, `model.sig`, and `ignore`) are recorded in the predicate so that a
    verifier leaves out the same files. The signature file is written atomically.
    """
    model = Path(model_path)
    if not model.is_dir():
        raise InputError(model, "no such folder" if not model.exists() else "not a folder")
    if (private_key is None) == (make_bundle is None):
        raise ValueError("sign_model_sig needs exactly one of private_key and make_bundle")
    if private_key is not None:
        key = (
            private_key
            if isinstance(private_key, PrivateKey)
            else PrivateKey.from_crypto(private_key, key_types=READABLE_KEY_TYPES)
        )
        check_key_type(key)
        make_bundle = functools.partial(_key_bundle, key=key)
    sig_path = Path(signature_path) if signature_path is not None else model / SIGNATURE_NAME
    scan, rules = scan_for_signing(model, sig_path, ignore)
    names = sorted(scan.files, key=lambda rel: PurePosixPath(rel).parts)
    if on_total is not None:
        on_total(sum(scan.sizes.values()))
    digests = hash_many([(rel, scan.files[rel], 0, None) for rel in names], "sha256", on_bytes)
    resources = []
    for rel in names:
        got = digests[(rel, 0)]
        if isinstance(got, OSError):
            raise InputError(model / rel, f"cannot read: {got.strerror or got}")
        resources.append(ModelSigResource(name=rel, algorithm="sha256", digest=got))
    ignore_paths = ["/".join(r) for r in rules]
    model_name = model.resolve().name
    assert make_bundle is not None
    atomic_write_bytes(sig_path, make_bundle(files_statement(model_name, resources, ignore_paths)))
    return ModelSigSigned(
        signature=str(sig_path),
        model_name=model_name,
        subject_digest=subject_digest(r.digest for r in resources),
        resources=len(resources),
        ignore_paths=ignore_paths,
    )


def _key_bundle(payload: bytes, key: PrivateKey) -> bytes:
    return make_key_bundle(payload, key)
