"""Verification: re-derive every hash, check signatures against trust, walk the lineage to trusted roots."""

from attest.verify.engine import VerifyOptions, verify_model
from attest.verify.report import LineageNode, Problem, VerifyReport
from attest.verify.trust import TrustSet, build_trust

__all__ = ["LineageNode", "Problem", "TrustSet", "VerifyOptions", "VerifyReport", "build_trust", "verify_model"]
