"""Verdict rules (SPEC.md §6.5): four tests with stated null models, then relatedness. Pure functions of the evidence.

* The **residual test** (§6.3) tests H0 "M is the fitted recipe rounded to its dtype": under H0 no element is
  unexplained (the floor absorbs stray elements); every non-merge and every merge followed by training measured in
  `benchmarks/battery_forensics.py` leaves far more.
* The **merge test** tests H0 "M derives from a single given model" (a fine-tune, a distillation, a sibling
  fine-tune of the base) against H1 "M is a merge of at least two given models, perhaps trained afterwards". Its
  statistic is the merge share: the size-weighted median over informative tensors of the share of the squared
  distance to the nearest single given model that the fitted merge removes. A merge puts one recipe in every tensor,
  so the median tensor carries it; a fine-tune correlates with its siblings' deltas only through what their training
  shared, which removes a small share. The critical values are set from the null shares of the battery's
  calibration families (8-15) and the error rates measured on its scored families (0-7), which did not set them
  (BENCHMARKS.md: false-merge rate, power).
* The **midpoint test** (no base, M nearest the candidates' mean) tests H0 "M is a fine-tune of the candidates'
  common base" against "a near-even merge of them, perhaps trained": the merge share is blind there, because the mean
  is both the even merge and the base's stand-in. Where neither test calls a merge the verdict is `undetermined`.
* The **second-parent test** (M nearest a candidate X) tests H0 "a fine-tune or distillation of X" by the weight
  another candidate takes in the fit: a sparsified merge followed by training hides from the merge share (its
  per-element recipe is residual to a dense fit) but not from its weights.
"""

from __future__ import annotations

from dataclasses import dataclass

MERGE_VERDICTS = ("pure_merge", "merge_plus_training")
"""The verdicts that call M a merge."""

SIGNIFICANT_WEIGHT = 0.05
"""A participant counts when its weight is at least this and its confidence interval excludes 0."""

MERGE_SHARE_CRITICAL = 0.5
"""Merge test without a base: reject "single parent" when the merge share is at least this. The references are the
given models and the candidates' mean (standing in for their unknown common base, near which a sibling fine-tune
sits). Under the null (fine-tunes, distillations and siblings) the share stays below it: calibration families 8-15,
max 0.34; scored families 0-7, max 0.35 (SPEC.md §6.5, BENCHMARKS.md)."""

MERGE_SHARE_CRITICAL_BASE = 0.4
"""The same with a base, where the base is a reference and the null shares are lower: calibration families 8-15 (192
null fits) max 0.285, scored families 0-7 max 0.29; the critical value is 0.1 above them (the two sets' maxima differ
by 0.01). It was 0.5, which missed two 4/7 merges trained 50 SFT steps at lr 1e-3 (shares 0.49 and 0.50)."""

MIDPOINT_CRITICAL = 0.5
"""Midpoint test without a base, read where the candidates' mean is M's nearest reference (there the merge share
cannot see an even merge: the mean is both the merge and the sibling's stand-in). Statistic: the size-weighted median
over tensors of |M - P̄|^2 / ((1/k) sum_i |P_i - P̄|^2). A merge with weights l_i has M - P̄ = sum_i (l_i - 1/k)
(P_i - P̄): with two candidates 4 (l_1 - 1/2)^2 (4/7 : 3/7 gives 0.020, 1:1 gives 0), plus what training adds. A
sibling C = base + T_c sits at |T_c - S/2|^2 from the mean (S = T_a + T_b, the candidates' deltas), at least
(1 - cos^2)|S|^2/4 with cos the cosine of T_c and S, while the denominator is |T_a - T_b|^2/4 <= |S|^2/4 when the
candidates' deltas do not oppose: a sibling reads below 0.5 only if its own training points along the candidates'
summed deltas with cosine above 0.71. Battery: 48 siblings fitted without a base, all nearest the mean: min 1.46 on
calibration families 8-15, 1.42 on scored families 0-7, where merges the test found read at most 0.30
(BENCHMARKS.md)."""

