"""Verification: re-derive every hash, check signatures against trust, walk the lineage to trusted roots."""

from attest.trust.trust_set import TrustSet, build_trust
from attest.verify.engine import VerifyOptions, verify_lineage
from attest.verify.lineage import StepRecord, VerifiedLineage, head_step, nodes
from attest.verify.report import LineageNode, PolicyResult, Problem, RuleResult, VerifyReport

__all__ = [
    "LineageNode",
    "PolicyResult",
    "Problem",
    "RuleResult",
    "StepRecord",
    "TrustSet",
    "VerifiedLineage",
    "VerifyOptions",
    "VerifyReport",
    "build_trust",
    "head_step",
    "nodes",
    "verify_lineage",
]
