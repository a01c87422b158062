"""The verdict rules (SPEC.md §6.5) as pure functions of the evidence: the midpoint test and `undetermined`."""

from __future__ import annotations

from dataclasses import replace

from attest.forensics.verdict import MIDPOINT_CRITICAL, Evidence, decide

# Without a base, nearest the candidates' mean, both candidates significant, trained (unexplained far above the floor)
# and kept by the merge test: what an even merge followed by training and a sibling fine-tune of the base both give.
NEAR_MEAN = Evidence(
    participants=["ft_a", "ft_b"],
    merge_share=0.01,
    critical=0.5,
    unexplained_fraction=0.2,
    concentration="most in nowhere in particular",
    identical_to=None,
    passthrough=False,
    sparse=None,
    nearest="ft_a",
    max_correlation=0.9,
    most_correlated="ft_a",
    mean_nearest=1.0,
    midpoint_ratio=0.001,
)


def test_an_even_merge_then_trained_is_found_without_a_base() -> None:
    """Regression: a 1:1 linear merge followed by one SFT step at lr 1e-5 read derived_not_merge from ft_a without a
    base (the mean of the candidates is the merge and the sibling's reference at once, so the merge share was ~0),
    and full_disclosure passed it as a disclosed fine-tune of ft_a."""
    verdict, reason, derived_from = decide(NEAR_MEAN)
    assert verdict == "merge_plus_training" and derived_from is None
    assert "near-even merge of ft_a, ft_b" in reason and "0.001" in reason


def test_near_the_mean_and_far_from_it_is_undetermined() -> None:
    """Past the midpoint test's critical value a sibling and a trained even merge read alike: say so, name no parent,
    and point at the missing base (a false `derived_not_merge` would pass a disclosure policy)."""
    for ratio in (MIDPOINT_CRITICAL * 1.01, 1.5, None):
        verdict, reason, derived_from = decide(replace(NEAR_MEAN, midpoint_ratio=ratio))
        assert verdict == "undetermined" and derived_from is None, ratio
        assert "--base" in reason and "common base" in reason
    verdict, _, _ = decide(replace(NEAR_MEAN, participants=["ft_a"]))  # one participant: still not a single parent
    assert verdict == "undetermined"


def test_the_midpoint_test_applies_only_nearest_the_mean() -> None:
    """With a base (no mean reference) or nearer a candidate than the mean, the rules are the merge test's."""
    assert decide(replace(NEAR_MEAN, mean_nearest=None))[:3:2] == ("derived_not_merge", "ft_a")
    assert decide(replace(NEAR_MEAN, mean_nearest=0.4))[:3:2] == ("derived_not_merge", "ft_a")
    # unrelated weights stay not_derived even if the mean happens to be nearest
    assert decide(replace(NEAR_MEAN, max_correlation=0.01))[0] == "not_derived"
    # the merge test and the residual test still come first
    assert decide(replace(NEAR_MEAN, merge_share=0.9, midpoint_ratio=2.0))[0] == "merge_plus_training"
    assert decide(replace(NEAR_MEAN, unexplained_fraction=0.0, midpoint_ratio=2.0))[0] == "pure_merge"


# With a base, nearest ft_a, trained, the merge test kept (a dense fit leaves a sparsified recipe's per-element
# variation as residual), while ft_b still enters the fit with a clear weight.
SECOND = replace(
    NEAR_MEAN,
    merge_share=0.3,
    critical=0.4,
    mean_nearest=None,
    midpoint_ratio=None,
    weights={"ft_a": (0.61, 0.6, 0.62), "ft_b": (0.4, 0.39, 0.41)},
    with_base=True,
)


def test_a_second_candidate_beyond_any_fine_tune_makes_a_merge() -> None:
    """Regression: a real DARE merge (0.6 : 0.4) of ft_a and ft_b trained 5 SFT steps at lr 1e-4 read
    derived_not_merge from ft_a with the base (merge share 0.32 under 0.4), although ft_b entered with 0.40."""
    verdict, reason, derived_from = decide(SECOND)
    assert verdict == "merge_plus_training" and derived_from is None
    assert "merge of ft_a and ft_b" in reason and "ft_b 0.400 [0.390, 0.410]" in reason


def test_the_second_parent_test_keeps_fine_tunes() -> None:
    """A fine-tune of ft_a gives ft_b a weight below the critical value (at most 0.042 in the battery), the base does
    not count as a second candidate, and the rule needs M nearest a candidate that takes part."""
    from attest.forensics.verdict import SECOND_PARENT_CRITICAL

    child = replace(SECOND, weights={"ft_a": (1.06, 1.0, 1.1), "ft_b": (SECOND_PARENT_CRITICAL * 0.99, 0.08, 0.11)})
    assert decide(child)[:3:2] == ("derived_not_merge", "ft_a")
    with_base_weight = replace(SECOND, weights={"ft_a": (1.0, 0.9, 1.1), "base": (-0.5, -0.6, -0.4)})
    assert decide(with_base_weight)[0] == "derived_not_merge"
    assert decide(replace(SECOND, nearest="base"))[:3:2] == ("derived_not_merge", "base")
    # Review findings: a negative weight is also continued training along X - Y (Y an ancestor of X); without a
    # base a sibling of unequally trained candidates sits nearest the less trained one with a weight on the other;
    # a weight significant through one layer only has a model-wide interval reaching 0.
    negated = replace(SECOND, weights={"ft_a": (1.0, 0.9, 1.1), "ft_b": (-0.3, -0.35, -0.25)})
    assert decide(negated)[0] == "derived_not_merge"
    assert decide(replace(SECOND, with_base=False))[0] == "derived_not_merge"
    one_layer = replace(SECOND, weights={"ft_a": (0.9, 0.8, 1.0), "ft_b": (0.12, -0.01, 0.3)})
    assert decide(one_layer)[0] == "derived_not_merge"


def test_nearest_the_base_is_not_a_second_parent_case() -> None:
    """Regression (battery, families 8-15): siblings and distillations of the base trained 50 steps at lr 1e-3 give
    ft_a and ft_b weights ~0.2 beside the base's ~0.6; nearest the base they are not "derived from a candidate", and
    reading the base as the first parent called 16 of them merges."""
    sibling = replace(SECOND, nearest="base", weights={"ft_a": (0.2, 0.18, 0.22), "ft_b": (0.24, 0.2, 0.26),
                                                       "base": (0.6, 0.55, 0.65)})  # fmt: skip
    assert decide(sibling)[:3:2] == ("derived_not_merge", "base")
