"""A real signed lineage for verify tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from attest.identity import hash_model
from attest.signing import generate_key
from tests.support.cli import run_attest


def build_chain(tiny_models: dict[str, Path], root: Path) -> dict[str, Path]:
    """base (allow-listed root) -> two recorded real fine-tunes -> a recorded real mergekit linear merge."""
    for name in ("base", "ft_a", "ft_b"):
        shutil.copytree(tiny_models[name], root / name)
    cfg = root / "merge.yml"
    cfg.write_text(
        "merge_method: linear\n"
        f"models:\n  - model: {root / 'ft_a'}\n    parameters: {{weight: 1.0}}\n"
        f"  - model: {root / 'ft_b'}\n    parameters: {{weight: 0.75}}\ndtype: bfloat16\n"
    )
    subprocess.run(
        [str(Path(sys.executable).with_name("mergekit-yaml")), str(cfg), str(root / "merged")],
        check=True,
        capture_output=True,
    )
    for key in ("builder", "stranger"):
        generate_key(root / f"{key}.key")
    run = run_attest
    for ft in ("ft_a", "ft_b"):
        assert (
            run(
                [
                    "record",
                    "finetune",
                    "--parent",
                    f"base={root / 'base'}",
                    "--output",
                    root / ft,
                    "--key",
                    root / "builder.key",
                    "--param",
                    "lr=1e-3",
                ]
            )[0]
            == 0
        )
    assert (
        run(
            [
                "record",
                "merge",
                "--config",
                cfg,
                "--parent",
                root / "ft_a",
                "--parent",
                root / "ft_b",
                "--output",
                root / "merged",
                "--key",
                root / "builder.key",
            ]
        )[0]
        == 0
    )
    base_root = hash_model(root / "base").model_root
    (root / "policy.yaml").write_text(
        "version: 1\nkeys:\n  - name: builder\n    public_key: builder.key.pub\n"
        f"trusted_roots:\n  - name: tiny-base\n    digest: sha256:{base_root}\n"
    )
    return {
        "root": root,
        "merged": root / "merged",
        "policy": root / "policy.yaml",
        **{n: root / n for n in ("base", "ft_a", "ft_b")},
    }
