"""`detect`: one streaming pass over a model and its candidate parents, then aggregation, hints and a verdict."""

from __future__ import annotations

import math
import os
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path

import numpy as np

from attest.checkpoint.canonical import CanonicalView
from attest.checkpoint.reader import Checkpoint
from attest.errors import InputError
from attest.executor import Executor
from attest.forensics import hints as H
from attest.forensics.aggregate import classify_spread
from attest.forensics.alignment import align_and_refit, misaligned_matrices
from attest.forensics.evidence import fit_evidence
from attest.forensics.experts import expert_map, expert_rows
from attest.forensics.fit import ULP_BINS, TensorFit, single_threaded_ops
from attest.forensics.pairing import FLOAT_DTYPES, layer_of, pair
from attest.forensics.report import (
    Coefficient,
    Coverage,
    DetectReport,
    Hint,
    LayerMap,
    LayerPoint,
    NonFinite,
    Relation,
    Residual,
    Spread,
    UlpBin,
)
from attest.forensics.rows import (
    candidate_shares,
    concentration,
    finite,
    finite_or_none,
    linear_hint,
    participant_weights,
    passthrough_coefficients,
    tensor_rows,
)
from attest.forensics.stats import merge_test, participation, weighted_median
from attest.forensics.units import detect_units
from attest.forensics.verdict import SIGNIFICANT_WEIGHT, UNEXPLAINED_FLOOR, Evidence, decide

Progress = Callable[[int], None]


def detect(
    model: str | os.PathLike[str],
    candidates: list[str | os.PathLike[str]],
    base: str | os.PathLike[str] | None = None,
    *,
    on_total: Progress | None = None,
    on_bytes: Progress | None = None,
    executor: Executor | None = None,
) -> DetectReport:
    """Fit the model as a merge of the candidates (deltas from `base` when given) and judge the fit. executor: the
    per-tensor pass as its work units (attest.executor), near their files; the report is the same."""
    if not candidates:
        raise InputError(None, "at least one --candidate is needed")
    labels = [str(c) for c in candidates]
    if len(set(labels)) != len(labels):
        raise InputError(labels[0], "the same candidate is given twice")
    opened: list[Checkpoint] = []
    try:
        msrc = Checkpoint(model, with_config=False)
        opened.append(msrc)
        csrc = []
        for c in candidates:
            csrc.append(Checkpoint(c, with_config=False))
            opened.append(csrc[-1])
        bsrc = Checkpoint(base, label="base", with_config=False) if base is not None else None
        if bsrc is not None:
            opened.append(bsrc)
        views = [CanonicalView(s) for s in opened]
        mview, cviews = views[0], views[1 : 1 + len(csrc)]
        bview = views[-1] if bsrc is not None else None
        with single_threaded_ops():
            report, misaligned = _run(mview, cviews, bview, on_total, on_bytes, executor)
            if misaligned and report.verdict != "pure_merge":  # the only place alignment runs (SPEC.md §6.10)
                folders = [Path(model), *map(Path, candidates)]
                report = align_and_refit(
                    report, misaligned, mview, cviews, folders, lambda v: _run(v, cviews, bview, None, None)[0]
                )
            return report
    finally:
        for s in opened:
            s.close()


