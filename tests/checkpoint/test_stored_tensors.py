"""Checkpoint.where over the folder scan's name index (attest.checkpoint.reader.StoredTensors): the same mapping,
in the same order, as the dict of (file, entry) per tensor it replaces, without holding an entry per tensor."""

from __future__ import annotations

from pathlib import Path

import pytest

from attest.checkpoint.reader import Checkpoint, StoredTensors
from attest.errors import InputError
from tests.identity.test_identity_roots import raw_reshard


def test_where_equals_the_dict_of_entries(minilm_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "sharded"
    raw_reshard(minilm_dir, folder, 3, seed=5)
    with Checkpoint(folder) as ckpt, Checkpoint(minilm_dir) as whole:
        where = ckpt.where
        assert isinstance(where, StoredTensors)
        plain = {t.name: (f, t) for f in ckpt.files for t in f.tensors}  # what Checkpoint held before
        assert list(where) == list(plain) and len(where) == len(plain) > 100
        assert dict(where.items()) == plain and ckpt.names == list(plain)
        for name, (f, t) in plain.items():
            assert where[name] == (f, t) and where.get(name) == (f, t) and name in ckpt
            position = where.position(name)
            assert position is not None and where.span(position) == (f, t.begin, t.end)
            assert ckpt.raw_digest(name) == whole.raw_digest(name) and ckpt.info(name).shape == whole.info(name).shape
        names = list(plain)[::7]
        assert list(where.positions(names)) == [where.position(n) for n in names]
        assert where.get("missing") is None and "missing" not in where and where.position("missing") is None
        with pytest.raises(KeyError):
            where["missing"]
        with pytest.raises(KeyError):
            where.positions(["missing"])
        with pytest.raises(InputError, match="no tensor named 'missing'"):
            ckpt.info("missing")


def test_parents_share_their_tensor_names(minilm_dir: Path, tmp_path: Path) -> None:
    """Two folders holding the same tensors (a parent and its merge) hold each name once between them."""
    folder = tmp_path / "sharded"
    raw_reshard(minilm_dir, folder, 2, seed=8)
    with Checkpoint(folder) as a, Checkpoint(minilm_dir) as b:
        by_name = {n: n for n in b.where}
        assert all(by_name[n] is n for n in a.where)