SECOND_PARENT_CRITICAL = 0.1
"""Second-parent test (with a base): M is nearest candidate X, and another candidate Y enters the fit with a weight
of at least this, its model-wide interval above 0. Under its null (a fine-tune or distillation of X) Y's delta
enters only through what the training shares with Y's: the battery's 144 such fits per 8 families (children and
distillations of ft_a, 5 to 50 AdamW steps at lr 1e-4 and 1e-3, with and without the base) give Y at most 0.042 on
both calibration families 8-15 and scored families 0-7. A sparsified merge (TIES, DARE) followed by training needs
it: its recipe differs per element, which a dense fit leaves as residual, so its merge share stays near the null's
(DARE 0.6 : 0.4 at density 0.5 reads ~0.3) while each candidate's weight is still estimated."""

UNEXPLAINED_FLOOR = 1e-4
"""Unexplained-element fraction at or below which the residual is rounding alone. Rounding of the recipe in any
order leaves 0 unexplained elements by construction; the floor absorbs stray elements (e.g. candidates stored in a
wider dtype than the merge was computed in). Short training flips whole percents of elements."""

MIN_COVERAGE = 0.99
"""Share of the model's weight elements the fit must compare for a pure_merge verdict: what was not compared counts
as unexplained (a merge whose routed experts were left out would otherwise hide any change to them)."""

RELATED_CORRELATION = 0.5
"""Weights correlated at least this much with a given model share its initialisation (independent inits: ~0)."""


@dataclass(frozen=True)
class Evidence:
    participants: list[str]  # significant participants (candidates, and "base" with a base)
    merge_share: float  # size-weighted median over tensors of 1 - RSS_t / min_X |M - X|_t^2
    critical: float  # the merge test's critical value
    unexplained_fraction: float
    concentration: str  # where unexplained elements concentrate, for the reason text
    identical_to: str | None
    passthrough: bool
    sparse: str | None  # "ties" / "dare" when the exact-zero pattern says the merge was sparsified
    nearest: str  # the given model with the smallest |M - X|
    max_correlation: float
    most_correlated: str
    coverage: float = 1.0  # compared / all floating-point weight elements of the model
    weights: dict[str, tuple[float, float | None, float | None]] | None = None  # significant participant: value, CI
    with_base: bool = False
    mean_nearest: float | None = None  # no base: size share of tensors whose nearest reference is the candidates' mean
    midpoint_ratio: float | None = None  # no base: median |M - mean|^2 / mean_i |P_i - mean|^2


def decide(ev: Evidence) -> tuple[str, str, str | None]:
    """(verdict, reason, derived_from); a pure merge over less than MIN_COVERAGE of the weights is not called pure."""
    verdict, reason, derived_from = _decide(ev)
    if verdict == "pure_merge" and ev.coverage < MIN_COVERAGE:
        return (
            "merge_plus_training",
            f"{reason}; but only {ev.coverage:.2%} of the weight elements were compared (under {MIN_COVERAGE:.0%}), "
            "and the rest count as unexplained",
            None,
        )
    return verdict, reason, derived_from


def _decide(ev: Evidence) -> tuple[str, str, str | None]:
    if ev.identical_to is not None:
        return "derived_not_merge", f"bit-identical to {ev.identical_to}", ev.identical_to
    if ev.passthrough:
        return "pure_merge", "passthrough: every layer is a bit-identical copy of a candidate layer", None
    if ev.sparse is not None and len(ev.participants) >= 2:
        return (
            "pure_merge",
            f"a sparsified ({ev.sparse}) merge of {', '.join(ev.participants)}: the exact-zero pattern identifies it; "
            "the residual test assumes a dense recipe and does not apply, so later training is not ruled out",
            None,
        )
    if len(ev.participants) >= 2:
        who = ", ".join(ev.participants)
        if ev.unexplained_fraction <= UNEXPLAINED_FLOOR:
            return (
                "pure_merge",
                f"a merge of {who}: the weights are the fitted recipe up to rounding "
                f"({ev.unexplained_fraction:.2e} of elements unexplained, floor {UNEXPLAINED_FLOOR:.0e})",
                None,
            )
        if ev.merge_share >= ev.critical:
            return (
                "merge_plus_training",
                f"a merge of {who}, then changed: the merge removes {ev.merge_share:.2f} of the squared distance "
                f"to the nearest given model in the median tensor (single-parent null: below {ev.critical:.2f}); "
                f"the rest, {1 - ev.merge_share:.2f}, is later training; {ev.unexplained_fraction:.2%} of elements "
                f"are beyond any rounding of the recipe, {ev.concentration}",
                None,
            )
    if ev.mean_nearest is not None and ev.mean_nearest >= 0.5 and ev.max_correlation >= RELATED_CORRELATION:
        return _near_the_mean(ev)
    second = _second_parent(ev)
    if second is not None:
        return second
    if ev.max_correlation >= RELATED_CORRELATION:
        if not ev.participants:
            why = "no participant's weight is determined"
        elif len(ev.participants) == 1:
            why = f"only {ev.participants[0]} takes part"
        else:
            why = (
                f"the fitted merge removes only {ev.merge_share:.2f} of the squared distance to the nearest given "
                f"model in the median tensor, within what single-parent fine-tunes show (below {ev.critical:.2f})"
            )
        return (
            "derived_not_merge",
            f"derived from {ev.nearest} (nearest given model; correlation {ev.max_correlation:.3f}) but not a merge: "
            f"{why}",
            ev.nearest,
        )
    return (
        "not_derived",
        f"unrelated: the weights correlate at most {ev.max_correlation:.3f} with any given model "
        f"({ev.most_correlated})",
        None,
    )


