"""detect's columnar fits and digests (attest.forensics.fit_table, attest.forensics.evidence, attest.forensics.digests).

Regression (issue #12): one TensorFit with six small arrays per tensor, and three dicts of bytes digests, held ~1.2 KB
per tensor at detect's peak on a 10^5-tensor MoE. The columns must hold exactly what the per-tensor fits held, row
by row, whichever block a tensor was fitted in and in whatever order the blocks finish.
"""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest
import torch

from attest.forensics.digests import DIGEST_BYTES, DigestMap, NameIndex, shared_digests
from attest.forensics.evidence import PassEvidence
from attest.forensics.fit import fit_block
from attest.forensics.fit_table import FitTable
from tests.support.stored import stored_piece

N = 2048


def _pieces(count: int, with_base: bool) -> list[tuple[np.ndarray, ...]]:
    """Linear 4/7 : 3/7 merges of two bf16 fine-tunes of a base, some trained afterwards (unexplained elements)."""
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(count):
        base = torch.randn(N, generator=g)
        p1 = (base + 0.05 * torch.randn(N, generator=g)).bfloat16()
        p2 = (base + 0.05 * torch.randn(N, generator=g)).bfloat16()
        m = ((p1.float() + 0.75 * p2.float()) / 1.75).bfloat16()
        if i % 2:
            m = (m.float() + 0.01 * torch.randn(N, generator=g)).bfloat16()
        out.append(stored_piece((m, p1, p2, *([base.bfloat16()] if with_base else []))))
    return out


def _same_rows(a: FitTable, i: int, b: FitTable, j: int) -> None:
    assert a.names[i] == b.names[j]
    for f in fields(FitTable):
        if f.name not in ("names", "candidates"):
            x, y = getattr(a, f.name)[i], getattr(b, f.name)[j]
            assert np.array_equal(x, y, equal_nan=x.dtype.kind == "f"), (f.name, a.names[i])


@pytest.mark.parametrize("with_base", [False, True])
def test_rows_put_out_of_order_equal_each_tensor_fitted_alone(with_base: bool) -> None:
    pieces = _pieces(6, with_base)
    names = [f"model.layers.{i}.mlp.up_proj.weight" for i in range(6)]
    alone = [fit_block([n], "BF16", [p], 2, with_base) for n, p in zip(names, pieces, strict=True)]
    block = fit_block(names, "BF16", pieces, 2, with_base)
    assert block.unexplained[0] == 0 and block.unexplained[1] > 0  # both kinds of rows are really there
    assert np.allclose(block.participant_weights()[0], [4 / 7, 3 / 7, *([0.0] if with_base else [])], atol=1e-3)
    for i, one in enumerate(alone):
        _same_rows(block, i, one, 0)  # a tensor's fit does not depend on which others share its block

    # The pass: a table for every paired tensor (one more, never fitted), blocks put as they finish, last first.
    table = PassEvidence.empty([*names, "model.norm.weight"], 2, with_base)
    evidence = [
        (rows, PassEvidence(block.select(np.array(rows)), _digests(rows), [], [])) for rows in ([0, 2, 4], [1, 5], [3])
    ]
    for rows, ev in reversed(evidence):
        table.put(rows, ev)
    fitted = table.fits.select(table.fits.finite)
    assert list(fitted.names) == names and fitted.with_base == with_base
    for i in range(6):
        _same_rows(fitted, i, block, i)
        assert table.digests[i].tobytes() == _digests([i]).tobytes()
    assert not table.fits.finite[6] and fitted.select(fitted.finite) is fitted  # all rows: no copy


def _digests(rows: list[int]) -> np.ndarray:
    return np.array([[[r * 3 + s] * DIGEST_BYTES for s in range(3)] for r in rows], dtype=np.uint8)


class _Colliding(str):
    """A name whose hash every other _Colliding name shares."""

    def __hash__(self) -> int:
        return 7


def test_name_index_finds_every_name_and_only_those() -> None:
    names = [f"model.layers.{i}.self_attn.q_proj.weight" for i in range(1000)]
    names += [_Colliding("x.weight"), _Colliding("y.weight")]
    index = NameIndex(names)
    assert [index.position(n) for n in names] == list(range(len(names)))
    assert index.positions([names[5], "missing", _Colliding("y.weight"), _Colliding("z")]).tolist() == [5, -1, 1001, -1]
    assert "missing" not in index and names[999] in index
    assert NameIndex([]).positions(["a"]).tolist() == [-1]


def test_digest_map_reads_like_the_dict_it_replaces() -> None:
    names = ["a", "b", "c"]
    index = NameIndex(names)
    column = np.arange(3 * DIGEST_BYTES, dtype=np.uint8).reshape(3, DIGEST_BYTES)
    model = DigestMap(names, index, column, {"z": b"z" * DIGEST_BYTES})
    same = dict(zip(names, (r.tobytes() for r in column), strict=True)) | {"z": b"z" * DIGEST_BYTES}
    assert (
        list(model) == ["a", "b", "c", "z"] and dict(model.items()) == same and list(model.values()) == [*same.values()]
    )
    assert model["b"] == column[1].tobytes() and model.get("q") is None and len(model) == 4
    assert model.same_as(DigestMap(names, index, column.copy(), {"z": b"z" * DIGEST_BYTES}))
    changed = column.copy()
    changed[2, 0] ^= 1
    assert not model.same_as(DigestMap(names, index, changed, {"z": b"z" * DIGEST_BYTES}))
    assert not model.same_as(DigestMap(names, index, column, {}))
    assert not model.same_as(DigestMap(["a", "b", "c"], index, column, {}))  # another list: compared as dicts


def test_shared_digests_are_exact_beyond_the_prefix() -> None:
    names = ["a", "b", "c"]
    index = NameIndex(names)
    column = np.arange(3 * DIGEST_BYTES, dtype=np.uint8).reshape(3, DIGEST_BYTES)
    model = DigestMap(names, index, column, {"z": b"z" * DIGEST_BYTES})
    near = column[1].copy()
    near[-1] ^= 1  # b's first 8 bytes, another digest
    other = np.stack([column[2], near, np.zeros(DIGEST_BYTES, np.uint8)])
    cand = DigestMap(names, index, other, {"y": b"z" * DIGEST_BYTES})
    assert shared_digests(model, [cand]) == {column[2].tobytes(), b"z" * DIGEST_BYTES}
    assert shared_digests(model, [DigestMap(names, index, np.zeros_like(column), {})]) == set()
