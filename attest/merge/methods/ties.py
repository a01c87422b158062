"""ties -- TIES: top-k magnitude sparsification of each task vector, then sign election."""

from __future__ import annotations

from attest.merge.methods.task_arithmetic_core import task_arithmetic_method

TIES = task_arithmetic_method("ties", sign_consensus=True, sparsification="magnitude", normalize=True, rescale=False)
