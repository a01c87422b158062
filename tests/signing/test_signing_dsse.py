"""DSSE: round trips for each key type, every way a signature must fail, and interoperability with independent DSSE
implementations (securesystemslib's Envelope and Signer, sigstore-python's PAE)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from securesystemslib.dsse import Envelope as SslibEnvelope
from securesystemslib.signer import CryptoSigner, SSlibKey

from attest.lineage.store import BundleError, parse_bundle
from attest.signing import (
    KEY_TYPES,
    Envelope,
    EnvelopeError,
    PayloadTypeError,
    PublicKey,
    SignatureError,
    SubjectError,
    add_signature,
    pae,
    sign_envelope,
    verify_envelope,
    verify_signatures,
)
from attest.signing.keys import PrivateKey, generate_key, generate_private_key, load_private_key
from attest.statements import PAYLOAD_TYPE, StatementError

SUBJECT = "ab" * 32
PAYLOAD = json.dumps(
    {
        "_type": "https://in-toto.io/Statement/v1",
        "subject": [{"name": "m", "digest": {"sha256": SUBJECT}}],
        "predicateType": "https://slsa.dev/provenance/v1",
        "predicate": {
            "buildDefinition": {"buildType": "https://attest.dev/buildtypes/merge/v1", "externalParameters": {}},
            "runDetails": {"builder": {"id": "https://attest.dev/builders/test"}},
        },
    },
    separators=(",", ":"),
).encode()


@pytest.fixture(params=KEY_TYPES)
def key(request: pytest.FixtureRequest) -> PrivateKey:
    return generate_private_key(request.param)


def test_pae_matches_the_spec_and_other_implementations() -> None:
    from sigstore.dsse import _pae as sigstore_pae

    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )
    assert pae(PAYLOAD_TYPE, PAYLOAD) == sigstore_pae(PAYLOAD_TYPE, PAYLOAD)
    assert pae(PAYLOAD_TYPE, PAYLOAD) == SslibEnvelope(PAYLOAD, PAYLOAD_TYPE, {}).pae()
    assert pae("ü", b"") == "DSSEv1 2 ü 0 ".encode()


def test_round_trip(key: PrivateKey) -> None:
    env = Envelope.from_json(sign_envelope(PAYLOAD, [key]).to_json())
    verified = verify_envelope(env, [key.public], subject_digest=SUBJECT)
    assert verified.statement.subject[0].name == "m"
    assert [k.keyid for k in verified.signers] == [key.public.keyid]
    assert env.payload_bytes == PAYLOAD


def test_securesystemslib_verifies_our_envelopes(key: PrivateKey) -> None:
    """Independent DSSE implementation: securesystemslib parses our JSON, computes its own PAE and verifies."""
    env = sign_envelope(PAYLOAD, [key])
    theirs = SslibEnvelope.from_dict(json.loads(env.to_json()))
    sslib_key = SSlibKey.from_crypto(key.public.key, keyid=key.public.keyid)
    accepted = theirs.verify([sslib_key], 1)
    assert list(accepted) == [key.public.keyid]
    assert theirs.payload == PAYLOAD


def test_we_verify_securesystemslib_envelopes(key: PrivateKey) -> None:
    signer = CryptoSigner(key.key)
    theirs = SslibEnvelope(PAYLOAD, PAYLOAD_TYPE, {})
    theirs.sign(signer)
    ours = Envelope.from_json(json.dumps(theirs.to_dict()))
    assert verify_envelope(ours, [key.public]).payload_digest == ours.payload_digest


def test_tampered_payload_is_rejected(key: PrivateKey) -> None:
    env = sign_envelope(PAYLOAD, [key])
    tampered = PAYLOAD.replace(b'"m"', b'"n"')
    bad = env.model_copy(update={"payload": base64.b64encode(tampered).decode()})
    with pytest.raises(SignatureError):
        verify_envelope(bad, [key.public])


def test_tampered_payload_type_is_rejected(key: PrivateKey) -> None:
    env = sign_envelope(PAYLOAD, [key])
    with pytest.raises(SignatureError):
        verify_envelope(env.model_copy(update={"payloadType": "application/json"}), [key.public])


def test_wrong_key_is_rejected(key: PrivateKey) -> None:
    env = sign_envelope(PAYLOAD, [key])
    other = generate_private_key(key.key_type).public
    with pytest.raises(SignatureError, match="0 of 1"):
        verify_envelope(env, [other])
    with pytest.raises(SignatureError, match="no trusted keys"):
        verify_envelope(env, [])


def test_swapped_signature_is_rejected(key: PrivateKey) -> None:
    """A valid signature by the trusted key, but over another payload, moved into this envelope."""
    env = sign_envelope(PAYLOAD, [key])
    other = sign_envelope(PAYLOAD.replace(b'"m"', b'"x"'), [key])
    swapped = env.model_copy(update={"signatures": other.signatures})
    with pytest.raises(SignatureError):
        verify_envelope(swapped, [key.public])


def test_keyid_is_only_a_hint() -> None:
    trusted, attacker = generate_private_key(), generate_private_key()
    forged = sign_envelope(PAYLOAD, [attacker])
    claims_trusted = forged.model_copy(
        update={"signatures": [forged.signatures[0].model_copy(update={"keyid": trusted.public.keyid})]}
    )
    with pytest.raises(SignatureError):
        verify_envelope(claims_trusted, [trusted.public])
    good = sign_envelope(PAYLOAD, [trusted])
    no_hint = good.model_copy(update={"signatures": [good.signatures[0].model_copy(update={"keyid": ""})]})
    assert verify_envelope(no_hint, [attacker.public, trusted.public]).signers[0].keyid == trusted.public.keyid


def test_several_signatures_and_threshold() -> None:
    builder, auditor = generate_private_key("ed25519"), generate_private_key("ecdsa-p256")
    env = sign_envelope(PAYLOAD, [builder])
    with pytest.raises(SignatureError, match="2 needed"):
        verify_signatures(env, [builder.public, auditor.public], threshold=2)
    both = add_signature(env, auditor)
    assert add_signature(both, auditor) == both  # the same key is not added twice
    assert len(verify_signatures(both, [builder.public, auditor.public], threshold=2)) == 2
    # the same signature repeated does not count twice
    doubled = env.model_copy(update={"signatures": env.signatures * 2})
    with pytest.raises(SignatureError):
        verify_signatures(doubled, [builder.public, auditor.public], threshold=2)


def test_wrong_payload_type_and_subject_are_checked_after_signatures(key: PrivateKey) -> None:
    env = sign_envelope(PAYLOAD, [key], payload_type="application/json")
    with pytest.raises(PayloadTypeError):
        verify_envelope(env, [key.public])
    with pytest.raises(SubjectError):
        verify_envelope(sign_envelope(PAYLOAD, [key]), [key.public], subject_digest="cd" * 32)
    with pytest.raises(StatementError):
        verify_envelope(sign_envelope(b'{"_type":"x"}', [key]), [key.public])


def test_truncated_and_malformed_bundles_are_rejected(key: PrivateKey) -> None:
    lines = (sign_envelope(PAYLOAD, [key]).to_json() + "\n").encode() * 2
    assert len(parse_bundle(lines)) == 2
    for cut in (len(lines) - 1, len(lines) - 20, len(lines) // 2 + 3):
        with pytest.raises(BundleError):
            parse_bundle(lines[:cut])
    with pytest.raises(BundleError, match="empty line"):
        parse_bundle(lines + b"\n")
    with pytest.raises(BundleError, match="line 1"):
        parse_bundle(b'{"payload": "!!", "payloadType": "x", "signatures": []}\n')
    with pytest.raises(EnvelopeError):
        Envelope.from_json('{"payload": "eA==", "signatures": []}')


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("eA= =", "not valid base64"),  # whitespace
        ("eA\n==", "not valid base64"),
        ("eA", "not valid base64"),  # padding required
        ("+-8=", "mixes"),  # one alphabet per string
        ("eB==", "canonical"),  # non-zero pad bits: a second text for the byte b"x"
    ],
)
def test_base64_is_one_canonical_text(text: str, message: str) -> None:
    with pytest.raises(EnvelopeError, match=message):
        Envelope.from_json(json.dumps({"payload": text, "payloadType": PAYLOAD_TYPE, "signatures": []}))
    assert Envelope.from_json(json.dumps({"payload": "-_8=", "payloadType": "t", "signatures": []})).payload_bytes == (
        base64.b64decode("+/8=")
    )


def test_foreign_key_types_are_refused() -> None:
    with pytest.raises(Exception, match="unsupported"):
        PublicKey.from_crypto(ec.generate_private_key(ec.SECP521R1()).public_key())
    assert PublicKey.from_crypto(ed25519.Ed25519PrivateKey.generate().public_key()).key_type == "ed25519"


def _spec_example(marker: str) -> str:
    spec = (Path(__file__).resolve().parents[2] / "SPEC.md").read_text()
    after = spec[spec.index(f"<!-- spec-example: {marker} -->") :]
    return after.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_spec_securesystemslib_example_runs_verbatim(key_type: str, tmp_path: Path) -> None:
    """SPEC.md 3.1's third-party example, run as written on a folder attest signed: it verifies with attest's keyid
    (sha256 of the SPKI DER) and fails with securesystemslib's default keyid."""
    key = generate_key(tmp_path / "builder.key", key_type)  # type: ignore[arg-type]
    bundle = tmp_path / "merged" / ".attest" / "provenance.intoto.jsonl"
    bundle.parent.mkdir(parents=True)
    bundle.write_text(sign_envelope(PAYLOAD, [load_private_key(tmp_path / "builder.key")]).to_json() + "\n")
    code = _spec_example("dsse-securesystemslib")
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"verified by {key.keyid} {SUBJECT}\n"
    default_keyid = code.replace(", keyid=hashlib.sha256(spki_der).hexdigest())", ")")
    assert default_keyid != code
    done = subprocess.run([sys.executable, "-c", default_keyid], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode != 0 and "VerificationError" in done.stderr
