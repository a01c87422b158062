"""breadcrumbs_ties -- Model breadcrumbs with TIES sign election."""

from __future__ import annotations

from attest.merge.methods.task_arithmetic_core import task_arithmetic_method

BREADCRUMBS_TIES = task_arithmetic_method(
    "breadcrumbs_ties", sign_consensus=True, sparsification="magnitude_outliers", normalize=False, rescale=False
)
