"""Procurement rules in `attest verify --policy`: each rule's verdict and evidence on a real signed lineage."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from attest.errors import InputError
from attest.identity import hash_model
from attest.policy import verify_model
from attest.trust.policy_file import load_policy
from attest.verify import VerifyOptions, build_trust
from attest.verify.report import VerifyReport
from tests.support.cli import run_attest


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

    from attest.lineage.locator import Locator

    policy = _policy_variant(published, tmp_path, "  full_disclosure:\n    candidates: [base, ft_a, ft_b]\n", "")
    real = Locator.root_of
    model = published["honest"].resolve()

    def only_the_model(locator, folder):  # type: ignore[no-untyped-def]
        return real(locator, folder) if folder.resolve() == model else None

    monkeypatch.setattr(Locator, "root_of", only_the_model)
    ok, evidence = _rules(_verify(published["honest"], policy))["replay_merges"]
    assert not ok and "replay unavailable" in evidence and "fails closed" in evidence
    monkeypatch.setattr(Locator, "root_of", real)
    monkeypatch.setitem(sys.modules, "attest.replay", None)
    monkeypatch.setitem(sys.modules, "attest.replay.step", None)  # the replay wing, however far it was loaded
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
    folder = Path(__file__).resolve().parents[2] / "examples" / "policies"
    files = sorted(folder.glob("*.yaml"))
    assert any(f.name == "government.yaml" for f in files)
    for f in files:
        policy, _ = load_policy(f)
        assert policy.rules is not None, f


LICENSE_POLICY = """\
version: 1
keys:
  - name: lab
    public_key: lab.key.pub
rules:
  licenses:
    allow: [apache-2.0, mit]
"""


@pytest.mark.parametrize(
    ("readme", "config_license"),
    [
        ("---\nlicense: other\nlicense_name: mit\n---\n", None),  # a free-text name is not an SPDX id
        ("---\nlicense: [" + "mit, " * 16 + "gpl-3.0]\n---\n", None),  # the 17th must not go unchecked
        ("---\nlicense: [mit, 3]\n---\n", None),  # a non-string value must not be dropped
        ("---\nlicense: [mit, {gpl: 3}]\n---\n", None),
        ("---\nlicense: mit OR gpl-3.0\n---\n", None),  # an expression, not a plain id
        ("---\nlicense: null\n---\n", "mit"),
        ("\n---\nlicense: gpl-3.0\n---\n", "mit"),  # the Hub reads gpl-3.0 here, not only config.json's mit
        ("---\nlicense: gpl-3.0\nlicense: mit\n---\n", None),  # ambiguous card: refused, so the rule fails
        ("---\nlicense: mit\n---\n", ["mit", 7]),
    ],
)
def test_every_declared_license_is_checked_and_anything_else_fails(
    published: dict[str, Path], tmp_path: Path, readme: str, config_license: object
) -> None:
    import json

    folder = tmp_path / "model"
    shutil.copytree(published["honest"], folder)
    (folder / "README.md").write_text(readme)
    if config_license is not None:
        cfg = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**cfg, "license": config_license}))
    shutil.copy(published["root"] / "lab.key.pub", tmp_path / "lab.key.pub")
    policy = tmp_path / "policy.yaml"
    policy.write_text(LICENSE_POLICY)
    ok, evidence = _rules(_verify(folder, policy))["licenses"]
    assert not ok, evidence


def test_plain_allowed_licenses_pass(published: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "model"
    shutil.copytree(published["honest"], folder)
    (folder / "README.md").write_text("\n---\nlicense: [MIT, apache-2.0]\n---\n")
    shutil.copy(published["root"] / "lab.key.pub", tmp_path / "lab.key.pub")
    policy = tmp_path / "policy.yaml"
    policy.write_text(LICENSE_POLICY)
    ok, evidence = _rules(_verify(folder, policy))["licenses"]
    assert ok and "MIT (README.md front matter license) is allowed" in evidence, evidence


def test_a_policy_key_given_twice_is_refused(tmp_path: Path) -> None:
    """`full_disclosure: true` then `full_disclosure: false`: plain YAML keeps the last and turns the rule off."""
    p = tmp_path / "p.yaml"
    for text in (
        "version: 1\nrules:\n  full_disclosure: true\n  attested_to_roots: true\n  full_disclosure: false\n",
        "version: 1\nkeys:\n  - name: a\n    public_key: a.pub\n    name: b\n",
        "version: 1\nversion: 1\n",
        "version: 1\nrules:\n  licenses: {allow: [mit], allow: [gpl-3.0]}\n",
        "version: 1\nrules: &r {attested_to_roots: true}\nname: x\n<<: {name: y}\n",
    ):
        p.write_text(text)
        with pytest.raises(InputError, match="given twice") as info:
            load_policy(p)
        assert str(p) in str(info.value) and "\n" not in str(info.value)
    code, _, err = run_attest(["verify", tmp_path, "--policy", p])
    assert code == 2 and "given twice" in err and len(err.strip().splitlines()) == 1


def test_a_candidate_named_base_is_told_apart_from_the_base_by_its_root(
    published: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The merge of ft_a and ft_b, signed as a fine-tune of ft_b only: ft_a is an undisclosed contributor, even when
    its folder is called `base` next to a policy given by a relative path (detect's label for the base)."""
    model = tmp_path / "model"
    shutil.copytree(published["honest"], model, ignore=shutil.ignore_patterns(".attest", "README.md"))
    code, _, err = run_attest(
        ["record", "finetune", "--parent", f"base={published['ft_b']}", "--output", model, "--key",
         published["root"] / "lab.key"]
    )  # fmt: skip
    assert code == 0, err
    policy_dir = tmp_path / "policy"
    policy_dir.mkdir()
    shutil.copy(published["root"] / "lab.key.pub", policy_dir / "lab.key.pub")
    (policy_dir / "base").symlink_to(published["ft_a"])
    (policy_dir / "ft_b").symlink_to(published["ft_b"])
    (policy_dir / "official").symlink_to(published["base"])
    (policy_dir / "policy.yaml").write_text(
        "version: 1\nkeys:\n  - name: lab\n    public_key: lab.key.pub\n"
        f"trusted_roots:\n  - name: tiny-base\n    digest: {hash_model(published['base']).model_root}\n"
        "rules:\n  full_disclosure:\n    base: official\n    candidates: [base, ft_b]\n"
    )
    monkeypatch.chdir(policy_dir)
    ok, evidence = _rules(_verify(model, Path("policy.yaml")))["full_disclosure"]
    assert not ok and "undisclosed contributor: base" in evidence, evidence
    assert "unattested" not in evidence  # the only reason it fails is the contributor the lineage hides
    assert "ft_b: coefficient" in evidence and "disclosed in the lineage" in evidence


