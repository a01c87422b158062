"""`attest card`: the card is generated before signing, covered by the model root, and checked against statements."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from attest.errors import InputError
from attest.policy import verify_model
from attest.policy.model_card import ParentView, StepView, check_card, parse_card, read_card
from attest.verify import VerifyOptions, build_trust
from tests.support.cli import run_attest

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


def test_claims_are_checked_on_the_rendered_text() -> None:
    """Emphasis, links, entities, zero-width and compatibility characters render as the words they hide."""
    front = "---\nbase_model: [ft_a, ft_b]\nbase_model_relation: merge\n---\n\n"
    for body in (
        "This model was **post**-**trained** on 2T tokens.",
        "This model was <b>post</b>-<i>trained</i> on 2T tokens.",
        "This model was [post](https://example.com)-trained on 2T tokens.",
        "This model was post&#8209;trained on 2T tokens.",
        "This model was post&amp;#45;trained on 2T tokens.",
        "This model was post\u200b-\u200btrained on 2T tokens.",
        "This model was ｐｏｓｔ－ｔｒａｉｎｅｄ on 2T tokens.",
        "This model was post<!-- -->-trained on 2T tokens.",
        "This model was fine\u00adtuned on 2T tokens.",
        "This model was fi*ne-tu*ned on 2T tokens.",
    ):
        findings = check_card(parse_card(front + body + "\n"), MERGE)
        assert any("plain merge" in f for f in findings), body
    assert check_card(parse_card(front + "A **merge** of ft_a and ft_b.\n"), MERGE) == []


HOSTILE_CARDS = [
    "\n---\nlicense: gpl-3.0\n---\nbody\n",  # front matter after a blank line (the Hub reads it)
    "  \n\n---\nlicense: gpl-3.0\n---\n",
    "\ufeff---\nlicense: gpl-3.0\n---\nbody\n",  # a BOM
    "---\r\nlicense: gpl-3.0\r\n---\r\nbody\r\n",
    "---\rlicense: gpl-3.0\r---\rbody\r",
    "---  \nlicense: gpl-3.0\n---\n",  # trailing spaces on the opening line: not front matter for the Hub
    "---\nlicense: gpl-3.0\n---   \nbody\n",
    "---\nlicense: gpl-3.0\n--- not a fence\nmore: x\n---\n",
    "---\nlicense: gpl-3.0\n",  # never closed
    "---\n---\nbody\n",
    "---\n\n---\n",
    "text first\n---\nlicense: gpl-3.0\n---\n",
    "---\nlicense: [mit, gpl-3.0]\nlicense_name: x\n---\n\n# t\n",
    "---\nlicense: other\nlicense_name: mit\n---\n",
]


def test_card_is_read_exactly_as_huggingface_hub_reads_it(tmp_path: Path) -> None:
    """Front matter, metadata and body as huggingface_hub's ModelCard.load sees them, on hostile layouts."""
    from huggingface_hub import ModelCard

    for i, text in enumerate(HOSTILE_CARDS):
        folder = tmp_path / str(i)
        folder.mkdir()
        (folder / "README.md").write_bytes(text.encode("utf-8"))
        try:
            hub = ModelCard.load(folder / "README.md")
        except Exception:  # the Hub cannot read it either: attest refuses it, one line naming the file
            with pytest.raises(InputError, match=r"README\.md"):
                read_card(folder)
            continue
        ours = read_card(folder)
        assert ours is not None
        assert {k: v for k, v in ours.front.items() if v is not None} == hub.data.to_dict(), repr(text)
        assert ours.body == hub.text, repr(text)


def test_front_matter_the_hub_would_read_ambiguously_is_refused(tmp_path: Path, published: dict[str, Path]) -> None:
    """A key given twice: the Hub keeps the last; attest refuses the card (exit 2, one line) rather than guess."""
    from huggingface_hub import ModelCard

    text = "---\nlicense: gpl-3.0\nlicense: mit\n---\n"
    assert ModelCard(text).data.license == "mit"
    folder = tmp_path / "dup"
    shutil.copytree(published["honest"], folder)
    (folder / "README.md").write_text(text)
    try:
        read_card(folder)
    except InputError as exc:
        assert "README.md" in str(exc) and "'license' given twice" in str(exc)
    else:
        raise AssertionError("a duplicate front-matter key was read")
    code, _, err = run_attest(["card", folder, "--check"])
    assert code == 2 and "given twice" in err and len(err.strip().splitlines()) == 1


def test_check_with_no_statements_says_nothing_to_check_and_exits_1(published: dict[str, Path], tmp_path: Path) -> None:
    """A carded folder never recorded: there is nothing to check the card against, which is not agreement."""
    folder = tmp_path / "unrecorded"
    shutil.copytree(published["honest"], folder, ignore=shutil.ignore_patterns(".attest"))
    code, out, _ = run_attest(["card", folder, "--check", "--policy", published["policy"]])
    assert code == 1 and "nothing to check the card against" in out and "agrees" not in out, out


def test_check_json(published: dict[str, Path], tmp_path: Path) -> None:
    from tests.support.json_output import parse_output

    code, out, _ = run_attest(["card", published["honest"], "--check", "--policy", published["policy"], "--json"])
    doc = parse_output(out, "card-check-output.schema.json")
    assert code == 0 and doc["checked"] and doc["agrees"] and doc["contradictions"] == []
    folder = tmp_path / "unrecorded"
    shutil.copytree(published["honest"], folder, ignore=shutil.ignore_patterns(".attest"))
    code, out, _ = run_attest(["card", folder, "--check", "--policy", published["policy"], "--json"])
    doc = parse_output(out, "card-check-output.schema.json")
    assert code == 1 and not doc["checked"] and not doc["agrees"]
    assert any("nothing to check" in n for n in doc["notes"])


def test_card_names_parents_by_hub_id_and_lists_hub_datasets(published: dict[str, Path], tmp_path: Path) -> None:
    """`--parent DIR@org/name` puts a real repo id in base_model (not the folder name); `--dataset F@org/data` fills
    the card's `datasets:` key; the recorded statement says the same, so --check agrees."""
    folder = tmp_path / "ft"
    shutil.copytree(published["ft_a"], folder, ignore=shutil.ignore_patterns(".attest"))
    parent = f"base={published['base']}@acme/tiny-base"
    dataset = f"{published['root'] / 'sentences.txt'}@acme/sentences"
    key = published["root"] / "lab.key"
    same = ["--parent", parent, "--dataset", dataset]
    code, _, err = run_attest(["card", folder, "--step", "finetune", *same, "--key", f"{key}.pub"])
    assert code == 0, err
    card = read_card(folder)
    assert card is not None
    assert card.front["base_model"] == "acme/tiny-base" and card.front["datasets"] == ["acme/sentences"]
    code, _, err = run_attest(["record", "finetune", *same, "--output", folder, "--key", key])
    assert code == 0, err
    code, out, _ = run_attest(["card", folder, "--check", "--key", f"{key}.pub"])
    assert code == 0 and "agrees" in out, out
