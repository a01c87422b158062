"""The checkpoint reader's page release (attest.checkpoint.reader)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from attest.checkpoint.reader import Checkpoint
from attest.identity.safetensors_reader import SafetensorsFile


def test_release_many_merges_adjacent_ranges(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Releasing a block of tensors costs one system call per run of adjacent byte ranges, and covers exactly the
    ranges of the tensors named (not the ones between runs)."""
    tensors = {f"t{i}": torch.full((256,), float(i)) for i in range(6)}
    save_file(tensors, str(tmp_path / "model.safetensors"))
    calls: list[tuple[int, int]] = []
    monkeypatch.setattr(SafetensorsFile, "release_range", lambda self, b, e: calls.append((b, e)))
    ck = Checkpoint(tmp_path, with_config=False)
    try:
        span = {n: (ck.where[n][1].begin, ck.where[n][1].end) for n in tensors}
        ordered = sorted(tensors, key=lambda n: span[n][0])
        first, gap, rest = ordered[:3], ordered[3], ordered[4:]
        ck.release_many([*reversed(first), *rest])
        assert calls == [(span[first[0]][0], span[first[-1]][1]), (span[rest[0]][0], span[rest[-1]][1])]
        assert not any(b <= span[gap][0] < e for b, e in calls)
    finally:
        ck.close()
