"""`attest report`: a self-contained HTML page rendered in headless Chromium, and the same content as JSON."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from attest.publish.report import AuditReport
from tests.support.cli import run_attest

CHROMIUM = Path("/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _chromium(page: Path, tmp: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CHROMIUM), *FLAGS, f"--user-data-dir={tmp / 'profile'}", *extra, page.resolve().as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_html_is_self_contained_and_json_has_the_same_content(published: dict[str, Path], tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    code, out, err = run_attest(
        ["report", published["dishonest"], "--policy", published["policy"], "--html", page, "--json"]
    )
    assert code == 1, err  # not verified: written anyway, exit 1
    report = AuditReport.model_validate_json(out)
    assert not report.verified and report.policy is not None
    failed = {r.rule for r in report.policy.rules if not r.passed}
    assert failed == {"full_disclosure", "claims_consistent"}
    text = page.read_text()
    assert "<svg" in text and "<style>" in text
    # no external assets: nothing is fetched (no src/href to anything, no scripts, no @import)
    assert not re.search(r"""(src|href)\s*=\s*["'](?!#)""", text) and "<script" not in text and "@import" not in text
    assert "undisclosed contributor" in text and "NOT VERIFIED" in text
    for rule in report.policy.rules:
        assert rule.rule in text


def test_hostile_names_are_escaped(published: dict[str, Path], tmp_path: Path) -> None:
    from attest.publish.report import render_html

    code, out, _ = run_attest(["report", published["honest"], "--policy", published["policy"], "--json"])
    assert code == 0
    doc = json.loads(out)
    doc["model"] = "<script>alert(1)</script>"
    html = render_html(AuditReport.model_validate(doc))
    assert "<script>" not in html and "&lt;script&gt;" in html


@pytest.mark.skipif(not CHROMIUM.exists(), reason="/usr/bin/chromium absent (Debian's chromium: .ci/run installs it)")
def test_report_renders_in_headless_chromium(published: dict[str, Path], tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    code, _, err = run_attest(["report", published["honest"], "--policy", published["policy"], "--html", page])
    assert code == 0, err
    done = _chromium(page, tmp_path, "--dump-dom")
    assert done.returncode == 0, done.stderr[-2000:]
    dom = done.stdout
    assert "VERIFIED" in dom and "NOT VERIFIED" not in dom
    assert dom.count(">PASS<") == 6 and ">FAIL<" not in dom
    assert "<svg" in dom and "sovereign" not in dom and "ft_a" in dom
    shot = tmp_path / "shot.png"
    done = _chromium(page, tmp_path, f"--screenshot={shot}", "--window-size=1100,1400")
    assert done.returncode == 0, done.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000  # a real page, not a blank one


def test_tampered_folder_shows_the_claimed_lineage_beside_the_verdict(
    published: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    folder = tmp_path / "honest"
    shutil.copytree(published["honest"], folder)
    readme = folder / "README.md"
    readme.write_text(readme.read_text() + "\nEdited after signing.\n")
    page = tmp_path / "report.html"
    code, out, err = run_attest(["report", folder, "--policy", published["policy"], "--html", page, "--json"])
    assert code == 1, err
    report = AuditReport.model_validate_json(out)
    assert report.lineage is not None and report.lineage.parents == []  # the verdict: one failed node
    claimed = report.claimed_lineage
    assert claimed is not None and claimed.verdict == "failed" and claimed.step == "merge"
    assert sorted((p.name, p.verdict, p.step, tuple(p.signers)) for p in claimed.parents) == [
        ("ft_a", "verified", "finetune", ("lab",)),
        ("ft_b", "verified", "finetune", ("lab",)),
    ]
    assert [(g.name, g.verdict) for g in claimed.parents[0].parents] == [("tiny-base", "trusted_root")]
    html = page.read_text()
    verdict_card = html[html.index('id="verdict"') : html.index("<h2>Identity</h2>")]
    assert 'id="claimed-lineage"' in verdict_card and "ft_a" in verdict_card and "ft_b" in verdict_card
    assert {s.kind for s in report.steps} == {"merge", "finetune"}  # the claimed steps are described too
    # an untampered folder has no claimed lineage beside its verdict
    code, out, _ = run_attest(["report", published["honest"], "--policy", published["policy"], "--json"])
    assert code == 0 and AuditReport.model_validate_json(out).claimed_lineage is None


def test_steps_show_code_commit_dirty_flag_seed_and_device(published: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    code_dir = tmp_path / "trainer"
    code_dir.mkdir()
    (code_dir / "train.py").write_text("print('train')\n")
    git = ["git", "-C", str(code_dir), "-c", "user.name=t", "-c", "user.email=t@example.com"]
    for args in (["init", "-q"], ["add", "train.py"], ["commit", "-qm", "train"]):
        subprocess.run([*git, *args], check=True, capture_output=True)
    commit = subprocess.run([*git, "rev-parse", "HEAD"], check=True, capture_output=True, text=True).stdout.strip()
    (code_dir / "train.py").write_text("print('changed')\n")  # dirty when the step is recorded
    folder = tmp_path / "ft"
    shutil.copytree(published["ft_a"], folder, ignore=shutil.ignore_patterns(".attest"))
    args = ["record", "finetune", "--parent", f"base={published['base']}", "--output", folder]
    args += ["--key", published["root"] / "lab.key", "--code", code_dir, "--seed", "7", "--device", "cpu"]
    assert run_attest(args)[0] == 0
    page = tmp_path / "report.html"
    _, out, _ = run_attest(["report", folder, "--policy", published["policy"], "--html", page, "--json"])
    report = AuditReport.model_validate_json(out)
    (step,) = [s for s in report.steps if s.name == "ft"]
    assert (step.seed, step.device) == (7, "cpu")
    assert [(c.commit, c.dirty) for c in step.code] == [(commit, True)]
    html = page.read_text()
    assert commit in html and "dirty: uncommitted changes" in html and "seed 7, device cpu" in html
