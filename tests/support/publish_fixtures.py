"""A real signed lineage for the policy, card, report and BOM tests, built once per session.

base (allow-listed root) -> ft_a, ft_b (real fine-tunes, recorded and signed by `lab`) -> honest: a real mergekit
linear merge of ft_a and ft_b, carded with `attest card --step merge` and then recorded by `lab`. dishonest: the
same merge bytes, published with a card saying "post-trained" and a signed `finetune` claim from base only.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from attest.identity import hash_model
from attest.signing import generate_key
from tests.support.cli import run_attest


def _ok(args: list[object]) -> str:
    code, out, err = run_attest(args)
    assert code == 0, f"attest {' '.join(map(str, args))} -> {code}\n{out}\n{err}"
    return out


POLICY = """\
version: 1
name: test procurement
keys:
  - name: lab
    public_key: lab.key.pub
trusted_roots:
  - name: tiny-base
    digest: sha256:{base_root}
rules:
  required_signers:
    signers: [lab]
    scope: every_step
  attested_to_roots: true
  full_disclosure:
    candidates: [base, ft_a, ft_b]
  replay_merges: true
  licenses:
    allow: [apache-2.0, mit]
  claims_consistent: true
"""


@pytest.fixture(scope="session")
def published(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("publish")
    for name in ("base", "ft_a", "ft_b"):
        shutil.copytree(tiny_models[name], root / name)
    generate_key(root / "lab.key")
    (root / "sentences.txt").write_text("synthetic token streams, seed 1\n")
    for ft in ("ft_a", "ft_b"):
        _ok(
            [
                "record",
                "finetune",
                "--parent",
                f"base={root / 'base'}",
                "--output",
                root / ft,
                "--key",
                root / "lab.key",
                "--param",
                "lr=1e-3",
                "--dataset",
                root / "sentences.txt",
            ]
        )
    cfg = root / "merge.yml"
    cfg.write_text(
        "merge_method: linear\n"
        f"models:\n  - model: {root / 'ft_a'}\n    parameters: {{weight: 1.0}}\n"
        f"  - model: {root / 'ft_b'}\n    parameters: {{weight: 0.75}}\ndtype: float32\nout_dtype: bfloat16\n"
    )
    subprocess.run(
        [str(Path(sys.executable).with_name("mergekit-yaml")), str(cfg), str(root / "honest"), "--no-cuda"],
        check=True,
        capture_output=True,
    )
    shutil.copytree(root / "honest", root / "dishonest")
    (root / "policy.yaml").write_text(POLICY.format(base_root=hash_model(root / "base").model_root))
    readme = (root / "honest" / "README.md").read_text()
    (root / "honest" / "README.md").write_text(readme.replace("---\n", "---\nlicense: apache-2.0\n", 1))
    _ok(
        [
            "card",
            root / "honest",
            "--step",
            "merge",
            "--config",
            cfg,
            "--parent",
            root / "ft_a",
            "--parent",
            root / "ft_b",
            "--policy",
            root / "policy.yaml",
        ]
    )
    _ok(
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
            root / "honest",
            "--key",
            root / "lab.key",
        ]
    )
    (root / "dishonest" / "README.md").write_text(
        "---\nlicense: apache-2.0\nbase_model: base\nbase_model_relation: finetune\n---\n\n# Sovereign-1\n\n"
        "Sovereign-1 is our model, post-trained from base on our in-house data.\n"
    )
    _ok(
        [
            "record",
            "finetune",
            "--parent",
            f"base={root / 'base'}",
            "--output",
            root / "dishonest",
            "--key",
            root / "lab.key",
        ]
    )
    return {
        "root": root,
        "policy": root / "policy.yaml",
        "config": cfg,
        **{n: root / n for n in ("base", "ft_a", "ft_b", "honest", "dishonest")},
    }
