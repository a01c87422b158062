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


def test_raw_digest_is_blake3_of_dtype_shape_and_bytes(tmp_path: Path) -> None:
    """The documented digest (blake3 of `DTYPE|[shape]|` then the bytes), whether blake3 runs on its own threads
    (tensors of 4 MiB and more) or not, and with the per-shape prefix cached across tensors."""
    import blake3

    big = torch.arange(3 << 20, dtype=torch.float16).reshape(1536, 2048)  # 6 MiB
    small = torch.arange(6, dtype=torch.bfloat16).reshape(2, 3)
    same_shape = small + 1
    save_file({"big": big, "small": small, "same_shape": same_shape}, tmp_path / "model.safetensors")
    with Checkpoint(tmp_path, with_config=False) as ckpt:
        for name, t, tag in (("big", big, "F16"), ("small", small, "BF16"), ("same_shape", same_shape, "BF16")):
            want = blake3.blake3(f"{tag}|{list(t.shape)}|".encode() + t.view(torch.uint8).numpy().tobytes())
            assert ckpt.raw_digest(name) == want.digest()
        assert ckpt.raw_digest("small") != ckpt.raw_digest("same_shape")
