"""Evidence several procurement rules (SPEC.md section 7.1) share: detect run once against the policy's candidates,
the names a reader recognises, and local folders located by digest.

Every rule fails closed: when the evidence it needs cannot be produced (a parent folder not available for replay,
a candidate folder missing, detect refusing its input), the rule fails and says why, never passes by default.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from attest.errors import AttestError
from attest.policy.rules.base import RuleContext
from attest.statements.models import ROLES
from attest.trust.policy_file import FullDisclosure

if TYPE_CHECKING:
    from attest.forensics import DetectReport

WEIGHT_CHANGING_STEPS = ("finetune", "distill", "quantize", "merge")

BASE_LABEL = "base"
"""detect's label for the base's implied weight; a candidate's label is its absolute path, so never this."""


def _candidate_folders(ctx: RuleContext, rule: FullDisclosure) -> list[Path]:
    return [ctx.path(c).absolute() for c in rule.candidates]


def detect_once(ctx: RuleContext, rule: FullDisclosure) -> tuple[DetectReport | None, list[str], dict[str, str]]:
    """Run forensics once against the rule's candidates; (report or None, evidence if it could not run, label->root).

    Participants are identified by model root: each label detect reports (a candidate's absolute path, or
    BASE_LABEL) maps to the root of the folder it stands for, and a label that is not exactly one participant
    fails closed, so a candidate folder named `base` can never borrow the base's root."""
    if ctx.detect_result is not None:
        return ctx.detect_result
    labels: dict[str, str] = {}
    problems: list[str] = []
    folders = _candidate_folders(ctx, rule)
    for f in folders:
        root = ctx.locator.root_of(f) if f.is_dir() else None
        if root is None:
            problems.append(f"candidate {f} is not a readable model folder: detect cannot run (fails closed)")
        elif str(f) in labels:
            problems.append(f"candidate {f} is given twice: detect cannot tell its participants apart (fails closed)")
        else:
            labels[str(f)] = root
    base = ctx.path(rule.base).absolute() if rule.base else None
    if base is not None:
        root = ctx.locator.root_of(base) if base.is_dir() else None
        if root is None:
            problems.append(f"base {base} is not a readable model folder: detect cannot run (fails closed)")
        else:
            labels[BASE_LABEL] = root
    report = None
    if not problems:
        try:
            from attest.forensics import detect  # lazy: forensics loads torch and numpy
        except ImportError as exc:  # torch or the forensics package missing
            problems.append(f"requires attest detect, which is unavailable here ({exc}): fails closed")
        else:
            ctx.say(f"detect: fitting {ctx.lineage.folder.name} against {len(folders)} candidates")
            try:
                report = detect(ctx.lineage.folder, list(folders), base)
            except AttestError as exc:
                problems.append(f"detect could not run: {exc} (fails closed)")
            except Exception as exc:  # a forensics bug must not pass the rule
                problems.append(f"detect could not run ({type(exc).__name__}: {exc}): fails closed")
    if report is not None:
        named = [c.candidate for c in report.coefficients]
        unknown = sorted({n for n in named if n not in labels} | {n for n in named if named.count(n) > 1})
        if report.derived_from is not None and report.derived_from not in labels:
            unknown.append(report.derived_from)
        if unknown:
            problems.append(f"detect reported participants it was not given, or twice: {unknown} (fails closed)")
            report = None
    ctx.detect_result = (report, problems, labels)
    return ctx.detect_result


def display_names(ctx: RuleContext, rule: FullDisclosure) -> dict[str, str]:
    """detect's labels (absolute candidate paths, BASE_LABEL) -> the folder names a reader recognises."""
    out = {str(f): Path(c).name or c for f, c in zip(_candidate_folders(ctx, rule), rule.candidates, strict=True)}
    if rule.base:
        out[BASE_LABEL] = f"{Path(rule.base).name} (base)"
    return out


def locate(ctx: RuleContext, digest: str, name: str, uri: str | None, extra_dirs: list[Path]) -> Path | None:
    """A local folder whose model root is `digest`: the verified folder itself, else what the locator finds (NAME
    under the rule's and the command line's parents dirs, then the recorded file URI)."""
    if digest == ctx.lineage.report.model_root:
        return ctx.lineage.folder
    return ctx.locator.find(digest, name, uri, extra_dirs)


def uri_index(ctx: RuleContext) -> dict[str, tuple[str, str | None]]:
    """digest -> (name, uri) from every dependency of every statement in the lineage."""
    out: dict[str, tuple[str, str | None]] = {}
    for rec in ctx.lineage.steps.values():
        if not rec.trusted:  # only what a trusted signer said may steer which folders are hashed
            continue
        for dep in rec.statement.dependencies():
            d = dep.sha256
            if d and dep.role in ROLES:
                out.setdefault(d, (dep.name or d[:16], dep.uri))
    return out
