"""Bounded reads of hostile input files: never more than `limit` + 1 bytes are read, so a file that is (or grows)
larger than its format allows is refused without being loaded."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from attest.errors import InputError


def read_bounded(
    path: str | os.PathLike[str],
    limit: int,
    too_large: str | None = None,
    *,
    regular: bool = False,
    error: type[InputError] = InputError,
    shown: str | os.PathLike[str] | None = None,
) -> bytes:
    """The whole file, at most `limit` bytes; else `error(shown or path, too_large)` (default "larger than LIMIT
    bytes"). With `regular`, anything but a regular file (a FIFO, a device) is refused too."""
    where = Path(shown if shown is not None else path)
    message = too_large or f"larger than {limit} bytes"
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            if regular and not stat.S_ISREG(st.st_mode):
                raise error(where, "not a regular file")
            if stat.S_ISREG(st.st_mode) and st.st_size > limit:
                raise error(where, message)
            # Ask for what the file holds (a read of limit + 1 bytes allocates that much up front), then, if it grew
            # since fstat, for the rest up to limit + 1.
            want = min(limit, st.st_size) + 1 if stat.S_ISREG(st.st_mode) else limit + 1
            data = fh.read(want)
            if len(data) == want and want <= limit:
                data += fh.read(limit + 1 - want)
    except OSError as exc:
        raise error(where, f"cannot read: {exc.strerror or exc}") from None
    if len(data) > limit:
        raise error(where, message)
    return data


__all__ = ["read_bounded"]
