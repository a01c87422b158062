"""attest: verifiable identity and signed, replayable lineage for model weights."""

from attest.identity import IdentityManifest, check_proof, diff_manifests, hash_model, make_proof

__version__ = "0.1.0"

__all__ = ["IdentityManifest", "__version__", "check_proof", "diff_manifests", "hash_model", "make_proof"]
