"""Forensics: find undisclosed merges from the weights alone (SPEC.md §6).

`detect(model, candidates, base)` fits the model as a merge of candidate parents, tensor by tensor, in one
streaming pass, and says whether the residual is rounding, training, or no merge at all.
"""

from attest.forensics.detect import detect
from attest.forensics.report import DetectReport

__all__ = ["DetectReport", "detect"]
