"""The `attest detect --json` report (`https://attest.dev/detect-report/v1`, schemas/detect-report.schema.json)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Annotated, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from attest.packed_rows import PackedRows, json_chunks

Verdict = Literal["pure_merge", "merge_plus_training", "derived_not_merge", "undetermined", "not_derived"]
SpreadShape = Literal["flat", "linear_gradient", "piecewise_gradient", "irregular", "single_layer"]
HintMethod = Literal["linear", "task_arithmetic", "slerp", "ties", "dare", "passthrough"]

DETECT_FORMAT = "https://attest.dev/detect-report/v1"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Coefficient(_Model):
    """One participant's weight in the fitted merge: the size-weighted median over informative tensors, with a 95%
    percentile-bootstrap interval over tensors (SPEC.md §6.4)."""

    candidate: str = Field(description="candidate folder as given, or 'base' for the base's implied weight")
    value: float
    ci_low: float | None = Field(default=None, description="null when fewer than two informative tensors")
    ci_high: float | None = None
    significant: bool = Field(
        description="|value| >= 0.05 and the interval excludes 0, over all informative tensors or within one layer"
    )


class Share(_Model):
    """A candidate's share of the candidates' weight (SPEC.md §6.4): in each informative tensor its coefficient over
    the sum of the candidate coefficients, the size-weighted median with its 95% interval. Training that continues
    along the merged delta (fine-tuning on the parents' kind of data) scales every candidate coefficient alike, which
    the fit cannot tell from a task-arithmetic scale; the shares stay those of the merge."""

    candidate: str
    value: float
    ci_low: float | None = None
    ci_high: float | None = None


class LayerPoint(_Model):
    layer: int
    values: list[float] = Field(description="coefficients in the order of `coefficients`")


class Spread(_Model):
    candidate: str
    shape: SpreadShape
    layer_range: float = Field(description="max - min of the per-layer coefficients")
    knots: list[tuple[int, float]] = Field(description="(layer, value) anchors of the flat / gradient fit")


class UlpBin(_Model):
    ulps: str
    elements: int


class Concentration(_Model):
    name: str = Field(description="tensor name, or 'layer N'")
    unexplained: int
    fraction: float


class Residual(_Model):
    """The residual test at the storage precision (SPEC.md §6.3)."""

    elements: int
    differing: int = Field(description="elements where the recomputed recipe, rounded to the stored dtype, differs")
    unexplained: int = Field(description="elements no rounding of the recipe can produce")
    unexplained_fraction: float
    floor: float = Field(description="unexplained fraction at or below which the residual is rounding alone")
    ulp_histogram: list[UlpBin]
    tensors_with_unexplained: int
    tensors: int
    concentration: list[Concentration] = Field(description="tensors and layers with the most unexplained elements")


class MergeTest(_Model):
    """The merge test (SPEC.md §6.5): H0 "derived from a single given model" against H1 "a merge of several"."""

    merge_share: float = Field(
        description="size-weighted median over informative tensors of 1 - RSS_t / min_X |M - X|_t^2: the share of "
        "the squared distance to the nearest single reference (a given model; without a base also the candidates' "
        "mean) that the fitted merge removes"
    )
    ci_low: float | None = Field(default=None, description="95% percentile-bootstrap interval over tensors")
    ci_high: float | None = None
    critical: float = Field(description="critical value of the single-parent null")
    tensors_above: int = Field(description="informative tensors whose own share is at least the critical value")
    tensors: int
    training_share: float = Field(
        description="1 - merge_share: the share of that squared distance the merge leaves to later training"
    )
    rejects_single_parent: bool = Field(description="merge_share >= critical")
    mean_nearest: float | None = Field(
        default=None,
        description="without a base: the size share of informative tensors in which the candidates' mean is the "
        "nearest reference (null with a base)",
    )
    midpoint_ratio: float | None = Field(
        default=None,
        description="without a base: size-weighted median over informative tensors of |M - mean(P)|_t^2 / "
        "(1/k) sum_i |P_i - mean(P)|_t^2, the midpoint test's statistic (null with a base)",
    )
    midpoint_ci_low: float | None = None
    midpoint_ci_high: float | None = None
    midpoint_critical: float | None = Field(default=None, description="critical value of the sibling null")


class Hint(_Model):
    method: HintMethod
    evidence: str


class LayerMap(_Model):
    model_layer: int
    candidate: str
    candidate_layer: int


class Relation(_Model):
    model: str = Field(description="candidate folder, or 'base'")
    correlation: float | None = Field(default=None, description="size-weighted Pearson correlation of the weights")
    distance: float = Field(description="relative distance |M - X| / |M| over the fitted tensors")


class NonFinite(_Model):
    """A tensor holding NaN or infinite elements: left out of the fit (it determines no coefficient)."""

    model: str = Field(description="the model, a candidate folder, or 'base'")
    tensor: str
    count: int = Field(description="non-finite elements in this tensor")


class TensorRow(_Model):
    name: str
    numel: int
    coefficients: list[float | None]
    cond: float | None = None
    cos: float | None = None
    differing: int
    unexplained: int


def _optional(x: float) -> float | None:
    return x if math.isfinite(x) else None


class TensorRows(PackedRows[TensorRow]):
    """detect's per-tensor rows as columns (~100 B per tensor beside the shared name instead of a ~1 KB TensorRow;
    10^5 rows for a large MoE). Non-finite floats stand for null."""

    __slots__ = ("_coefficients", "_cond", "_cos", "_differing", "_names", "_numel", "_unexplained")
    row_model = TensorRow

    def __init__(
        self,
        names: list[str],
        numel: np.ndarray,
        coefficients: np.ndarray,
        cond: np.ndarray,
        cos: np.ndarray,
        differing: np.ndarray,
        unexplained: np.ndarray,
    ) -> None:
        self._names = names
        self._numel, self._coefficients, self._cond, self._cos = numel, coefficients, cond, cos
        self._differing, self._unexplained = differing, unexplained

    def __len__(self) -> int:
        return len(self._names)

    def row(self, i: int) -> TensorRow:
        return TensorRow(
            name=self._names[i],
            numel=int(self._numel[i]),
            coefficients=[_optional(x) for x in self._coefficients[i].tolist()],
            cond=_optional(float(self._cond[i])),
            cos=_optional(float(self._cos[i])),
            differing=int(self._differing[i]),
            unexplained=int(self._unexplained[i]),
        )


Tensors = Annotated[Sequence[TensorRow], TensorRows]


class Coverage(_Model):
    """How much of the model the fit compared (SPEC.md §6.1): under 99% the verdict is never pure_merge."""

    elements: int = Field(description="floating-point weight elements of the model, over its canonical tensors")
    compared: int = Field(description="elements of the tensors paired with every input and fitted")
    fraction: float = Field(description="compared / elements (1 when the model has no floating-point weights)")
    layouts: list[str] = Field(description="inputs whose stored tensors were read through the canonical view")


class ExpertRow(_Model):
    """One routed expert's size-weighted coefficients over its gate, up and down projections (canonical names)."""

    expert: str = Field(description="canonical expert prefix, e.g. model.layers.3.mlp.experts.5")
    layer: int | None = None
    index: int
    numel: int
    coefficients: list[float | None] = Field(description="in the order of `coefficients`")
    unexplained: int


