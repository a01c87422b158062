"""An independent verifier written from SPEC.md and schemas/ alone (hashlib, json, struct, base64, cryptography,
rfc8785, blake3, jsonschema): it never imports attest. tests/conformance/test_reference_conformance.py runs it
against every conformance vector, so two implementations agree on every case."""

from __future__ import annotations

from pathlib import Path

SCHEMAS = Path(__file__).resolve().parents[3] / "schemas"


class Refusal(Exception):
    """A refusal: `reason` is the stable id of the rule (conformance/vectors.json), `exit_code` as SPEC.md says."""

    def __init__(self, reason: str, exit_code: int, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.exit_code = exit_code


def bad_input(reason: str, detail: str = "") -> Refusal:
    return Refusal(reason, 2, detail)


def rejected(reason: str, detail: str = "") -> Refusal:
    return Refusal(reason, 1, detail)
