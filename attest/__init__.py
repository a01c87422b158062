"""attest: verifiable identity and signed, replayable lineage for model weights.

The library names below load on first use (PEP 562), so `import attest` and `attest --help` stay cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["IdentityManifest", "__version__", "check_proof", "diff_manifests", "hash_model", "make_proof"]

if TYPE_CHECKING:
    from attest.identity import IdentityManifest, check_proof, diff_manifests, hash_model, make_proof


def __getattr__(name: str) -> Any:
    if name in __all__:
        import attest.identity  # lazy (PEP 562): `import attest` stays cheap

        return getattr(attest.identity, name)
    raise AttributeError(f"module 'attest' has no attribute {name!r}")
