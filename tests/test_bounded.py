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


def test_a_small_file_under_a_large_limit_asks_only_for_its_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression: every read asked for limit + 1 bytes (CPython allocates the whole request up front: 64 MiB for a
    1 KB index). Now it asks for size + 1; a file that grew after fstat is still read up to limit + 1 and refused."""
    f = tmp_path / "f"
    f.write_bytes(b"x" * 100)
    asked: list[int] = []
    real_open = open

    class Spy:
        def __init__(self, fh: object) -> None:
            self.fh = fh

        def __enter__(self) -> Spy:
            return self

        def __exit__(self, *exc: object) -> None:
            self.fh.close()  # type: ignore[attr-defined]

        def fileno(self) -> int:
            return int(self.fh.fileno())  # type: ignore[attr-defined]

        def read(self, n: int) -> bytes:
            asked.append(n)
            if len(asked) == 1 and grow:  # the file grows between fstat and the read
                with real_open(f, "ab") as more:
                    more.write(b"y" * 1000)
            return bytes(self.fh.read(n))  # type: ignore[attr-defined]

    monkeypatch.setattr("builtins.open", lambda path, mode="r": Spy(real_open(path, mode)))
    grow = False
    assert read_bounded(f, 64 * 1024 * 1024) == b"x" * 100 and asked == [101]
    asked.clear()
    grow = True
    with pytest.raises(InputError, match="larger than 500 bytes"):
        read_bounded(f, 500)
    assert asked == [101, 400]
