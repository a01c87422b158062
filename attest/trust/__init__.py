"""One trust model: the policy file's schema (policy_file) and the trust set resolved from it and the command line
(trust_set), below verify so that verification, model-signing checks and the policy rules read the same value."""

from attest.trust.policy_file import SigstoreIdentity, TrustedKey, TrustedRoot, TrustPolicy, load_policy
from attest.trust.trust_set import NamedIdentity, NamedKey, TrustSet, build_trust

__all__ = [
    "NamedIdentity",
    "NamedKey",
    "SigstoreIdentity",
    "TrustPolicy",
    "TrustSet",
    "TrustedKey",
    "TrustedRoot",
    "build_trust",
    "load_policy",
]
