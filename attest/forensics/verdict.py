"""Verdict rules and their thresholds (SPEC.md §6.5). Pure functions of the aggregated evidence."""

from __future__ import annotations

from dataclasses import dataclass

SIGNIFICANT_WEIGHT = 0.05
"""A participant counts when its weight is at least this and its confidence interval excludes 0."""

MERGE_EXPLAINED = 0.75
"""The fitted merge must remove at least this share of the squared distance to the nearest single given model."""

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
    explained: float  # 1 - RSS / min_X |M - X|^2
    unexplained_fraction: float
    concentration: str  # where unexplained elements concentrate, for the reason text
    identical_to: str | None
    passthrough: bool
    sparse: str | None  # "ties" / "dare" when the exact-zero pattern says the merge was sparsified
    nearest: str  # the given model with the smallest |M - X|
    max_correlation: float
    most_correlated: str
    coverage: float = 1.0  # compared / all floating-point weight elements of the model


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
    merge = len(ev.participants) >= 2 and ev.explained >= MERGE_EXPLAINED
    if merge:
        who = ", ".join(ev.participants)
        if ev.unexplained_fraction <= UNEXPLAINED_FLOOR:
            return (
                "pure_merge",
                f"a merge of {who} (explains {ev.explained:.4f} of the distance); residual at the rounding floor "
                f"({ev.unexplained_fraction:.2e} of elements unexplained, floor {UNEXPLAINED_FLOOR:.0e})",
                None,
            )
        return (
            "merge_plus_training",
            f"a merge of {who} (explains {ev.explained:.4f} of the distance), then changed: "
            f"{ev.unexplained_fraction:.2%} of elements are beyond any rounding of the recipe; {ev.concentration}",
            None,
        )
    if ev.max_correlation >= RELATED_CORRELATION:
        if not ev.participants:
            why = "no participant's weight is determined"
        elif len(ev.participants) == 1:
            why = f"only {ev.participants[0]} takes part"
        else:
            why = f"the best merge explains only {ev.explained:.2f} of the distance"
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
