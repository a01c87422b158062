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
from attest.forensics.digests import DigestMap, NameIndex, confirm_copies, copy_digest, shared_digests
from attest.forensics.evidence import fit_evidence
from attest.forensics.experts import expert_map, expert_rows
from attest.forensics.fit import ULP_BINS
from attest.forensics.fit_table import FitTable, total
from attest.forensics.layer_match import layer_copy_report
from attest.forensics.pairing import FLOAT_DTYPES, layer_of, pair
from attest.forensics.report import (
    Coefficient,
    Coverage,
    DetectReport,
    Hint,
    LayerPoint,
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
    layer_maps,
    linear_hint,
    mapping_text,
    passthrough_coefficients,
    tensor_rows,
)
from attest.forensics.stats import merge_test, participation, weighted_median
from attest.forensics.units import detect_units
from attest.forensics.verdict import MERGE_VERDICTS, SIGNIFICANT_WEIGHT, UNEXPLAINED_FLOOR, Evidence, decide

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
    if base is not None and "base" in labels:
        raise InputError("base", "a candidate given as 'base' reads as the --base in the report: name it ./base")
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
    fitted_index = NameIndex(pairing.fitted)
    rest: list[dict[str, bytes]] = [{} for _ in range(1 + len(csrc))]  # digests of the tensors the fit does not use

    def finish(si: int, names: list[str]) -> None:
        src = all_sources[si]
        src.release_many(names)
        if on_bytes is not None:
            on_bytes(sum(src.info(name).nbytes for name in names))

    if executor is not None:
        ev, rest = detect_units(executor, pairing.fitted, fitted_index, all_sources, len(csrc))
    else:

        def fitted(names: list[str]) -> None:
            for si in range(len(all_sources)):
                finish(si, names)

        ev = fit_evidence(pairing.fitted, msrc, csrc, bsrc, fitted)
        # Tensors the fit does not use still count for byte equality (passthrough layers, identical copies).
        for si, src in enumerate(all_sources[: 1 + len(csrc)]):
            names = list(src.where)
            for name, position in zip(names, fitted_index.positions(names).tolist(), strict=True):
                if position < 0:
                    rest[si][name] = copy_digest(src, name)
                    finish(si, [name])
    non_finite, pass_notes = ev.in_order()
    notes.extend(pass_notes)
    fits = ev.fits.select(ev.fits.finite)
    mdig, *cdig = (DigestMap(pairing.fitted, fitted_index, ev.digests[:, si], d) for si, d in enumerate(rest))
    confirm_copies(mdig, cdig, [msrc, *csrc])
    if non_finite:
        names = sorted({n.tensor for n in non_finite})
        if not len(fits):
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


def _coverage(msrc: CanonicalView, views: list[CanonicalView], fits: FitTable) -> Coverage:
    total = sum(math.prod(info.shape) for _, info in msrc.where.values() if info.dtype in FLOAT_DTYPES)
    compared = int(fits.numel.sum())
    layouts = [f"{v.label}: {v.layout}" for v in views if v.layout]
    return Coverage(elements=total, compared=compared, fraction=compared / total if total else 1.0, layouts=layouts)


