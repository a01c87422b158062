"""One factory for the real signed lineages the tests verify: base (an allow-listed root) -> ft_a, ft_b (real
fine-tunes, each recorded as a finetune of base) -> a real mergekit linear merge of ft_a and ft_b (1.0 : 0.75).

signed_chain (tests/support/chain.py) and published (tests/support/publish_fixtures.py) are this lineage, built once
per session each, with what their tests add on top (a policy, a card, a dishonest twin)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from attest.identity import hash_model
from attest.signing import generate_key
from tests.support.cli import run_attest

DTYPES = {"bfloat16": "dtype: bfloat16\n", "float32": "dtype: float32\nout_dtype: bfloat16\n"}
"""How the merge computes: in bf16 as stored, or in float32 written back as bf16."""


def attest_ok(args: list[object]) -> str:
    """`attest ARGS`, which must succeed; its stdout."""
    code, out, err = run_attest(args)
    assert code == 0, f"attest {' '.join(map(str, args))} -> {code}\n{out}\n{err}"
    return out


class LineageFactory:
    """Builds the lineage (module docstring) under `root`, signed with `root/<key>.key`."""

    def __init__(self, tiny_models: dict[str, Path], root: Path, key: str, other_keys: tuple[str, ...] = ()) -> None:
        self.root = root
        for name in ("base", "ft_a", "ft_b"):
            shutil.copytree(tiny_models[name], root / name)
        for k in (key, *other_keys):
            generate_key(root / f"{k}.key")
        self.key = root / f"{key}.key"
        self.base_root = hash_model(root / "base").model_root

    def path(self, name: str) -> Path:
        return self.root / name

    def record_finetunes(self, *extra: object) -> None:
        """ft_a and ft_b recorded as finetunes of base (lr=1e-3), with `extra` record options."""
        for ft in ("ft_a", "ft_b"):
            args: list[object] = ["record", "finetune", "--parent", f"base={self.root / 'base'}", "--output"]
            attest_ok([*args, self.root / ft, "--key", self.key, "--param", "lr=1e-3", *extra])

    def merge(self, out: str, dtype: str) -> Path:
        """Run the real mergekit 0.1.5 (`mergekit-yaml`, CPU) on the recipe written to merge.yml; returns it."""
        cfg = self.root / "merge.yml"
        cfg.write_text(
            "merge_method: linear\n"
            f"models:\n  - model: {self.root / 'ft_a'}\n    parameters: {{weight: 1.0}}\n"
            f"  - model: {self.root / 'ft_b'}\n    parameters: {{weight: 0.75}}\n" + DTYPES[dtype]
        )
        mergekit = str(Path(sys.executable).with_name("mergekit-yaml"))
        subprocess.run([mergekit, str(cfg), str(self.root / out), "--no-cuda"], check=True, capture_output=True)
        return cfg

    def record_merge(self, out: str) -> None:
        parents = ["--parent", self.root / "ft_a", "--parent", self.root / "ft_b"]
        attest_ok(
            [
                "record",
                "merge",
                "--config",
                self.root / "merge.yml",
                *parents,
                "--output",
                self.root / out,
                "--key",
                self.key,
            ]
        )

    def paths(self, *names: str) -> dict[str, Path]:
        return {"root": self.root, **{n: self.root / n for n in ("base", "ft_a", "ft_b", *names)}}