def test_example_policies_match_the_schema_and_the_loader() -> None:
    """Every shipped policy validates against schemas/trust-policy.schema.json and loads; the shorthand the loader
    refuses (`licenses: true`, no allow-list) the schema refuses too."""
    import json

    import jsonschema
    import yaml

    repo = Path(__file__).resolve().parents[2]
    schema = json.loads((repo / "schemas" / "trust-policy.schema.json").read_text())
    validator = jsonschema.Draft202012Validator(schema)
    files = sorted((repo / "examples" / "policies").glob("*.yaml"))
    assert len(files) >= 3
    for f in files:
        validator.validate(yaml.safe_load(f.read_text()))
        load_policy(f)
    for doc, loads in (
        ({"version": 1, "rules": {"attested_to_roots": True, "replay_merges": False}}, True),
        ({"version": 1, "rules": {"licenses": True}}, False),
        ({"version": 1, "rules": {"required_signers": True}}, False),
        ({"version": 1, "rules": {"licenses": False, "claims_consistent": {"card": "yes"}}}, False),
        ({"version": True}, False),
        ({"version": 1, "trusted_roots": [{"name": "x", "digest": "sha256:" + "A" * 64}]}, True),
        ({"version": 1, "trusted_roots": [{"name": "x", "digest": "abc"}]}, False),
        ({"version": 1, "rules": {"licenses": {"allow": ["mit OR gpl-3.0"]}}}, False),
    ):
        assert validator.is_valid(doc) == loads, doc
        from attest.trust.policy_file import TrustPolicy

        try:
            TrustPolicy.model_validate(doc)
        except ValueError:
            assert not loads, doc
        else:
            assert loads, doc


def test_unrelated_model_signed_as_a_fine_tune_of_base_fails(published: dict[str, Path], tmp_path: Path) -> None:
    """Issue #13: an independent initialisation (correlation ~0.001 with base) signed as "a fine-tune of base" used to
    pass claims_consistent; a claimed fine-tune must descend from its parent (SPEC.md §6.7)."""
    from tests.support.builders import make_tiny_model

    stranger = make_tiny_model(tmp_path / "stranger", seed=4242)
    code, _, err = run_attest(
        ["record", "finetune", "--parent", f"base={published['base']}", "--output", stranger,
         "--key", published["root"] / "lab.key"]
    )  # fmt: skip
    assert code == 0, err
    ok, evidence = _rules(_verify(stranger, published["policy"]))["claims_consistent"]
    assert not ok and "do not descend from base" in evidence, evidence


