"""A real signed lineage for the policy, card, report and BOM tests, built once per session.

base (allow-listed root) -> ft_a, ft_b (real fine-tunes, recorded and signed by `lab`) -> honest: a real mergekit
linear merge of ft_a and ft_b, carded with `attest card --step merge` and then recorded by `lab`. dishonest: the
same merge bytes, published with a card saying "post-trained" and a signed `finetune` claim from base only.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.support.lineage import LineageFactory, attest_ok

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
    lineage = LineageFactory(tiny_models, root, "lab")
    (root / "sentences.txt").write_text("synthetic token streams, seed 1\n")
    lineage.record_finetunes("--dataset", root / "sentences.txt")
    cfg = lineage.merge("honest", "float32")
    shutil.copytree(root / "honest", root / "dishonest")
    (root / "policy.yaml").write_text(POLICY.format(base_root=lineage.base_root))
    readme = (root / "honest" / "README.md").read_text()
    (root / "honest" / "README.md").write_text(readme.replace("---\n", "---\nlicense: apache-2.0\n", 1))
    parents = ["--parent", root / "ft_a", "--parent", root / "ft_b"]
    attest_ok(["card", root / "honest", "--step", "merge", "--config", cfg, *parents, "--policy", root / "policy.yaml"])
    lineage.record_merge("honest")
    (root / "dishonest" / "README.md").write_text(
        "---\nlicense: apache-2.0\nbase_model: base\nbase_model_relation: finetune\n---\n\n# Sovereign-1\n\n"
        "Sovereign-1 is our model, post-trained from base on our in-house data.\n"
    )
    attest_ok(
        [
            "record",
            "finetune",
            "--parent",
            f"base={root / 'base'}",
            "--output",
            root / "dishonest",
            "--key",
            lineage.key,
        ]
    )
    return {**lineage.paths("honest", "dishonest"), "policy": root / "policy.yaml", "config": cfg}
