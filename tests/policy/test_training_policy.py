"""The `training_replayed` procurement rule, and the replayed segments in the HTML report and the CycloneDX BOM."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from attest.signing.keys import generate_private_key, write_key_pair
from tests.support.builders import finetune, make_tiny_model
from tests.support.cli import run_attest
from tests.support.training_helpers import run, write_data, write_policy


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("training-policy")
    key = generate_private_key()
    pub = write_key_pair(root / "prover.key", key)
    base = make_tiny_model(root / "base", seed=0)
    data = write_data(root / "data.jsonl")
    out, ckpt, _ = run(root, base, data, key)
    rule = {"segments": 2, "checkpoints_dirs": [str(ckpt)], "data": [str(data)]}
    policy = write_policy(root / "policy.yaml", pub, [base], {"training_replayed": rule})
    return {
        "root": root,
        "key": root / "prover.key",
        "pub": pub,
        "base": base,
        "data": data,
        "out": out,
        "ckpt": ckpt,
        "policy": policy,
    }


def _rule(out: str) -> dict[str, Any]:
    report = json.loads(out)
    rules = {r["rule"]: r for r in report["policy"]["rules"]}
    return dict(rules["training_replayed"])


def test_rule_passes_on_an_honest_transcript(trained: dict[str, Path]) -> None:
    code, out, err = run_attest(["verify", trained["out"], "--policy", trained["policy"], "--json"])
    assert code == 0, out + err
    rule = _rule(out)
    assert rule["passed"]
    text = "\n".join(rule["evidence"])
    assert "2 of 3 segments chosen from statement" in text and text.count(": reproduced") == 2
    assert "probability 0.333" in text


def test_rule_fails_closed_without_the_data(trained: dict[str, Path], tmp_path: Path) -> None:
    policy = write_policy(
        tmp_path / "p.yaml", trained["pub"], [trained["base"]], {"training_replayed": {"segments": 1}}
    )
    code, out, _ = run_attest(["verify", trained["out"], "--policy", policy, "--json"])
    assert code == 1
    rule = _rule(out)
    assert not rule["passed"] and any("checkpoint 0: no folder step-00000000" in e for e in rule["evidence"])
    code, out, _ = run_attest(
        [
            "verify",
            trained["out"],
            "--policy",
            policy,
            "--json",
            "--checkpoints",
            trained["ckpt"],
            "--data",
            trained["data"],
        ]
    )
    assert code == 0 and _rule(out)["passed"]


def test_rule_fails_for_training_recorded_without_transcript(trained: dict[str, Path], tmp_path: Path) -> None:
    ft = finetune(trained["base"], tmp_path / "ft", seed=3, steps=2)
    code, _, err = run_attest(
        ["record", "finetune", "--parent", trained["base"], "--output", ft, "--key", trained["key"]]
    )
    assert code == 0, err
    code, out, _ = run_attest(["verify", ft, "--policy", trained["policy"], "--json"])
    assert code == 1
    assert any("carries no training transcript" in e for e in _rule(out)["evidence"])


def test_report_and_bom_show_the_replayed_segments(trained: dict[str, Path], tmp_path: Path) -> None:
    html = tmp_path / "report.html"
    code, _, err = run_attest(["report", trained["out"], "--html", html, "--policy", trained["policy"]])
    assert code == 0, err
    page = html.read_text()
    assert "training_replayed" in page and "segments chosen from statement" in page
    code, out, err = run_attest(["bom", trained["out"], "--with-rules", "--policy", trained["policy"]])
    assert code == 0, err
    bom = json.loads(out)
    props = {p["name"]: p["value"] for p in bom["metadata"]["component"]["properties"]}
    replayed = json.loads(props["attest:training_replayed"])
    assert replayed["passed"] and any("reproduced" in e for e in replayed["evidence"])
    from tests.publish.test_publish_bom import _errors

    assert _errors(bom) == []
