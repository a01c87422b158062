"""Trust and procurement policies: who is trusted to sign, which root digests end a lineage walk."""

from attest.policy.trust import SigstoreIdentity, TrustedKey, TrustedRoot, TrustPolicy, load_policy

__all__ = ["SigstoreIdentity", "TrustPolicy", "TrustedKey", "TrustedRoot", "load_policy"]
