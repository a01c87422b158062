"""Streaming merge engine for mergekit 0.1.5 recipes: parse, plan, merge tensor by tensor, write atomically."""

from attest.merge.engine import (
    MergedTensor,
    MergeResult,
    compute_tensors,
    open_parents,
    replay_options,
    run_merge,
)
from attest.merge.planner import MergePlan, TensorPlan, plan_merge
from attest.statements.recipe import MergeRecipe, load_recipe, parse_recipe

__all__ = [
    "MergePlan",
    "MergeRecipe",
    "MergeResult",
    "MergedTensor",
    "TensorPlan",
    "compute_tensors",
    "load_recipe",
    "open_parents",
    "parse_recipe",
    "plan_merge",
    "replay_options",
    "run_merge",
]
