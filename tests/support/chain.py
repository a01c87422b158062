"""The signed lineage of the verify tests (the `signed_chain` fixture), built by tests.support.lineage."""

from __future__ import annotations

from pathlib import Path

from tests.support.lineage import LineageFactory


def build_chain(tiny_models: dict[str, Path], root: Path) -> dict[str, Path]:
    """base (allow-listed root) -> two recorded real fine-tunes -> a recorded real mergekit linear merge (bf16),
    signed by builder.key; stranger.key is a second, untrusted key."""
    lineage = LineageFactory(tiny_models, root, "builder", ("stranger",))
    lineage.record_finetunes()
    lineage.merge("merged", "bfloat16")
    lineage.record_merge("merged")
    (root / "policy.yaml").write_text(
        "version: 1\nkeys:\n  - name: builder\n    public_key: builder.key.pub\n"
        f"trusted_roots:\n  - name: tiny-base\n    digest: sha256:{lineage.base_root}\n"
    )
    return {**lineage.paths("merged"), "policy": root / "policy.yaml"}