class ExpertRows(PackedRows[ExpertRow]):
    """detect's per-expert rows as columns (one name string and ~60 B per expert). Non-finite floats stand for null,
    a negative layer for none."""

    __slots__ = ("_coefficients", "_experts", "_index", "_informative", "_layer", "_numel", "_unexplained")
    row_model = ExpertRow

    def __init__(
        self,
        experts: list[str],
        layer: np.ndarray,
        index: np.ndarray,
        numel: np.ndarray,
        coefficients: np.ndarray,
        unexplained: np.ndarray,
        informative: np.ndarray,
    ) -> None:
        """`informative[i]`: some tensor of expert i determines coefficients (else its row lists none)."""
        self._experts, self._layer, self._index, self._numel = experts, layer, index, numel
        self._coefficients, self._unexplained, self._informative = coefficients, unexplained, informative

    def __len__(self) -> int:
        return len(self._experts)

    def row(self, i: int) -> ExpertRow:
        layer = int(self._layer[i])
        return ExpertRow(
            expert=self._experts[i],
            layer=layer if layer >= 0 else None,
            index=int(self._index[i]),
            numel=int(self._numel[i]),
            coefficients=[_optional(x) for x in self._coefficients[i].tolist()] if self._informative[i] else [],
            unexplained=int(self._unexplained[i]),
        )


Experts = Annotated[Sequence[ExpertRow], ExpertRows]


class ExpertMatch(_Model):
    """Where one model expert comes from, when experts come from different parents (frankenMoE)."""

    expert: str
    candidate: str
    candidate_expert: str = Field(description="the candidate's expert (or dense MLP) it equals or is nearest to")
    identical: bool = Field(description="bit-identical gate, up and down projections")
    distance: float = Field(description="relative distance |M_e - C_e| / |M_e| (0 when identical)")