def _report(
    msrc: CanonicalView,
    csrc: list[CanonicalView],
    bsrc: CanonicalView | None,
    fits: FitTable,
    mdig: DigestMap,
    cdig: list[DigestMap],
    notes: list[str],
) -> DetectReport:
    labels = [c.label for c in csrc]
    k = len(csrc)
    with_base = bsrc is not None
    part_labels = [*labels, *(["base"] if with_base else [])]
    given = [*labels, *(["base"] if with_base else [])]

    # Coefficients: participants' weights per informative tensor; weighted median, bootstrap interval over tensors.
    flags = fits.informative
    inf = fits.select(flags)
    part_of = fits.participant_weights()
    if not len(inf) and len(fits):
        notes.append("no tensor determines the coefficients (candidates do not differ from the base/each other)")
    weights = inf.numel.astype(float)
    per_tensor = part_of[flags]
    by_layer: dict[int, list[int]] = defaultdict(list)
    for i, name in enumerate(inf.names):
        key = layer_of(name)
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
    any_fit = len(fits) > 0
    rss = total(fits.rss)
    dist2 = fits.dist2.sum(axis=0) if any_fit else np.full(len(given), math.nan)
    m2 = total(fits.raw_gram[:, 0, 0])
    nearest_j = int(np.nanargmin(dist2)) if any_fit else 0
    explained = math.nan if not any_fit else 1 - rss / float(dist2[nearest_j]) if dist2[nearest_j] > 0 else 1.0
    fit_cos = None
    if with_base and any_fit:
        ref = total(fits.ref_energy)
        fit_cos = math.sqrt(max(0.0, 1 - rss / ref)) if ref > 0 else None
    relations = []
    corr_vals = []
    ws = fits.numel.astype(float)
    for j, lab in enumerate(given):
        cs = fits.corr[:, j]
        ok = np.isfinite(cs)
        corr = float(np.average(cs[ok], weights=ws[ok])) if ok.any() else None
        corr_vals.append(corr if corr is not None else -math.inf)
        dist = math.sqrt(float(dist2[j]) / m2) if m2 > 0 else math.nan
        relations.append(Relation(model=lab, correlation=corr, distance=finite(dist)))
    best_corr_j = int(np.argmax(corr_vals)) if corr_vals else 0

    # Residual test, over the tensors that determine the recipe.
    elements = int(inf.numel.sum())
    unexplained = int(inf.unexplained.sum())
    hist = inf.ulp_hist.sum(axis=0)
    conc = concentration(inf, by_layer)
    loose = np.flatnonzero(~flags)
    if len(loose):
        notes.append(
            f"{len(loose)} tensors ({int(fits.numel[loose].sum())} elements) do not determine the coefficients and "
            f"are left out of the aggregate and the residual test ({int(fits.unexplained[loose].sum())} unexplained "
            f"elements under their own fit), e.g. {fits.names[int(loose[0])]}"
        )
    residual = Residual(
        elements=elements,
        differing=int(fits.differing.sum()),
        unexplained=unexplained,
        unexplained_fraction=unexplained / elements if elements else 0.0,
        floor=UNEXPLAINED_FLOOR,
        ulp_histogram=[UlpBin(ulps=b, elements=int(n)) for b, n in zip(ULP_BINS, hist, strict=True)],
        tensors_with_unexplained=int(np.count_nonzero(inf.unexplained > 0)),
        tensors=len(inf),
        concentration=conc,
    )
    endpoints = (1, 2) if (not with_base and k == 2) else ((k + 1, 1) if (with_base and k == 1) else None)
    slerp = H.slerp_hint(inf, endpoints) if endpoints is not None else None  # a hint unless passthrough
    any_informative = len(inf) > 0
    # the informative rows' copy (~0.3 KB each) and their groups are not held through the byte comparisons and rows
    del inf, by_layer, per_tensor, weights

    # Byte equality: identical copies and passthrough layer mapping.
    identical_to = None
    for ci, d in enumerate(cdig):
        if d.same_as(mdig):
            identical_to = labels[ci]
            break
    shared = shared_digests(mdig, cdig)
    mapping, non_layer_ok, n_layers, cand_layers = H.layer_mapping(mdig, cdig, shared)
    passthrough = identical_to is None and non_layer_ok and H.is_passthrough(mapping, n_layers, cand_layers)

    hint_list: list[Hint] = []
    participants = [c.candidate for c in coefs if c.significant]
    if passthrough:
        used = sorted({m.candidate for m in mapping})
        text = mapping_text(mapping, labels)
        hint_list.append(Hint(method="passthrough", evidence=f"layers copied bit for bit: {text}"))
        coefs = passthrough_coefficients(mapping, labels, msrc)
        shares = []  # layers copied whole: the coefficients are the layer shares
        participants = [labels[c] for c in used]
    else:
        if with_base:
            sp = H.sparse_hint(fits)
            if sp is not None:
                hint_list.append(Hint(method=sp[0], evidence=sp[1]))
        if slerp is not None:
            hint_list.append(Hint(method="slerp", evidence=slerp))
        if mapping and len(mapping) < n_layers:
            text = mapping_text(mapping, labels)
            notes.append(f"{len(mapping)} of {n_layers} layers are bit-identical copies of candidate layers: {text}")

    coverage = _coverage(msrc, [msrc, *csrc, *([bsrc] if bsrc else [])], fits)
    if coverage.fraction < 1:
        notes.append(
            f"the fit compared {coverage.compared} of {coverage.elements} weight elements ({coverage.fraction:.2%})"
        )
    emap = expert_map(mdig, cdig, labels, fits, shared)
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
        weights={c.candidate: (c.value, c.ci_low, c.ci_high) for c in coefs if c.significant},
        with_base=with_base,
        mean_nearest=test.mean_nearest if test is not None else None,
        midpoint_ratio=test.midpoint_ratio if test is not None else None,
    )
    verdict, reason, derived_from = decide(ev)
    if verdict in MERGE_VERDICTS and not hint_list:
        hint_list.append(linear_hint(coefs, with_base))

    report = DetectReport(
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
        residual=residual if any_informative else None,
        spread=spread,
        layers=layers,
        relations=relations,
        hints=hint_list,
        layer_mapping=layer_maps(mapping, labels),
        tensors=tensor_rows(fits, part_of),
        coverage=coverage,
        experts=expert_rows(fits, part_of, flags),
        expert_map=emap,
        notes=notes,
    )
    # Not a merge, and not a bit-identical copy: a passthrough merge trained afterwards has no byte-equal layer left
    return report if verdict in MERGE_VERDICTS or identical_to is not None else layer_copy_report(report, msrc, csrc)
