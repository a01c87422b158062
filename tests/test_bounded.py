"""attest.bounded.read_bounded: hostile input files are read at most limit + 1 bytes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from attest.bounded import read_bounded
from attest.errors import InputError
from attest.lineage.store import BundleError


def test_at_the_limit_reads_and_over_it_refuses(tmp_path: Path) -> None:
    f = tmp_path / "f"
    f.write_bytes(b"x" * 10)
    assert read_bounded(f, 10) == b"x" * 10
    with pytest.raises(InputError, match="recipe larger than 9 bytes"):
        read_bounded(f, 9, "recipe larger than 9 bytes")
    with pytest.raises(BundleError, match="larger than 9 bytes") as err:
        read_bounded(f, 9, error=BundleError, shown=tmp_path / "shown")
    assert err.value.path == str(tmp_path / "shown")


def test_missing_file_and_non_regular_file(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="cannot read"):
        read_bounded(tmp_path / "absent", 10)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)  # a writer end, so opening the FIFO does not block
    try:
        with pytest.raises(InputError, match="not a regular file"):
            read_bounded(fifo, 10, regular=True)
    finally:
        os.close(fd)