def _run(
    msrc: CanonicalView,
    csrc: list[CanonicalView],
    bsrc: CanonicalView | None,
    on_total: Progress | None,
    on_bytes: Progress | None,
    executor: Executor | None = None,
) -> tuple[DetectReport, list[str]]:
    """The report, and the fitted weight matrices unrelated to every given model (candidates for alignment)."""
    pairing = pair(msrc, csrc, bsrc)
    all_sources = [msrc, *csrc, *([bsrc] if bsrc else [])]
    if on_total is not None:
        on_total(sum(info.nbytes for s in all_sources for _, info in s.where.values()))
    notes: list[str] = []
    fits: list[TensorFit] = []
    mdig: dict[str, bytes] = {}
    cdig: list[dict[str, bytes]] = [{} for _ in csrc]
    done: set[str] = set()  # fitted names: done in every source

    def finish(si: int, names: list[str]) -> None:
        src = all_sources[si]
        src.release_many(names)
        if on_bytes is not None:
            on_bytes(sum(src.info(name).nbytes for name in names))

    non_finite: list[NonFinite] = []
    if executor is not None:
        fits, non_finite, mdig, cdig, unit_notes = detect_units(executor, pairing.fitted, all_sources, len(csrc))
        notes.extend(unit_notes)
    else:

        def fitted(names: list[str]) -> None:
            done.update(names)
            for si in range(len(all_sources)):
                finish(si, names)

        for ev in fit_evidence(pairing.fitted, msrc, csrc, bsrc, fitted):
            ev.add_to(fits, non_finite, notes, mdig, cdig)
        # Tensors the fit does not use still count for byte equality (passthrough layers, identical copies).
        for si, src in enumerate(all_sources[: 1 + len(csrc)]):
            for name in src.where:
                if name in done:
                    continue
                (mdig if si == 0 else cdig[si - 1])[name] = src.raw_digest(name)
                finish(si, [name])
    if non_finite:
        names = sorted({n.tensor for n in non_finite})
        if not fits:
            raise InputError(
                msrc.label,
                f"every fitted tensor holds non-finite values (NaN/Inf) in some input ({len(names)} tensors, e.g. "
                f"{names[0]} in {non_finite[0].model}): nothing left to fit",
            )
        notes.append(
            f"{len(names)} tensors hold non-finite values (NaN/Inf) in some input and were not fitted "
            f"(e.g. {names[0]}: {non_finite[0].count} in {non_finite[0].model})"
        )
    if pairing.skipped:
        notes.append(f"{len(pairing.skipped)} tensors are not floating point and were compared byte for byte only")
    if pairing.unpaired_model:
        notes.append(
            f"{len(pairing.unpaired_model)} model tensors are missing from some input and were not fitted "
            f"(e.g. {pairing.unpaired_model[0]})"
        )
    for v in all_sources:
        notes.extend(f"{v.label}: {n}" for n in v.notes)
    report = _report(msrc, csrc, bsrc, fits, mdig, cdig, notes)
    report.non_finite = non_finite
    return report, misaligned_matrices(fits, msrc)


def _coverage(msrc: CanonicalView, views: list[CanonicalView], fits: list[TensorFit]) -> Coverage:
    total = sum(math.prod(info.shape) for _, info in msrc.where.values() if info.dtype in FLOAT_DTYPES)
    compared = sum(f.numel for f in fits)
    layouts = [f"{v.label}: {v.layout}" for v in views if v.layout]
    return Coverage(elements=total, compared=compared, fraction=compared / total if total else 1.0, layouts=layouts)


