"""The replay report (JSON schema `replay-report.schema.json`): a verdict in plain words and one row per tensor."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field


class TensorStatus(StrEnum):
    EXACT = "exact"
    WITHIN_TOLERANCE = "within_tolerance"
    MISMATCH = "mismatch"
    MISSING = "missing"  # the recipe produces it; the candidate lacks it
    UNEXPECTED = "unexpected"  # the candidate has it; the recipe does not produce it


class Verdict(StrEnum):
    REPRODUCED = "reproduced"
    REPRODUCED_WITHIN_TOLERANCE = "reproduced_within_tolerance"
    NOT_REPRODUCED = "not_reproduced"
    CANNOT_REPLAY = "cannot_replay"


class TensorComparison(BaseModel):
    """One tensor; or `config.json` (mismatch) or an extra weight file (unexpected), named by its path."""

    name: str
    status: TensorStatus
    dtype: str | None = None
    shape: list[int] | None = None
    differing_elements: int = 0
    max_ulps: int | None = Field(default=None, description="Largest distance in ulps of the storage dtype")
    detail: str | None = None


class ReplayCounts(BaseModel):
    exact: int = 0
    within_tolerance: int = 0
    mismatch: int = Field(default=0, description="mismatch + missing + unexpected")


class ReplayReport(BaseModel):
    format: Literal["attest-replay-report/v1"] = "attest-replay-report/v1"
    verdict: Verdict
    summary: str = Field(description="The verdict in one plain sentence")
    candidate: str
    merge_method: str
    device: str
    mask_generator: str | None = Field(default=None, description="attest (keyed) or mergekit (global, CPU)")
    seed: int | None = None
    tolerance_ulps: int
    tie_order: str = Field(default="mergekit", description="How magnitude cutoffs broke ties: mergekit or stable")
    layout: str | None = Field(
        default=None,
        description="Mixture-of-experts models only: the expert layout recomputed, mergekit (fused, as mergekit 0.1.5 "
        "writes under transformers 5) or per-expert (as the parents store them)",
    )
    counts: ReplayCounts
    mismatched: list[str] = Field(
        default_factory=list,
        description="Names of tensors that are not reproduced, `config.json` when it differs, and extra weight files",
    )
    tensors: list[TensorComparison]
    notes: list[str] = Field(default_factory=list)
