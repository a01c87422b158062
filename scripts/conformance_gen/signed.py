"""Envelope, statement and bundle vectors (SPEC.md 2 and 3)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from attest.conformance import Expectation, Vector
from scripts.conformance_gen.common import (
    IN_TOTO,
    PAYLOAD_TYPE,
    Signer,
    accept,
    compact,
    envelope,
    public,
    reject,
    statement,
    stream,
    write,
)


def envelope_vectors(out: Path, signer: Signer, subject_root: str) -> list[Vector]:
    vectors: list[Vector] = []
    payload = compact(statement(subject_root))

    def add(
        vid: str,
        env: dict[str, Any] | bytes,
        keys: list[str],
        expect: Expectation,
        description: str,
        threshold: int | None = None,
        subject: str | None = None,
    ) -> None:
        rel = f"envelopes/{'valid' if expect.verdict == 'accept' else 'invalid'}/{vid}.json"
        write(out, rel, env if isinstance(env, bytes) else compact(env) + b"\n")
        vectors.append(
            Vector(
                id=f"env-{vid}",
                kind="envelope",
                path=rel,
                spec=["3.1"],
                description=description,
                keys=keys,
                threshold=threshold,
                subject=subject,
                expect=expect,
            )
        )

    for k in ("ed25519", "p256", "p384"):
        add(k, envelope(signer, payload, [k]), [k], accept(signers=[k]), f"one {k} signature")
    add(
        "all-keys",
        envelope(signer, payload, ["ed25519", "p256"]),
        ["p256", "ed25519", "p384"],
        accept(signers=["ed25519", "p256"]),
        "two of three trusted keys signed; threshold 2",
        threshold=2,
    )
    add(
        "subject",
        envelope(signer, payload, ["ed25519"]),
        ["ed25519"],
        accept(signers=["ed25519"]),
        "the caller's expected model root is a subject",
        subject=subject_root,
    )
    add(
        "urlsafe-base64",
        envelope(signer, compact(statement(subject_root, note="~~~?>")), ["ed25519"], urlsafe=True),
        ["ed25519"],
        accept(signers=["ed25519"]),
        "payload and signature in the URL-safe alphabet",
    )
    wrong_hint = envelope(signer, payload, ["p256"])
    wrong_hint["signatures"][0]["keyid"] = public("ed25519").keyid
    add(
        "keyid-is-a-hint",
        wrong_hint,
        ["ed25519", "p256"],
        accept(signers=["p256"]),
        "the keyid names another trusted key: every key is tried",
    )
    stranger_first = envelope(signer, payload, ["untrusted", "ed25519"])
    add(
        "with-stranger",
        stranger_first,
        ["ed25519"],
        accept(signers=["ed25519"]),
        "an untrusted signature beside a trusted one",
    )
    extra = envelope(signer, payload, ["ed25519"])
    extra["note"] = "unknown envelope fields are ignored"
    add("unknown-field", extra, ["ed25519"], accept(signers=["ed25519"]), "an envelope field DSSE does not define")
    unicode_payload = compact(statement(subject_root, note="模型 naïve"))
    add(
        "non-ascii-payload",
        envelope(signer, unicode_payload, ["p384"]),
        ["p384"],
        accept(signers=["p384"]),
        "PAE counts the payload's bytes, not its characters",
    )

    sig_fail = reject(1, "signature", "SignatureError", "signatures verify with a trusted key")
    add("untrusted-key", envelope(signer, payload, ["untrusted"]), ["ed25519"], sig_fail, "signed by a stranger only")
    add("no-signatures", envelope(signer, payload, []), ["ed25519"], sig_fail, "an empty signature list")
    tampered = envelope(signer, payload, ["ed25519"])
    tampered["payload"] = base64.b64encode(payload.replace(b'max_steps":3', b'max_steps":4')).decode()
    add("tampered-payload", tampered, ["ed25519"], sig_fail, "payload changed after signing")
    add(
        "pae-over-base64",
        envelope(signer, payload, ["ed25519"], signed_payload=base64.b64encode(payload)),
        ["ed25519"],
        sig_fail,
        "signed over the base64 text instead of the payload bytes",
    )
    add(
        "type-changed",
        envelope(signer, payload, ["p256"], payload_type="application/json", signed_type=PAYLOAD_TYPE),
        ["p256"],
        sig_fail,
        "payloadType changed after signing (PAE covers it)",
    )
    twice = envelope(signer, payload, ["ed25519", "ed25519"])
    add(
        "same-key-twice",
        twice,
        ["ed25519", "p256"],
        reject(1, "signature", "SignatureError", "1 of 2 signatures verify"),
        "one key twice is one signer; threshold 2",
        threshold=2,
    )
    swapped = envelope(signer, payload, ["p256"])
    swapped["signatures"][0]["sig"] = envelope(signer, payload, ["p384"])["signatures"][0]["sig"]
    add("ecdsa-curve-swap", swapped, ["p256"], sig_fail, "a P-384 signature presented for the P-256 key")
    add(
        "wrong-payload-type",
        envelope(signer, payload, ["ed25519"], payload_type="application/json"),
        ["ed25519"],
        reject(1, "payload-type", "PayloadTypeError", "payloadType is"),
        "validly signed, but not an in-toto payload",
    )
    add(
        "subject-mismatch",
        envelope(signer, payload, ["ed25519"]),
        ["ed25519"],
        reject(1, "subject", "SubjectError", "not " + "cd" * 32),
        "no subject has the expected root",
        subject="cd" * 32,
    )
    no_type = {k: v for k, v in statement(subject_root).items() if k != "_type"}
    add(
        "statement-without-type",
        envelope(signer, compact(no_type), ["ed25519"]),
        ["ed25519"],
        reject(2, "statement", "StatementError", "_type"),
        "a signed payload without _type is not a Statement v1",
    )
    add(
        "statement-other-predicate",
        envelope(signer, compact(statement(subject_root, predicateType="https://example.com/x")), ["ed25519"]),
        ["ed25519"],
        reject(2, "statement", "StatementError", "predicateType"),
        "not SLSA Provenance v1",
    )

    malformed = "EnvelopeError"
    good = envelope(signer, payload, ["ed25519"])
    b64 = good["payload"]
    for vid, env, message, description in [
        (
            "payload-whitespace",
            {**good, "payload": b64[:8] + "\n" + b64[8:]},
            "not valid base64",
            "a newline in the base64",
        ),
        (
            "payload-no-padding",
            {**good, "payload": b64.rstrip("=") if b64.endswith("=") else b64[:-1]},
            "not valid base64",
            "padding left out",
        ),
        (
            "payload-mixed-alphabet",
            {**good, "payload": b64[:-4] + "-_+/"},
            "mixes",
            "URL-safe and standard in one string",
        ),
        (
            "payload-non-canonical",
            {**good, "payload": base64.b64encode(b"x").decode().replace("A=", "B=")},
            "canonical",
            "non-zero pad bits",
        ),
        ("sig-not-base64", {**good, "signatures": [{"keyid": "", "sig": "!!"}]}, "not valid base64", "signature text"),
        ("missing-payload", {k: v for k, v in good.items() if k != "payload"}, "payload", "no payload field"),
        ("missing-signatures", {k: v for k, v in good.items() if k != "signatures"}, "signatures", "no signatures"),
        ("too-many-signatures", {**good, "signatures": good["signatures"] * 65}, "at most 64", "65 signatures"),
    ]:
        add(vid, env, ["ed25519"], reject(2, "envelope", malformed, message), description)
    add(
        "duplicate-key",
        b'{"payload":"eA==","payload":"'
        + b64.encode()
        + b'","payloadType":"'
        + PAYLOAD_TYPE.encode()
        + b'","signatures":[]}\n',
        ["ed25519"],
        reject(2, "envelope", "StatementError", "duplicate key"),
        "an envelope with a repeated key",
    )
    return vectors


def statement_vectors(out: Path, subject_root: str) -> list[Vector]:
    vectors: list[Vector] = []
    good = statement(subject_root)

    def add(vid: str, data: bytes, expect: Expectation, description: str) -> None:
        rel = f"statements/{'valid' if expect.verdict == 'accept' else 'invalid'}/{vid}.json"
        write(out, rel, data)
        vectors.append(
            Vector(
                id=f"stmt-{vid}",
                kind="statement",
                path=rel,
                spec=["2.1", "2.2"],
                description=description,
                expect=expect,
            )
        )

    add("minimal", compact(good), accept(), "the statement the envelope vectors sign")
    add("unknown-fields", compact({**good, "x-extension": {"kept": True}}), accept(), "unknown fields are ignored")
    add("pretty-printed", json.dumps(good, indent=2).encode(), accept(), "whitespace is allowed in the payload")
    bad = "StatementError"
    for vid, doc, message, description in [
        ("no-type", {k: v for k, v in good.items() if k != "_type"}, "_type", "_type is required"),
        ("old-type", {**good, "_type": "https://in-toto.io/Statement/v0.1"}, "_type", "Statement v0.1"),
        ("empty-subject", {**good, "subject": []}, "subject", "no subject"),
        ("upper-hex", {**good, "subject": [{"name": "m", "digest": {"sha256": "AB" * 32}}]}, "hex", "uppercase hex"),
        ("other-predicate", {**good, "predicateType": "https://example.com/p"}, "predicateType", "not SLSA v1"),
        ("no-predicate-type", {k: v for k, v in good.items() if k != "predicateType"}, "predicateType", "no default"),
        (
            "no-build-definition",
            {**good, "predicate": {"runDetails": good["predicate"]["runDetails"]}},
            "buildDefinition",
            "predicate without buildDefinition",
        ),
        ("not-an-object", [good], "valid", "a JSON array"),
    ]:
        add(vid, compact(doc), reject(2, "statement", bad, message), description)
    for vid, data, message, description in [
        ("not-utf8", compact(good).replace(b"single-file", b"single-\xff"), "not UTF-8", "invalid UTF-8"),
        (
            "duplicate-key",
            compact(good)[:-1] + b',"_type":"' + IN_TOTO.encode() + b'"}',
            "duplicate key",
            "a repeated key",
        ),
        ("nan", compact(good).replace(b"0.0001", b"NaN"), "not JSON", "NaN"),
        ("infinity", compact(good).replace(b"0.0001", b"-Infinity"), "not JSON", "-Infinity"),
        ("truncated", compact(good)[:-1], "not valid JSON", "cut short"),
        ("1e400", compact(good).replace(b"0.0001", b"1e400"), "out of range", "a number that overflows a double"),
    ]:
        add(vid, data, reject(2, "statement-json", bad, message), description)
    return vectors


def bundle_vectors(out: Path, signer: Signer, subject_root: str) -> list[Vector]:
    vectors: list[Vector] = []
    one = compact(envelope(signer, compact(statement(subject_root)), ["ed25519"]))
    two = compact(envelope(signer, compact(statement(subject_root, note="second")), ["p256"]))

    def add(vid: str, data: bytes, expect: Expectation, description: str) -> None:
        rel = f"bundles/{'valid' if expect.verdict == 'accept' else 'invalid'}/{vid}.intoto.jsonl"
        write(out, rel, data)
        vectors.append(
            Vector(id=f"bundle-{vid}", kind="bundle", path=rel, spec=["3.3"], description=description, expect=expect)
        )

    add("two-lines", one + b"\n" + two + b"\n", accept(), "two envelopes, each line ending in LF")
    add("empty-file", b"", accept(), "no envelopes")
    err = "BundleError"
    add("no-final-newline", one + b"\n" + two, reject(2, "bundle-truncated", err, "truncated"), "last line cut")
    add("empty-line", one + b"\n\n" + two + b"\n", reject(2, "bundle-empty-line", err, "empty line"), "a blank line")
    add("crlf", one + b"\r\n", accept(), "a CR before the LF is JSON whitespace: the line is still one envelope")
    add("not-an-envelope", one + b"\n" + b'{"a": 1}\n', reject(2, "bundle-line", err, "line 2"), "a JSON line")
    add("same-payload-twice", one + b"\n" + one + b"\n", accept(), "two lines over one payload merge into one")

    def junk(payload: bytes, n: int, seed: str) -> bytes:
        """An envelope with n distinct (unverified) signatures: bundles bound signatures before checking any."""
        sigs = [{"keyid": "", "sig": base64.b64encode(stream(f"{seed}:{i}", 64)).decode()} for i in range(n)]
        return compact({"payload": base64.b64encode(payload).decode(), "payloadType": PAYLOAD_TYPE, "signatures": sigs})

    p0 = compact(statement(subject_root))
    add(
        "65-signatures-merged",
        junk(p0, 33, "a") + b"\n" + junk(p0, 32, "b") + b"\n",
        reject(2, "bundle-signatures-per-statement", err, "more than 64 distinct signatures"),
        "two lines over one payload whose signatures together exceed 64",
    )
    many = b"".join(junk(compact(statement(f"{i:064x}")), 61, f"s{i}") + b"\n" for i in range(17))
    add(
        "1037-signatures",
        many,
        reject(2, "bundle-signatures-total", err, "more than the 1024 allowed"),
        "17 statements about different roots with 61 signatures each",
    )
    crowd = b"".join(junk(compact(statement(subject_root, note=str(i))), 1, f"c{i}") + b"\n" for i in range(17))
    add(
        "17-statements-one-subject",
        crowd,
        reject(2, "bundle-statements-per-subject", err, "more than 16 statements"),
        "17 distinct statements naming one model root",
    )
    return vectors


def policy_vectors(out: Path) -> list[Vector]:
    """Trust policies (SPEC.md 4 step 3, 7.1) in JSON form, which is also YAML."""
    vectors: list[Vector] = []
    pem = public("p256").pem
    root = "AB" * 32

    def add(vid: str, doc: Any, expect: Expectation, description: str) -> None:
        rel = f"policies/{'valid' if expect.verdict == 'accept' else 'invalid'}/{vid}.json"
        write(out, rel, (json.dumps(doc, indent=2) + "\n").encode())
        vectors.append(
            Vector(
                id=f"policy-{vid}", kind="policy", path=rel, spec=["4", "7.1"], description=description, expect=expect
            )
        )

    add("minimal", {}, accept(key_names=[], trusted_roots=[]), "an empty policy trusts nothing")
    keys = [{"name": "auditor", "public_key": "../../keys/ed25519.pub"}, {"name": "builder", "public_key": pem}]
    roots = [{"name": "base", "digest": "sha256:" + root}, {"name": "other", "digest": "cd" * 32}]
    add(
        "keys-and-roots",
        {"name": "conformance", "keys": keys, "trusted_roots": roots},
        accept(key_names=["auditor", "builder"], trusted_roots=[root.lower(), "cd" * 32]),
        "a key by path, one inline; root digests lose the sha256: prefix and are lowercased",
    )
    rules = {"attested_to_roots": True, "licenses": {"allow": ["apache-2.0"]}, "full_disclosure": False}
    add(
        "rules", {"rules": rules}, accept(key_names=[], trusted_roots=[]), "rules on (true), configured and off (false)"
    )
    bad = reject(2, "policy", "InputError", "invalid policy")
    for vid, doc, description in [
        ("unknown-key", {"trusted_root": roots}, "a misspelt top-level key"),
        ("unknown-rule", {"rules": {"required_signer": {"signers": ["a"]}}}, "a misspelt rule"),
        ("rule-unknown-field", {"rules": {"licenses": {"allow": ["mit"], "deny": ["gpl"]}}}, "a misspelt rule field"),
        ("root-digest-short", {"trusted_roots": [{"name": "r", "digest": "ab" * 31}]}, "a digest of 62 hex digits"),
        ("key-without-name", {"keys": [{"public_key": pem}]}, "a key with no name"),
        ("version-2", {"version": 2}, "an unknown policy version"),
    ]:
        add(vid, doc, bad, description)
    add("not-a-mapping", [], reject(2, "policy", "InputError", "must be a YAML mapping"), "a JSON array")
    return vectors