class ClaimCheck(_Model):
    """One claimed post-merge step (from the model's own statements) held against the weights (`--claim`)."""

    step: str = Field(description="the claimed step kind: finetune, distill")
    subject: str = Field(description="model root the statement names as its output")
    changed_weights: bool | None = Field(
        default=None, description="whether the weights show change beyond the recorded merge"
    )
    consistent: bool | None = Field(
        default=None,
        description="whether the weights agree with the claim: a step after a recorded merge must start from that "
        "merge and change it (SPEC.md §6.7); null when nothing was recorded to hold it against",
    )
    evidence: str


class PermutationFound(_Model):
    """One permutation the alignment solved (SPEC.md §6.10): how many units moved and how well matches agree."""

    kind: Literal["residual", "mlp_units", "kv_groups", "query_heads"]
    layer: int | None = Field(default=None, description="null for the residual stream")
    size: int = Field(description="units permuted (dimensions, MLP units, KV groups, query heads)")
    moved: int = Field(description="units not at their own index (0: this part was not permuted)")
    cosine: float = Field(description="mean cosine of the model's units with the reference units matched to them")
    runner_up: float | None = Field(default=None, description="mean cosine of each unit's best other match")


class AlignmentReport(_Model):
    """Permutation alignment, tried when the plain fit left weight matrices unrelated to every given model."""

    applied: bool = Field(description="the model was read permuted onto the candidates and fitted again")
    reason: str
    reference: str = Field(description="what the model's units were matched to")
    plain_verdict: Verdict = Field(description="the verdict of the fit before alignment")
    plain_reason: str
    permutations: list[PermutationFound]
    unaligned_tensors: int = Field(description="model tensors of no known role, read as stored")


class DetectReport(_Model):
    """What `attest detect` found; `verdict` and `coefficients` are the stable core."""

    format: Literal["https://attest.dev/detect-report/v1"] = "https://attest.dev/detect-report/v1"
    model: str
    candidates: list[str]
    base: str | None = None
    verdict: Verdict
    reason: str
    derived_from: str | None = Field(default=None, description="the given model it derives from (not a merge)")
    coefficients: list[Coefficient]
    coefficient_sum: float | None = Field(
        default=None, description="sum of the candidate coefficients (1 for a normalized merge)"
    )
    shares: list[Share] = Field(
        default_factory=list,
        description="each candidate's share of the candidates' weight (two or more candidates; empty for passthrough)",
    )
    explained: float | None = Field(
        default=None,
        description="1 - RSS(fit) / min_X |M - X|^2: share of the nearest given model's distance explained",
    )
    fit_cos: float | None = Field(default=None, description="cos(M - B, fit - B) pooled over tensors (with a base)")
    merge_test: MergeTest | None = Field(default=None, description="null when no tensor is informative")
    residual: Residual | None = None
    spread: list[Spread]
    layers: list[LayerPoint]
    relations: list[Relation]
    hints: list[Hint]
    layer_mapping: list[LayerMap]
    tensors: Tensors
    coverage: Coverage | None = Field(default=None, description="always written by this version")
    experts: Experts = Field(default_factory=list, description="per routed expert (MoE models)")
    expert_map: list[ExpertMatch] = Field(
        default_factory=list, description="each expert's source, when experts come from different candidates"
    )
    notes: list[str]
    non_finite: list[NonFinite] = Field(
        default_factory=list, description="tensors with NaN/Inf elements in some input, left out of the fit"
    )
    claims: list[ClaimCheck] | None = Field(default=None, description="with --claim: the claimed steps, checked")
    alignment: AlignmentReport | None = Field(
        default=None, description="permutation alignment (SPEC.md §6.10); null when the plain fit did not need it"
    )


def report_json_chunks(report: DetectReport) -> Iterator[str]:
    """`report.model_dump_json(indent=2)` in pieces, the per-tensor and per-expert rows one at a time (json_chunks):
    neither every row model nor the whole text is held at once (10^5 tensors: ~100 MB of rows, ~30 MB of text)."""
    return json_chunks(report, ["tensors", "experts"], indent=2)


def display_names(report: DetectReport) -> dict[str, str]:
    """How the text summary and the plot name the model and the participants: each folder by its last path component
    (the full path when two share one), the base as `base (<folder name>)`."""
    folders = [report.model, *report.candidates, *([report.base] if report.base else [])]
    short = {f: (f.rstrip("/").rsplit("/", 1)[-1] or f) for f in folders}
    counts: dict[str, int] = {}
    for v in short.values():
        counts[v] = counts.get(v, 0) + 1
    out = {f: (s if counts[s] == 1 else f) for f, s in short.items()}
    if report.base is not None:
        out["base"] = f"base ({out[report.base]})"
    return out
