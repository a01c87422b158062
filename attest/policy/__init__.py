"""Trust and procurement policies: who is trusted to sign, which root digests end a lineage walk, and the rules a
verified lineage must pass (run on top of attest.verify by verify_with_policy)."""

from attest.policy.pipeline import verify_model, verify_with_policy
from attest.trust.policy_file import SigstoreIdentity, TrustedKey, TrustedRoot, TrustPolicy, load_policy

__all__ = [
    "SigstoreIdentity",
    "TrustPolicy",
    "TrustedKey",
    "TrustedRoot",
    "load_policy",
    "verify_model",
    "verify_with_policy",
]
