"""torch tensors as attest's forensics reads stored tensors (attest.checkpoint.reader.TensorTable.array): numpy
arrays, bf16 as its uint16 bit patterns. Tests build tensors in torch and hand them to the numpy-only sweeps."""

from __future__ import annotations

import numpy as np
import torch


def stored(t: torch.Tensor) -> np.ndarray:
    """A flat copy of t's elements as TensorTable.array reads them."""
    t = t.detach().contiguous().reshape(-1)
    return t.view(torch.int16).numpy().view(np.uint16).copy() if t.dtype == torch.bfloat16 else t.numpy().copy()


def stored_piece(piece: tuple[torch.Tensor, ...]) -> tuple[np.ndarray, ...]:
    """A piece (the model's, each candidate's, then the base's tensor) as the sweeps take it."""
    return tuple(stored(t) for t in piece)