def test_real_fine_tune_of_base_descends(published: dict[str, Path]) -> None:
    """ft_a is a real fine-tune of base: the descent test passes (and names base as the parent it checked)."""
    _, evidence = _rules(_verify(published["ft_a"], published["policy"]))["claims_consistent"]
    assert "descend from base" in evidence and "do not descend" not in evidence, evidence


def _signed_finetune_of(published: dict[str, Path], model: Path, parent: Path) -> None:
    code, _, err = run_attest(
        ["record", "finetune", "--parent", f"base={parent}", "--output", model, "--key", published["root"] / "lab.key"]
    )
    assert code == 0, err


def test_even_merge_signed_as_a_fine_tune_of_one_parent_fails_without_a_base(
    published: dict[str, Path], tmp_path: Path
) -> None:
    """Regression (issue #13): a 1:1 merge of ft_a and ft_b, trained one SFT step and signed as a fine-tune of ft_a,
    passed full_disclosure with candidates [ft_a, ft_b] and no base: detect read derived_not_merge from ft_a, which
    the lineage names. The midpoint test finds the merge, and ft_b is an undisclosed contributor."""
    pytest.importorskip("mergekit", reason="mergekit 0.1.5 is a test dependency")
    from tests.support.builders import finetune
    from tests.support.mergekit_peer import run_mergekit

    cfg = (f"merge_method: linear\nmodels:\n  - model: {published['ft_a']}\n    parameters: {{weight: 1.0}}\n"
           f"  - model: {published['ft_b']}\n    parameters: {{weight: 1.0}}\ndtype: bfloat16\n")  # fmt: skip
    merged = run_mergekit(cfg, tmp_path / "even")
    model = finetune(merged, tmp_path / "model", seed=11, steps=1, lr=1e-5)
    _signed_finetune_of(published, model, published["ft_a"])
    (tmp_path / "p").mkdir()
    policy = _policy_variant(published, tmp_path / "p", "candidates: [base, ft_a, ft_b]", "candidates: [ft_a, ft_b]")
    ok, evidence = _rules(_verify(model, policy))["full_disclosure"]
    assert not ok and "undisclosed contributor: ft_b" in evidence and "near-even merge" in evidence, evidence


def test_undetermined_detect_fails_full_disclosure_closed(published: dict[str, Path], tmp_path: Path) -> None:
    """A fine-tune of base fitted against [ft_a, ft_b] without their base reads `undetermined` (a trained even merge
    would sit where it sits); a disclosure policy cannot pass that, and says to give the base."""
    from tests.support.builders import finetune

    model = finetune(published["base"], tmp_path / "sibling", seed=12, steps=5, lr=1e-3)
    _signed_finetune_of(published, model, published["base"])
    (tmp_path / "p").mkdir()
    policy = _policy_variant(published, tmp_path / "p", "candidates: [base, ft_a, ft_b]", "candidates: [ft_a, ft_b]")
    ok, evidence = _rules(_verify(model, policy))["full_disclosure"]
    assert not ok and "verdict undetermined" in evidence and "give full_disclosure the candidates' base" in evidence
    with_base = policy.read_text().replace("candidates: [ft_a, ft_b]", "base: base\n    candidates: [ft_a, ft_b]")
    policy.write_text(with_base)
    ok, evidence = _rules(_verify(model, policy))["full_disclosure"]
    assert ok, evidence  # with the base: derived from it, which the lineage names


def test_undetermined_with_every_participant_disclosed_passes(published: dict[str, Path], tmp_path: Path) -> None:
    """Review finding: `undetermined` failed full_disclosure even when the lineage names every candidate that takes
    part, where both readings (their merge, or a fine-tune of their base) disclose everything."""
    from tests.support.builders import finetune

    model = finetune(published["base"], tmp_path / "sibling", seed=12, steps=5, lr=1e-3)
    code, _, err = run_attest(
        ["record", "finetune", "--parent", f"parent={published['ft_a']}", "--parent", f"parent={published['ft_b']}",
         "--output", model, "--key", published["root"] / "lab.key"]
    )  # fmt: skip
    assert code == 0, err
    (tmp_path / "p").mkdir()
    policy = _policy_variant(published, tmp_path / "p", "candidates: [base, ft_a, ft_b]", "candidates: [ft_a, ft_b]")
    ok, evidence = _rules(_verify(model, policy))["full_disclosure"]
    assert "verdict undetermined" in evidence and "every candidate that takes part is in the lineage" in evidence
    assert ok, evidence
