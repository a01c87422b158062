"""Layer copies after training (SPEC.md §6.6): a passthrough merge (layers copied from candidates, renumbered or
stacked, as in depth up-scaling) followed by training keeps no bit-identical layer, so the byte mapping finds none,
and the same-name fit compares layers that were never copied into each other: such a model used to read
`not_derived`. Here each model layer is matched to the candidate layer it is nearest on a fixed sample of every
tensor's elements; a layer counts as a copy only when that nearest is clearly nearer than every other candidate
layer. A fine-tune of one candidate maps every layer to the same layer of that candidate (not a passthrough); a
sibling of the candidates is about as near to each of them, so its layers do not map."""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from attest.checkpoint.canonical import PER_EXPERT
from attest.checkpoint.reader import TensorTable, as_float64
from attest.forensics.hints import Mapping
from attest.forensics.pairing import FLOAT_DTYPES, layer_of
from attest.forensics.report import DetectReport, Hint
from attest.forensics.rows import layer_maps, mapping_text, passthrough_coefficients

LAYER_SAMPLE = 1 << 16
"""Elements sampled per layer, spread evenly over its tensors (each at least RUN_MIN, in SAMPLE_RUNS runs at fixed
fractions 0, 1/4, 1/2, 3/4 of it): at most ~0.5 MiB of float64 per layer whatever its expert count, and every
tensor is read once, a few pages of it."""
SAMPLE_RUNS = 4
RUN_MIN = 16
MANY_TENSORS = 64
"""A layer of more tensors than this takes one run from the middle of each: many tensors of a few dozen elements,
where four runs would quadruple the reads for no better estimate. Routed experts (10^5 tensors in a 397B MoE) are
left out of a layer that has other tensors: layers are copied whole, and its attention identifies the source."""
COPY_MARGIN = 0.25
"""A model layer is a copy of its best-scoring candidate layer (`_score`) when that score is below this share of the
second best. A copy trained afterwards sits at |T|^2 from its source and about |T|^2 + |source - other|^2 from any
other layer; a sibling of two candidates sits about equally far from both (battery: SPEC.md §6.6)."""


@dataclass(frozen=True)
class LayerCopies:
    mapping: list[Mapping]
    worst_margin: float  # the largest best / second-best score ratio over the layers


Signature = tuple[tuple[str, tuple[int, ...]], ...]


@dataclass(frozen=True)
class _Layer:
    sig: Signature  # its tensors' (prefix + suffix, shape), sorted: the dtype may differ (the samples are float64)
    samples: list[np.ndarray]  # one per tensor, in signature order, at positions that depend only on the shape


def _layer_samples(table: TensorTable) -> dict[int, _Layer]:
    """Layer index -> its signature and samples. Two layers of one signature are sampled at the same elements."""
    names: dict[int, dict[str, str]] = defaultdict(dict)
    experts: dict[int, dict[str, str]] = defaultdict(dict)
    for name in table.where:
        key = layer_of(name)
        if key is not None and table.info(name).dtype in FLOAT_DTYPES and table.info(name).nbytes > 0:
            (experts if PER_EXPERT.match(name) else names)[key.index][key.prefix + key.suffix] = name
    for index, routed in experts.items():  # a layer is copied whole: its other tensors identify it, when it has any
        if not names.get(index):
            names[index] = routed
    out: dict[int, _Layer] = {}
    for index, tensors in names.items():
        runs = SAMPLE_RUNS if len(tensors) <= MANY_TENSORS else 1
        per_run = max(RUN_MIN, LAYER_SAMPLE // (runs * len(tensors)))
        sig: list[tuple[str, tuple[int, ...]]] = []
        samples: list[np.ndarray] = []
        for suffix in sorted(tensors):
            name = tensors[suffix]
            n = math.prod(table.info(name).shape)
            sig.append((suffix, tuple(table.info(name).shape)))
            if n <= runs * per_run:
                samples.append(as_float64(table.array_range(name, 0, n)))
                continue
            starts = [n * r // runs for r in range(runs)] if runs > 1 else [(n - per_run) // 2]
            samples.append(np.concatenate([as_float64(table.array_range(name, a, a + per_run)) for a in starts]))
        out[index] = _Layer(tuple(sig), samples)
    return out


def _score(model: _Layer, cand: _Layer) -> float:
    """The median over the layer's tensors of the mean squared difference per compared element (positions where
    either value is not finite are left out): one outlier element or one retrained tensor moves one vote, not the
    score (a pooled sum of squares would follow it)."""
    per_tensor = []
    for m, c in zip(model.samples, cand.samples, strict=True):
        ok = np.isfinite(m) & np.isfinite(c)
        if ok.any():
            per_tensor.append(float(np.mean((m[ok] - c[ok]) ** 2)))
    return float(np.median(per_tensor)) if per_tensor else math.nan


def copied_layers(msrc: TensorTable, csrc: Sequence[TensorTable]) -> LayerCopies | None:
    """Every model layer matched to the one candidate layer of the same signature that it is clearly nearest; None
    when some layer has no clear nearest: fewer than two candidate layers to compare, a score that is not finite,
    or a nearest that is not below COPY_MARGIN of the second nearest (an exact tie at 0 included)."""
    model = _layer_samples(msrc)
    cands = [_layer_samples(c) for c in csrc]
    if not model:
        return None
    mapping: list[Mapping] = []
    worst = 0.0
    for j, layer in sorted(model.items()):
        scored = sorted(
            (_score(layer, cl), c, i)
            for c, layers in enumerate(cands)
            for i, cl in layers.items()
            if cl.sig == layer.sig
        )
        if len(scored) < 2 or not all(math.isfinite(d) for d, _, _ in scored[:2]):
            return None
        (best, c, i), (second, _, _) = scored[0], scored[1]
        if not (second > 0 and best < COPY_MARGIN * second):
            return None
        worst = max(worst, best / second)
        mapping.append(Mapping(j, c, i))
    return LayerCopies(mapping, worst)


def layer_copy_report(report: DetectReport, msrc: TensorTable, csrc: Sequence[TensorTable]) -> DetectReport:
    """A passthrough merge followed by training, which the byte mapping and the same-name fit cannot see (SPEC.md
    §6.6): the report with the layer copies found on samples, or unchanged."""
    copies = copied_layers(msrc, csrc)
    if copies is None:
        return report
    sources = {m.candidate for m in copies.mapping}
    if len(sources) < 2 and all(m.model_layer == m.candidate_layer for m in copies.mapping):
        return report  # every layer from one candidate at its own index: a fine-tune of it, not a passthrough
    labels = report.candidates
    text = mapping_text(copies.mapping, labels)
    coefs = passthrough_coefficients(copies.mapping, labels, msrc)
    who = ", ".join(c.candidate for c in coefs if c.significant)
    return report.model_copy(
        update={
            "verdict": "merge_plus_training",
            "reason": f"a passthrough merge of {who}, then changed: not every layer is a bit-identical copy, but "
            f"every layer is nearest one candidate layer on a sample of its elements, at most "
            f"{copies.worst_margin:.3f} of its score against any other (a copy: below {COPY_MARGIN}); "
            f"before: {report.verdict} ({report.reason})",
            "derived_from": None,
            "coefficients": coefs,
            "shares": [],
            "hints": [Hint(method="passthrough", evidence=f"layers copied, then changed: {text}")],
            "layer_mapping": layer_maps(copies.mapping, labels),
        }
    )