def _report(
    msrc: CanonicalView,
    csrc: list[CanonicalView],
    bsrc: CanonicalView | None,
    fits: list[TensorFit],
    mdig: dict[str, bytes],
    cdig: list[dict[str, bytes]],
    notes: list[str],
) -> DetectReport:
    labels = [c.label for c in csrc]
    k = len(csrc)
    with_base = bsrc is not None
    part_labels = [*labels, *(["base"] if with_base else [])]
    given = [*labels, *(["base"] if with_base else [])]

    # Coefficients: participants' weights per informative tensor; weighted median, bootstrap interval over tensors.
    flags = [f.informative for f in fits]
    inf = [f for f, ok in zip(fits, flags, strict=True) if ok]
    part_of = [participant_weights(f, with_base) for f in fits]
    if not inf and fits:
        notes.append("no tensor determines the coefficients (candidates do not differ from the base/each other)")
    weights = np.array([f.numel for f in inf], dtype=float)
    per_tensor = np.array([p for p, ok in zip(part_of, flags, strict=True) if ok]).reshape(len(inf), len(part_labels))
    by_layer: dict[int, list[int]] = defaultdict(list)
    for i, f in enumerate(inf):
        key = layer_of(f.name)
        if key is not None:
            by_layer[key.index].append(i)
    coefs: list[Coefficient] = []
    for j, lab in enumerate(part_labels):
        est, sig = participation(per_tensor[:, j], weights, list(by_layer.values()), SIGNIFICANT_WEIGHT)
        lo = est.ci_low if math.isfinite(est.ci_low) else None
        hi = est.ci_high if math.isfinite(est.ci_high) else None
        coefs.append(Coefficient(candidate=lab, value=finite(est.value), ci_low=lo, ci_high=hi, significant=sig))
    coef_sum = finite_or_none(weighted_median(per_tensor[:, :k].sum(axis=1), weights)) if len(inf) else None
    shares = candidate_shares(per_tensor[:, :k], weights, labels)
    test = merge_test(inf, with_base)

    # Spread over layers.
    layer_ids = sorted(by_layer)
    layer_vals = [
        [float(np.average(per_tensor[idx, j], weights=weights[idx])) for j in range(len(part_labels))]
        for idx in (by_layer[li] for li in layer_ids)
    ]
    layers = [LayerPoint(layer=li, values=v) for li, v in zip(layer_ids, layer_vals, strict=True)]
    spread = []
    for j, lab in enumerate(part_labels):
        s = classify_spread(layer_ids, [v[j] for v in layer_vals])
        spread.append(
            Spread(candidate=lab, shape=s.shape, layer_range=s.layer_range, knots=[(a, float(b)) for a, b in s.knots])
        )

    # Fit quality and relations over all fitted tensors.
    rss = sum(f.rss for f in fits)
    dist2 = np.sum([f.dist2 for f in fits], axis=0) if fits else np.full(len(given), math.nan)
    m2 = sum(float(f.raw_gram[0, 0]) for f in fits)
    nearest_j = int(np.nanargmin(dist2)) if fits else 0
    explained = 1 - rss / float(dist2[nearest_j]) if fits and dist2[nearest_j] > 0 else (1.0 if fits else math.nan)
    fit_cos = None
    if with_base and fits:
        ref = sum(f.ref_energy for f in fits)
        fit_cos = math.sqrt(max(0.0, 1 - rss / ref)) if ref > 0 else None
    relations = []
    corr_vals = []
    for j, lab in enumerate(given):
        cs = np.array([f.corr[j] for f in fits])
        ws = np.array([f.numel for f in fits], dtype=float)
        ok = np.isfinite(cs)
        corr = float(np.average(cs[ok], weights=ws[ok])) if ok.any() else None
        corr_vals.append(corr if corr is not None else -math.inf)
        dist = math.sqrt(float(dist2[j]) / m2) if m2 > 0 else math.nan
        relations.append(Relation(model=lab, correlation=corr, distance=finite(dist)))
    best_corr_j = int(np.argmax(corr_vals)) if corr_vals else 0

    # Residual test, over the tensors that determine the recipe.
    elements = sum(f.numel for f in inf)
    unexplained = sum(f.unexplained for f in inf)
    hist = np.sum([f.ulp_hist for f in inf if f.ulp_hist is not None], axis=0) if inf else np.zeros(len(ULP_BINS))
    conc = concentration(inf, by_layer)
    loose = [f for f, ok in zip(fits, flags, strict=True) if not ok]
    if loose:
        notes.append(
            f"{len(loose)} tensors ({sum(f.numel for f in loose)} elements) do not determine the coefficients and are "
            f"left out of the aggregate and the residual test ({sum(f.unexplained for f in loose)} unexplained "
            f"elements under their own fit), e.g. {loose[0].name}"
        )
    residual = Residual(
        elements=elements,
        differing=sum(f.differing for f in fits),
        unexplained=unexplained,
        unexplained_fraction=unexplained / elements if elements else 0.0,
        floor=UNEXPLAINED_FLOOR,
        ulp_histogram=[UlpBin(ulps=b, elements=int(n)) for b, n in zip(ULP_BINS, hist, strict=True)],
        tensors_with_unexplained=sum(1 for f in inf if f.unexplained > 0),
        tensors=len(inf),
        concentration=conc,
    )

    # Byte equality: identical copies and passthrough layer mapping.
    identical_to = None
    for ci, d in enumerate(cdig):
        if d.keys() == mdig.keys() and all(d[n] == mdig[n] for n in mdig):
            identical_to = labels[ci]
            break
    mapping, non_layer_ok, n_layers, cand_layers = H.layer_mapping(mdig, cdig)
    passthrough = identical_to is None and non_layer_ok and H.is_passthrough(mapping, n_layers, cand_layers)

    hint_list: list[Hint] = []
    participants = [c.candidate for c in coefs if c.significant]
    if passthrough:
        used = sorted({m.candidate for m in mapping})
        text = ", ".join(f"{m.model_layer}<-{labels[m.candidate]}[{m.candidate_layer}]" for m in mapping)
        hint_list.append(Hint(method="passthrough", evidence=f"layers copied bit for bit: {text}"))
        coefs = passthrough_coefficients(mapping, labels, fits, msrc)
        shares = []  # layers copied whole: the coefficients are the layer shares
        participants = [labels[c] for c in used]
    else:
        if with_base:
            sp = H.sparse_hint(fits)
            if sp is not None:
                hint_list.append(Hint(method=sp[0], evidence=sp[1]))
        endpoints = (1, 2) if (not with_base and k == 2) else ((k + 1, 1) if (with_base and k == 1) else None)
        if endpoints is not None:
            sl = H.slerp_hint(inf, endpoints)
            if sl is not None:
                hint_list.append(Hint(method="slerp", evidence=sl))
        if mapping and len(mapping) < n_layers:
            text = ", ".join(f"{m.model_layer}<-{labels[m.candidate]}[{m.candidate_layer}]" for m in mapping)
            notes.append(f"{len(mapping)} of {n_layers} layers are bit-identical copies of candidate layers: {text}")

    coverage = _coverage(msrc, [msrc, *csrc, *([bsrc] if bsrc else [])], fits)
    if coverage.fraction < 1:
        notes.append(
            f"the fit compared {coverage.compared} of {coverage.elements} weight elements ({coverage.fraction:.2%})"
        )
    emap = expert_map(mdig, cdig, labels, fits)
    if emap:
        sources = sorted({m.candidate for m in emap})
        copied = sum(1 for m in emap if m.identical)
        notes.append(
            f"routed experts come from different candidates ({', '.join(sources)}): {copied} of {len(emap)} mapped "
            "experts are bit-identical copies (see expert_map)"
        )
    where = ", ".join(f"{c.name} {c.fraction:.1%}" for c in conc[:4]) or "nowhere in particular"
    ev = Evidence(
        participants=participants,
        merge_share=test.merge_share if test is not None else 0.0,
        critical=test.critical if test is not None else 1.0,
        unexplained_fraction=residual.unexplained_fraction,
        concentration=f"most in {where}",
        identical_to=identical_to,
        passthrough=passthrough,
        sparse=next((h.method for h in hint_list if h.method in ("ties", "dare")), None),
        nearest=given[nearest_j],
        max_correlation=corr_vals[best_corr_j] if corr_vals else 0.0,
        most_correlated=given[best_corr_j] if given else "",
        coverage=coverage.fraction,
    )
    verdict, reason, derived_from = decide(ev)
    if verdict in ("pure_merge", "merge_plus_training") and not hint_list:
        hint_list.append(linear_hint(coefs, with_base))

    return DetectReport(
        model=msrc.label,
        candidates=labels,
        base=str(bsrc.folder) if bsrc is not None else None,
        verdict=verdict,
        reason=reason,
        derived_from=derived_from,
        coefficients=coefs,
        coefficient_sum=coef_sum,
        shares=shares,
        explained=explained if math.isfinite(explained) else None,
        fit_cos=fit_cos,
        merge_test=test,
        residual=residual if inf else None,
        spread=spread,
        layers=layers,
        relations=relations,
        hints=hint_list,
        layer_mapping=[
            LayerMap(model_layer=m.model_layer, candidate=labels[m.candidate], candidate_layer=m.candidate_layer)
            for m in mapping
        ],
        tensors=tensor_rows(fits, part_of, with_base),
        coverage=coverage,
        experts=expert_rows(
            fits, {f.name: p for f, p, ok in zip(fits, part_of, flags, strict=True) if ok}, len(part_labels)
        ),
        expert_map=emap,
        notes=notes,
    )
