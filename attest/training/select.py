"""Which segments a verifier replays: chosen from the signed statement's digest (Fiat-Shamir), so the prover fixes
the transcript before it can know which segments will be checked, and anyone can recompute the choice.

A prover can still grind: re-sign variants of a forged transcript until the choice misses the forged segments.
Each try costs a signature, so against a determined forger the escape probability below holds per try; a verifier
that adds its own nonce (`--challenge`) after the statement is published removes that option.
"""

from __future__ import annotations

import hashlib
from math import comb

CHALLENGE_TAG = b"attest-training-challenge/v1\x00"


def challenge_seed(payload_digest: str, nonce: bytes = b"") -> bytes:
    """SHA-256(tag || statement payload digest (32 bytes) || verifier nonce)."""
    return hashlib.sha256(CHALLENGE_TAG + bytes.fromhex(payload_digest) + nonce).digest()


def select_segments(seed: bytes, total: int, count: int) -> list[int]:
    """The `count` segments (0-based) with the smallest SHA-256(seed || index as 8-byte big-endian), ascending."""
    ranked = sorted(range(total), key=lambda j: (hashlib.sha256(seed + j.to_bytes(8, "big")).digest(), j))
    return sorted(ranked[: max(0, min(count, total))])


def escape_probability(total: int, fabricated: int, checked: int) -> float:
    """P(none of `checked` segments drawn without replacement out of `total` is one of `fabricated`)."""
    if not 0 <= fabricated <= total:
        raise ValueError("fabricated segments must be between 0 and the total")
    checked = min(checked, total)
    return comb(total - fabricated, checked) / comb(total, checked)
