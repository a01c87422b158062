"""`attest card`: the card is generated before signing, covered by the model root, and checked against statements."""

from __future__ import annotations

import shutil
from pathlib import Path

from attest.publish.card import ParentView, StepView, check_card, parse_card, read_card
from attest.verify import VerifyOptions, build_trust, verify_model
from tests.publish_fixtures import run_attest

MERGE = StepView(
    name="m",
    kind="merge",
    digest="0" * 64,
    parents=[ParentView("ft_a", "a" * 64, "parent"), ParentView("ft_b", "b" * 64, "parent")],
)


def test_card_then_record_verifies_and_describes_the_lineage(published: dict[str, Path]) -> None:
    card = read_card(published["honest"])
    assert card is not None
    assert card.front["base_model"] == ["ft_a", "ft_b"]
    assert card.front["base_model_relation"] == "merge"
    assert "attest" in card.front["tags"] and card.front["license"] == "apache-2.0"
    for text in (
        "ft_a (parent, sha256:",
        "[finetune, signed by lab]",
        "merge_method: linear",
        "lr=0.001",
        "attest verify ./honest --policy policy.yaml",
    ):
        assert text in card.body
    assert verify_model(published["honest"], build_trust(published["policy"]), VerifyOptions()).verified
    code, out, _ = run_attest(["card", published["honest"], "--check", "--policy", published["policy"]])
    assert code == 0 and "agrees" in out
    # regenerating over the recorded folder gives the same bytes: nothing to re-sign
    code, out, _ = run_attest(["card", published["honest"], "--policy", published["policy"]])
    assert code == 0 and "up to date" in out


def test_editing_the_card_after_signing_fails_verification_and_check(
    published: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "edited"
    shutil.copytree(published["honest"], folder)
    readme = folder / "README.md"
    text = readme.read_text().replace("base_model_relation: merge", "base_model_relation: finetune")
    text = text.replace("# honest\n", "# honest\n\nWe post-trained this model on our own curated data.\n")
    readme.write_text(text)
    report = verify_model(folder, build_trust(published["policy"]), VerifyOptions())
    assert not report.verified
    assert any(p.code == "content_mismatch" and "README.md" in p.message for p in report.problems)
    code, out, _ = run_attest(["card", folder, "--check", "--policy", published["policy"]])
    assert code == 1
    assert "changed after signing" in out
    assert "base_model_relation is 'finetune'" in out and "'post-trained'" in out
    # and `attest card` refuses to rewrite a recorded folder's card (it would break the signature)
    before = (published["honest"] / "README.md").read_bytes()
    code, _, err = run_attest(["card", published["honest"], "--key", published["root"] / "lab.key.pub"])
    assert code == 2 and "already recorded" in err
    assert (published["honest"] / "README.md").read_bytes() == before


def test_check_finds_each_kind_of_contradiction() -> None:
    card = parse_card(
        "---\nbase_model: ft_a\nbase_model_relation: finetune\ntags: [merge]\n---\n\n"
        "A homegrown model. We fine-tuned it for weeks.\n\nIt is a merge of two fine-tuned models.\n"
    )
    findings = "\n".join(check_card(card, MERGE))
    assert "does not name ft_b" in findings
    assert "base_model_relation is 'finetune'" in findings
    assert "'homegrown'" in findings and "'fine-tuned'" in findings
    assert "merge of two fine-tuned" not in findings  # a sentence about the merge itself is not a training claim
    ok = parse_card("---\nbase_model: [org/ft_a, ft_b@main]\nbase_model_relation: merge\n---\nA merge.\n")
    assert check_card(ok, MERGE) == []
    extra = parse_card("---\nbase_model: [ft_a, ft_b, other]\nbase_model_relation: merge\n---\n")
    assert any("other, which is not a parent" in f for f in check_card(extra, MERGE))
    assert check_card(None, MERGE) == ["no model card (README.md) in the folder"]
    assert check_card(card, None)  # a card claiming parents for a model no statement names


def test_card_needs_a_step_before_recording(published: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "fresh"
    shutil.copytree(published["ft_a"], folder, ignore=shutil.ignore_patterns(".attest"))
    code, _, err = run_attest(["card", folder])
    assert code == 2 and "--step" in err
    data = tmp_path / "data.txt"
    data.write_text("some sentences\n")
    code, out, err = run_attest(
        [
            "card",
            folder,
            "--step",
            "finetune",
            "--parent",
            f"base={published['base']}",
            "--dataset",
            data,
            "--param",
            "lr=1e-3",
            "--key",
            published["root"] / "lab.key.pub",
        ]
    )
    assert code == 0, err
    card = read_card(folder)
    assert card is not None and card.front["base_model"] == "base" and card.front["base_model_relation"] == "finetune"
    assert "data.txt" in card.body and "--key lab.key.pub" in card.body
    code, _, err = run_attest(
        [
            "record",
            "finetune",
            "--parent",
            f"base={published['base']}",
            "--dataset",
            data,
            "--param",
            "lr=1e-3",
            "--output",
            folder,
            "--key",
            published["root"] / "lab.key",
        ]
    )
    assert code == 0, err
    code, out, _ = run_attest(["card", folder, "--check", "--key", published["root"] / "lab.key.pub"])
    assert code == 0, out


def test_bad_front_matter_is_one_line_exit_2(tmp_path: Path, published: dict[str, Path]) -> None:
    folder = tmp_path / "bad"
    shutil.copytree(published["honest"], folder)
    (folder / "README.md").write_text("---\nbase_model: [unclosed\n---\n")
    code, _, err = run_attest(["card", folder, "--check"])
    assert code == 2 and "README.md" in err and "front matter" in err and "Traceback" not in err
