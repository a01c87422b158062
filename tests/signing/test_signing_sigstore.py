"""Sigstore bundles: offline verification of a real staging bundle (../shared/vectors/sigstore), payload type and
subject checked by us; keyless signing needs a network and an OIDC token, so offline it is skipped, never faked."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from attest.errors import InputError
from attest.signing.sigstore import SigstoreError, verify_sigstore_bundle, verify_sigstore_statement
from attest.signing.verify import SubjectError
from attest.statements import PAYLOAD_TYPE, parse_statement

IDENTITY = (
    "https://github.com/sigstore-conformance/extremely-dangerous-public-oidc-beacon/.github/workflows/"
    "extremely-dangerous-oidc-beacon.yml@refs/heads/main"
)
ISSUER = "https://token.actions.githubusercontent.com"


@pytest.fixture(scope="module")
def vectors(shared_dir: Path) -> Path:
    return shared_dir / "vectors" / "sigstore"


def test_staging_bundle_verifies_offline(vectors: Path) -> None:
    bundle = (vectors / "a.dsse.staging-rekor-v2.txt.sigstore.json").read_bytes()
    root = vectors / "staging-trusted_root.json"
    payload_type, payload = verify_sigstore_bundle(bundle, identity=IDENTITY, issuer=ISSUER, trusted_root=root)
    assert payload_type == PAYLOAD_TYPE
    statement = parse_statement(payload)
    assert statement.subject[0].name == "a.txt"
    assert statement.subject_digests() == ["a0cfc71271d6e278e57cd332ff957c3f7043fdda354c4cbb190a30d56efa01bf"]
    # its predicate is a minimal SLSA one (no externalParameters): our strict provenance parser refuses it
    with pytest.raises(InputError, match="externalParameters"):
        verify_sigstore_statement(bundle, identity=IDENTITY, issuer=ISSUER, trusted_root=root)


def test_wrong_identity_issuer_or_root_is_rejected(vectors: Path) -> None:
    bundle = (vectors / "a.dsse.staging-rekor-v2.txt.sigstore.json").read_bytes()
    staging = vectors / "staging-trusted_root.json"
    with pytest.raises(SigstoreError):
        verify_sigstore_bundle(bundle, identity="someone@example.com", issuer=ISSUER, trusted_root=staging)
    with pytest.raises(SigstoreError):
        verify_sigstore_bundle(bundle, identity=IDENTITY, issuer="https://accounts.google.com", trusted_root=staging)
    with pytest.raises(SigstoreError):
        verify_sigstore_bundle(
            bundle, identity=IDENTITY, issuer=ISSUER, trusted_root=vectors / "production-trusted_root.json"
        )


def test_tampered_bundle_is_rejected(vectors: Path) -> None:
    doc = json.loads((vectors / "a.dsse.staging-rekor-v2.txt.sigstore.json").read_bytes())
    doc["dsseEnvelope"]["payload"] = doc["dsseEnvelope"]["payload"].replace("YS50eHQ", "Yi50eHQ")
    with pytest.raises((SigstoreError, InputError)):
        verify_sigstore_bundle(
            json.dumps(doc).encode(),
            identity=IDENTITY,
            issuer=ISSUER,
            trusted_root=vectors / "staging-trusted_root.json",
        )
    with pytest.raises(InputError, match="not a valid Sigstore bundle"):
        verify_sigstore_bundle(
            b"{}", identity=IDENTITY, issuer=ISSUER, trusted_root=vectors / "staging-trusted_root.json"
        )


def test_subject_is_checked(vectors: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """verify_dsse does not look at the subject: verify_sigstore_statement must."""
    from attest.signing import sigstore as mod

    bundle = (vectors / "a.dsse.staging-rekor-v2.txt.sigstore.json").read_bytes()
    full = json.loads(
        parse_statement(
            mod.verify_sigstore_bundle(
                bundle, identity=IDENTITY, issuer=ISSUER, trusted_root=vectors / "staging-trusted_root.json"
            )[1]
        ).model_dump_json(by_alias=True)
    )
    full["predicate"]["buildDefinition"]["externalParameters"] = {}
    monkeypatch.setattr(mod, "verify_sigstore_bundle", lambda *a, **k: (PAYLOAD_TYPE, json.dumps(full).encode()))
    with pytest.raises(SubjectError):
        verify_sigstore_statement(bundle, identity=IDENTITY, issuer=ISSUER, subject_digest="00" * 32)


@pytest.mark.skipif(
    not os.environ.get("SIGSTORE_ID_TOKEN"),
    reason="keyless Sigstore signing needs network access and an OIDC identity token (set SIGSTORE_ID_TOKEN)",
)
def test_keyless_signing_round_trip(tmp_path: Path) -> None:  # pragma: no cover - needs network + OIDC
    from attest.signing.sigstore import sign_sigstore

    payload = json.dumps(
        {
            "_type": "https://in-toto.io/Statement/v1",
            "subject": [{"name": "m", "digest": {"sha256": "ab" * 32}}],
            "predicateType": "https://slsa.dev/provenance/v1",
            "predicate": {
                "buildDefinition": {"buildType": "https://attest.dev/buildtypes/merge/v1", "externalParameters": {}},
                "runDetails": {"builder": {"id": "https://attest.dev/builders/test"}},
            },
        }
    ).encode()
    bundle = sign_sigstore(payload, staging=True)
    assert json.loads(bundle)["dsseEnvelope"]["payloadType"] == PAYLOAD_TYPE
