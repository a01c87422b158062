"""Procurement rules in `attest verify --policy`: each rule's verdict and evidence on a real signed lineage."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from attest.errors import InputError
from attest.policy.trust import load_policy
from attest.verify import VerifyOptions, build_trust, verify_model
from attest.verify.report import VerifyReport
from tests.publish_fixtures import run_attest


def _verify(folder: Path, policy: Path) -> VerifyReport:
    return verify_model(folder, build_trust(policy), VerifyOptions())


def _rules(report: VerifyReport) -> dict[str, tuple[bool, str]]:
    assert report.policy is not None
    return {r.rule: (r.passed, "\n".join(r.evidence)) for r in report.policy.rules}


def test_honest_merge_passes_every_rule(published: dict[str, Path]) -> None:
    report = _verify(published["honest"], published["policy"])
    rules = _rules(report)
    assert all(ok for ok, _ in rules.values()), rules
    assert report.verified
    assert "reproduced" in rules["replay_merges"][1]
    assert "disclosed in the lineage" in rules["full_disclosure"][1]
    assert "apache-2.0" in rules["licenses"][1]


def test_dishonest_merge_fails_with_reasons(published: dict[str, Path]) -> None:
    report = _verify(published["dishonest"], published["policy"])
    rules = _rules(report)
    assert not report.verified and report.policy is not None and not report.policy.passed
    # the signatures and the walk to the root are fine: the lie is only caught by the evidence rules
    assert not report.problems
    assert rules["required_signers"][0] and rules["attested_to_roots"][0]
    ok, evidence = rules["full_disclosure"]
    assert not ok and "undisclosed contributor" in evidence and "ft_a" in evidence and "ft_b" in evidence
    ok, evidence = rules["claims_consistent"]
    assert not ok and "pure merge" in evidence


def test_cli_prints_each_rule_and_exits_1(published: dict[str, Path]) -> None:
    code, out, _ = run_attest(["verify", published["dishonest"], "--policy", published["policy"]])
    assert code == 1
    assert "FAIL full_disclosure" in out and "PASS required_signers" in out and "NOT VERIFIED" in out


def _policy_variant(published: dict[str, Path], tmp_path: Path, old: str, new: str) -> Path:
    text = published["policy"].read_text()
    assert old in text
    shutil.copy(published["root"] / "lab.key.pub", tmp_path / "lab.key.pub")
    for n in ("base", "ft_a", "ft_b"):
        (tmp_path / n).symlink_to(published[n])
    p = tmp_path / "policy.yaml"
    p.write_text(text.replace(old, new))
    return p


def test_license_and_unknown_signer_fail_closed(published: dict[str, Path], tmp_path: Path) -> None:
    policy = _policy_variant(published, tmp_path, "signers: [lab]", "signers: [lab, auditor]")
    policy.write_text(policy.read_text().replace("allow: [apache-2.0, mit]", "allow: [mit]"))
    policy.write_text(policy.read_text().replace("  full_disclosure:\n    candidates: [base, ft_a, ft_b]\n", ""))
    rules = _rules(_verify(published["honest"], policy))
    assert not rules["required_signers"][0] and "'auditor' is not defined" in rules["required_signers"][1]
    assert not rules["licenses"][0] and "not on the allow-list" in rules["licenses"][1]


def test_replay_fails_closed(published: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A merge whose parents cannot be found, or no replay engine: the rule fails and says why, never passes."""
    import sys

    import attest.policy.procurement as proc

    policy = _policy_variant(published, tmp_path, "  full_disclosure:\n    candidates: [base, ft_a, ft_b]\n", "")
    real = proc._Context.root_of

    def only_the_model(ctx, folder):  # type: ignore[no-untyped-def]
        return real(ctx, folder) if folder.resolve() == ctx.lineage.folder.resolve() else None

    monkeypatch.setattr(proc._Context, "root_of", only_the_model)
    ok, evidence = _rules(_verify(published["honest"], policy))["replay_merges"]
    assert not ok and "replay unavailable" in evidence and "fails closed" in evidence
    monkeypatch.setattr(proc._Context, "root_of", real)
    monkeypatch.setitem(sys.modules, "attest.replay", None)
    ok, evidence = _rules(_verify(published["honest"], policy))["replay_merges"]
    assert not ok and "replay unavailable" in evidence


def test_missing_detect_candidate_fails_closed(published: dict[str, Path], tmp_path: Path) -> None:
    policy = _policy_variant(published, tmp_path, "candidates: [base, ft_a, ft_b]", "candidates: [base, nowhere]")
    ok, evidence = _rules(_verify(published["honest"], policy))["full_disclosure"]
    assert not ok and "fails closed" in evidence


def test_claim_of_unchanged_training_fails(published: dict[str, Path], tmp_path: Path) -> None:
    """`--allow-unchanged` lets a builder sign a fine-tune that changed nothing; the claims rule catches it."""
    copy = tmp_path / "same"
    shutil.copytree(published["base"], copy)
    code, _, err = run_attest(
        [
            "record",
            "finetune",
            "--parent",
            f"base={published['base']}",
            "--output",
            copy,
            "--key",
            published["root"] / "lab.key",
            "--allow-unchanged",
        ]
    )
    assert code == 0, err
    policy = _policy_variant(published, tmp_path, "  full_disclosure:\n    candidates: [base, ft_a, ft_b]\n", "")
    ok, evidence = _rules(_verify(copy, policy))["claims_consistent"]
    assert not ok and "left the weights unchanged" in evidence


def test_rules_section_is_strict(tmp_path: Path) -> None:
    p = tmp_path / "p.yaml"
    p.write_text("version: 1\nrules:\n  licences: {allow: [mit]}\n")
    with pytest.raises(InputError, match="licences"):
        load_policy(p)
    p.write_text("version: 1\nrules:\n  attested_to_roots: true\n  replay_merges: false\n")
    policy, _ = load_policy(p)
    assert policy.rules is not None and policy.rules.attested_to_roots is not None
    assert policy.rules.replay_merges is None
    p.write_text("version: 1\nkeys: []\n")
    assert load_policy(p)[0].rules is None  # a plain trust policy is unchanged


def test_example_policies_are_valid() -> None:
    """Every policy in examples/policies/ parses under the strict model and has rules."""
    folder = Path(__file__).resolve().parent.parent / "examples" / "policies"
    files = sorted(folder.glob("*.yaml"))
    assert any(f.name == "government.yaml" for f in files)
    for f in files:
        policy, _ = load_policy(f)
        assert policy.rules is not None, f
