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
