"""`--claim`: hold the model's own statements against what its weights show (SPEC.md §6.7).

The statements say "merge, then distill"; the residual test says whether anything beyond the merge is in the
weights. Statements are read here, not trusted: `attest verify` checks who signed them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from attest.forensics.report import ClaimCheck, DetectReport
from attest.forensics.verdict import MERGE_VERDICTS, RELATED_CORRELATION
from attest.identity import hash_model
from attest.lineage.store import load_bundle
from attest.statements import ProvenanceStatement, StatementError, parse_provenance

MAX_CHAIN = 64
POST_MERGE_KINDS = ("finetune", "distill")
PARENT_ROLES = ("parent", "student-init", "base")


def check_claims(model: str | os.PathLike[str], report: DetectReport) -> tuple[list[ClaimCheck], list[str]]:
    """For each claimed finetune/distill between the recorded merge and the model: did it change the weights?"""
    notes = ["claims are read from .attest/provenance.intoto.jsonl unverified; `attest verify` checks signatures"]
    by_subject: dict[str, list[ProvenanceStatement]] = {}
    for env in load_bundle(model):
        try:
            st = parse_provenance(env.payload_bytes)
        except StatementError:
            continue
        for digest in st.subject_digests("sha256"):
            by_subject.setdefault(digest, []).append(st)
    if not by_subject:
        return [], [*notes, "the model carries no provenance statements: nothing is claimed"]
    root = hash_model(model).model_root
    if root not in by_subject:
        return [], [*notes, f"no statement names this model's root {root[:16]}…: the bundle is about other weights"]

    steps: list[tuple[str, str, ProvenanceStatement]] = []  # (kind, subject root, statement), newest first
    merge: ProvenanceStatement | None = None
    cur: str | None = root
    seen: set[int] = set()
    while cur is not None and len(steps) < MAX_CHAIN:
        # A step that left the weights unchanged has the same root as its parent: take each statement once.
        st_next = next((s for s in by_subject.get(cur, []) if id(s) not in seen), None)
        if st_next is None:
            break
        st = st_next
        seen.add(id(st))
        kind = st.step_kind() or st.predicate.buildDefinition.buildType
        if kind == "merge":
            merge = st
            break
        steps.append((kind, cur, st))
        cur = _parent(st)
    claimed = [(k, r, s) for k, r, s in steps if k in POST_MERGE_KINDS]
    if merge is None:
        roots = {hash_model(f).model_root: lab for f, lab in _inputs(report)}
        checks = []
        for k, r, st in claimed:
            parent = _parent(st)
            label = roots.get(parent) if parent is not None else None
            ok, why = descends_from(report, label) if label is not None else (None, "")
            if label is None:
                why = "the claimed parent is not among the candidates or the base: descent not tested"
            checks.append(ClaimCheck(step=k, subject=r, changed_weights=None, consistent=ok,
                                     evidence=f"no recorded merge before this step; {why}"))  # fmt: skip
        return checks, [*notes, "the recorded lineage holds no merge: the residual cannot be held against a recipe"]
    notes.append(_recipe_note(merge, report))
    out: list[ClaimCheck] = []
    res = report.residual
    merge_fits = report.verdict in MERGE_VERDICTS
    for i, (kind, subject, _st) in enumerate(reversed(claimed)):
        later = len(claimed) - 1 - i
        scope = "" if len(claimed) == 1 else f" (with the {later} claimed step(s) after it: only the sum is visible)"
        if not merge_fits or res is None:
            _, why = merge_start(report, kind)
            out.append(ClaimCheck(step=kind, subject=subject, changed_weights=None, consistent=False, evidence=why))
        elif report.verdict == "merge_plus_training":
            out.append(
                ClaimCheck(
                    step=kind,
                    subject=subject,
                    changed_weights=True,
                    consistent=True,
                    evidence=f"changed the weights beyond the merge{scope}: {res.unexplained} of {res.elements} "
                    f"elements ({res.unexplained_fraction:.2%}) are beyond any rounding of the fitted recipe",
                )
            )
        else:
            out.append(
                ClaimCheck(
                    step=kind,
                    subject=subject,
                    changed_weights=False,
                    consistent=False,
                    evidence=f"left no trace{scope}: the weights are the merge up to rounding "
                    f"({res.unexplained} unexplained elements, floor {res.floor:.0e} of {res.elements})",
                )
            )
    return out, notes


def descends_from(report: DetectReport, label: str) -> tuple[bool | None, str]:
    """The descent test a claimed fine-tune/distillation of `label` must pass (SPEC.md §6.7): the weights correlate
    with the claimed parent at least RELATED_CORRELATION (independent initialisations: ~0; fine-tunes and
    distillations of up to 50 AdamW steps at lr 1e-3: 0.87 or more in the pilot). None when `label` was not fitted."""
    rel = next((r for r in report.relations if r.model == label), None)
    if rel is None or rel.correlation is None:
        return None, f"{label} was not among detect's inputs: descent not tested"
    ok = rel.correlation >= RELATED_CORRELATION
    word = "descend" if ok else "do not descend"
    return ok, (
        f"the weights {word} from {label}: correlation {rel.correlation:.3f} "
        f"(descent needs >= {RELATED_CORRELATION}; independent initialisations ~0)"
    )


def merge_start(report: DetectReport, kind: str) -> tuple[bool, str]:
    """A claimed step after a recorded merge must show that merge as its start, and have changed it."""
    if report.verdict == "merge_plus_training":
        return True, f"the weights are the merge of the candidates, then changed: consistent with the claimed {kind}"
    if report.verdict == "pure_merge":
        return False, f"the weights are the merge with no trace of the claimed {kind}"
    if report.verdict == "undetermined":
        return False, (
            f"without the candidates' base the weights cannot show the recorded merge as the start of the claimed "
            f"{kind} ({report.reason})"
        )
    return False, (
        f"the weights do not show the recorded merge as the start of the claimed {kind} ({report.verdict}: "
        f"{report.reason})"
    )


def _inputs(report: DetectReport) -> list[tuple[str, str]]:
    """(folder, detect label) for the candidates and the base."""
    return [(c, c) for c in report.candidates] + ([(report.base, "base")] if report.base else [])


def _parent(st: ProvenanceStatement) -> str | None:
    for role in PARENT_ROLES:
        for dep in st.dependencies(role):
            digest = dep.sha256
            if isinstance(digest, str):
                return digest
    return None


def _recipe_note(merge: ProvenanceStatement, report: DetectReport) -> str:
    """Compare a recorded linear recipe's normalized weights with the fitted coefficients, by folder name."""
    cfg: Any = merge.predicate.buildDefinition.externalParameters.get("mergekit_config", {})
    parsed = cfg.get("parsed") if isinstance(cfg, dict) else None
    if not isinstance(parsed, dict):
        return "the recorded merge has no mergekit recipe to compare with"
    method = parsed.get("merge_method")
    weights: dict[str, float] = {}
    for m in parsed.get("models") or []:
        if isinstance(m, dict) and isinstance(m.get("model"), str):
            w = (m.get("parameters") or {}).get("weight")
            if isinstance(w, int | float) and not isinstance(w, bool):
                weights[Path(m["model"]).name] = float(w)
    if not weights:
        return f"recorded merge: {method}, no scalar weights to compare"
    total = sum(weights.values())
    normalize = method == "linear" and (parsed.get("parameters") or {}).get("normalize", True) is not False
    parts = []
    for c in report.coefficients:
        name = Path(c.candidate).name
        if name in weights:
            want = weights[name] / total if normalize and total else weights[name]
            parts.append(f"{name}: recorded {want:.4f}, fitted {c.value:.4f}")
    return f"recorded merge ({method}): " + ("; ".join(parts) if parts else "its models are not among the candidates")
