"""The merge-method registry: one module per method, looked up by the recipe's `merge_method`."""

from __future__ import annotations

from attest.errors import InputError
from attest.merge.methods.base import MergeMethod, TensorGroup
from attest.merge.methods.breadcrumbs import BREADCRUMBS
from attest.merge.methods.breadcrumbs_ties import BREADCRUMBS_TIES
from attest.merge.methods.dare_linear import DARE_LINEAR
from attest.merge.methods.dare_ties import DARE_TIES
from attest.merge.methods.della import DELLA
from attest.merge.methods.della_linear import DELLA_LINEAR
from attest.merge.methods.karcher import KARCHER
from attest.merge.methods.linear import LINEAR
from attest.merge.methods.model_stock import MODEL_STOCK
from attest.merge.methods.nuslerp import NUSLERP
from attest.merge.methods.passthrough import PASSTHROUGH
from attest.merge.methods.slerp import SLERP
from attest.merge.methods.task_arithmetic import TASK_ARITHMETIC
from attest.merge.methods.ties import TIES

METHODS: dict[str, MergeMethod] = {
    m.name: m
    for m in (
        LINEAR,
        SLERP,
        NUSLERP,
        TASK_ARITHMETIC,
        TIES,
        DARE_TIES,
        DARE_LINEAR,
        BREADCRUMBS,
        BREADCRUMBS_TIES,
        DELLA,
        DELLA_LINEAR,
        MODEL_STOCK,
        KARCHER,
        PASSTHROUGH,
    )
}


def get_method(name: str) -> MergeMethod:
    try:
        return METHODS[name]
    except KeyError:
        raise InputError(None, f"unknown merge_method {name!r} (supported: {', '.join(sorted(METHODS))})") from None


__all__ = ["METHODS", "MergeMethod", "TensorGroup", "get_method"]
