"""The checkpoint reader's page release (attest.checkpoint.reader)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from attest.checkpoint.reader import Checkpoint
from attest.errors import InputError
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


def test_sample_digest_is_the_documented_keyed_blake3_of_three_pages(tmp_path: Path) -> None:
    """SPEC.md §6.6: blake3 keyed by the context string, over `DTYPE|[shape]|`, the byte size (8 bytes, little
    endian) and the first, middle and last SAMPLE_BYTES (the whole tensor, three times, when it is smaller), read
    with pread: reading them maps none of the file's pages."""
    import blake3

    from attest.checkpoint.reader import _SAMPLE_CONTEXT, SAMPLE_BYTES

    big = torch.arange(5000, dtype=torch.float32)  # 20,000 bytes
    small = torch.arange(6, dtype=torch.bfloat16).reshape(2, 3)
    save_file({"big": big, "small": small}, tmp_path / "model.safetensors")
    with Checkpoint(tmp_path, with_config=False) as ckpt:
        for name, t, tag in (("big", big, "F32"), ("small", small, "BF16")):
            raw = t.view(torch.uint8).numpy().tobytes()
            n = len(raw)
            mid = (n - SAMPLE_BYTES) // 2
            pages = [raw[max(a, 0) : min(a + SAMPLE_BYTES, n)] for a in (0, mid, n - SAMPLE_BYTES)]
            want = blake3.blake3(derive_key_context=_SAMPLE_CONTEXT)
            want.update(f"{tag}|{list(t.shape)}|".encode() + n.to_bytes(8, "little") + b"".join(pages))
            assert ckpt.sample_digest(name) == want.digest()
            assert ckpt.sample_digest(name) != ckpt.raw_digest(name)


def test_read_at_is_bounded_by_the_file(tmp_path: Path) -> None:
    save_file({"t": torch.zeros(16)}, tmp_path / "model.safetensors")
    with SafetensorsFile(tmp_path / "model.safetensors") as f:
        size = f.header.file_size
        assert f.read_at(size - 4, size) == f.view_range(size - 4, size).tobytes()
        for begin, end in ((-1, 4), (0, size + 1), (8, 4)):
            with pytest.raises(ValueError, match="outside"):
                f.read_at(begin, end)


def test_array_reads_floating_tensors_without_a_copy_and_bf16_as_its_bits(tmp_path: Path) -> None:
    """TensorTable.array (what detect reads, without torch): the stored bits, BF16 as uint16 bit patterns."""
    import numpy as np

    from tests.support.stored import stored

    g = torch.Generator().manual_seed(0)
    tensors = {
        "bf": torch.randn(7, 5, generator=g).bfloat16(),
        "h": torch.randn(9, generator=g).half(),
        "f": torch.randn(4, 3, generator=g),
        "d": torch.randn(6, generator=g).double(),
        "i": torch.arange(5, dtype=torch.int8),
    }
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with Checkpoint(tmp_path, with_config=False) as ck:
        bits = ck.array("bf")
        assert bits.dtype == np.uint16 and not bits.flags.writeable
        assert np.array_equal(bits, stored(tensors["bf"]))
        from attest.checkpoint.reader import as_float64

        assert np.array_equal(as_float64(bits), tensors["bf"].double().reshape(-1).numpy())
        for name in ("h", "f", "d"):
            assert np.array_equal(ck.array(name), tensors[name].reshape(-1).numpy())
        assert np.array_equal(ck.array_range("f", 2, 5), tensors["f"].reshape(-1)[2:5].numpy())
        with pytest.raises(InputError, match="I8 are not floating weights"):
            ck.array("i")


def test_reading_arrays_does_not_import_torch(tmp_path: Path) -> None:
    """detect reads through numpy: importing torch cost 1.5-3.5 s of every `attest detect` (more than its whole pass
    over a 1 GB model) when the reader imported it."""
    from tests.support.fresh_process import loads_torch

    save_file({"w": torch.ones(4, 4).bfloat16()}, str(tmp_path / "model.safetensors"))
    code = (
        "from attest.checkpoint.reader import Checkpoint\nimport attest.forensics.detect\n"
        f"print(int(Checkpoint({str(tmp_path)!r}).array('w').sum()))"
    )
    assert loads_torch(code) == (str(16 * 0x3F80), False)
