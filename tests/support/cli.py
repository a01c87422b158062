"""The one way tests run `attest`: in this process (run_attest, usable anywhere, session fixtures included), or as a
real process (attest_process) where the entry point itself is under test (exit status, no traceback)."""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
import sys
from collections.abc import Sequence
from typing import NamedTuple

from attest.cli import main


class CliRun(NamedTuple):
    """(exit code, stdout, stderr) of one `attest` run."""

    code: int
    out: str
    err: str

    @property
    def output(self) -> str:
        """stdout then stderr, for checks that do not care which stream a line went to."""
        return self.out + self.err

    @property
    def code_output(self) -> tuple[int, str]:
        return self.code, self.output


def run_attest(args: Sequence[object]) -> CliRun:
    """`attest ARGS` through main() in this process. main() always exits with a documented int; anything else is
    returned as 3 (an internal error), never hidden as a failure code a test might expect."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main([str(a) for a in args])
            code = 0
        except SystemExit as exc:
            code = 0 if exc.code is None else exc.code if isinstance(exc.code, int) else 3
    return CliRun(code, out.getvalue(), err.getvalue())


def attest_process(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m attest ARGS` as a real process (the environment, PYTHONPATH included, inherited)."""
    environ = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "attest", *map(str, args)], capture_output=True, text=True, env=environ, timeout=600
    )