def _near_the_mean(ev: Evidence) -> tuple[str, str, str | None]:
    """Without a base, M nearest the candidates' mean: a fine-tune of their unknown common base sits there, and so
    does a near-even merge of them after training; the midpoint test separates the two only while M stays nearer
    the mean than a sibling can (SPEC.md §6.5)."""
    ratio = ev.midpoint_ratio
    where = f"in tensors holding {ev.mean_nearest:.0%} of the elements"
    if len(ev.participants) >= 2 and ratio is not None and ratio <= MIDPOINT_CRITICAL:
        return (
            "merge_plus_training",
            f"a near-even merge of {', '.join(ev.participants)}, then changed: the weights lie nearer the candidates' "
            f"mean than to any of them ({where}), at {ratio:.3f} of the candidates' own squared distance to it in "
            f"the median tensor (a fine-tune of their common base: above {MIDPOINT_CRITICAL:.2f}); "
            f"{ev.unexplained_fraction:.2%} of elements are beyond any rounding of the recipe, {ev.concentration}",
            None,
        )
    shown = "undetermined" if ratio is None else f"{ratio:.3f}"
    return (
        "undetermined",
        f"related to the candidates (correlation {ev.max_correlation:.3f}) and nearest their mean ({where}), where a "
        f"fine-tune of their common base and a near-even merge of them followed by training both sit: the weights "
        f"are at {shown} of the candidates' own squared distance to their mean in the median tensor (a merge is "
        f"read only at or below {MIDPOINT_CRITICAL:.2f}); give their base (--base) to tell the two apart",
        None,
    )


def _second_parent(ev: Evidence) -> tuple[str, str, str | None] | None:
    """M nearest candidate X while another candidate enters with a weight no fine-tune of X shows: a merge of both,
    then trained (SECOND_PARENT_CRITICAL). None when the rule does not apply."""
    weights = ev.weights or {}
    if (
        not ev.with_base
        or ev.nearest == "base"
        or ev.nearest not in weights
        or ev.max_correlation < RELATED_CORRELATION
    ):
        # Only with a base, and M nearest a candidate: without a base, a sibling of unequally trained candidates
        # sits nearest the less trained one with a weight on the other (its null here is not the children's).
        return None
    others = [
        (c, w)
        for c, w in weights.items()
        if c not in (ev.nearest, "base") and w[0] >= SECOND_PARENT_CRITICAL and w[1] is not None and w[1] > 0
    ]  # positive weights with a model-wide interval above 0: a negative one is continued training along X - Y too
    if not others:
        return None
    shown = ", ".join(
        f"{c} {w[0]:.3f}" + (f" [{w[1]:.3f}, {w[2]:.3f}]" if w[1] is not None and w[2] is not None else "")
        for c, w in others
    )
    return (
        "merge_plus_training",
        f"a merge of {ev.nearest} and {', '.join(c for c, _ in others)}, then changed: the weights are nearest "
        f"{ev.nearest}, but {shown} enters the fit, where a fine-tune or distillation of one candidate gives the "
        f"others below {SECOND_PARENT_CRITICAL:.2f}; the merge share ({ev.merge_share:.2f}) stays under its critical "
        f"value as it does when the recipe differs per element (a sparsified merge: TIES, DARE); "
        f"{ev.unexplained_fraction:.2%} of elements are beyond any rounding of the dense fit, {ev.concentration}",
        None,
    )
