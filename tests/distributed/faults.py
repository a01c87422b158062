"""Faults injected into real runs: work-unit functions wrapped so that their Ray worker process dies."""

from __future__ import annotations

import functools
import os
import signal
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from attest.cluster import RayExecutor
from attest.errors import InputError
from attest.executor import WorkUnit


def die_once(marker: str, fn: Callable[[Any], Any], args: Any) -> Any:
    """Kill this worker process (SIGKILL, as the OOM killer or a crash would) the first time any unit runs."""
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return fn(args)
    os.close(fd)
    os.kill(os.getpid(), signal.SIGKILL)
    raise AssertionError("unreachable")


def die_on(needle: str, log: str, fn: Callable[[Any], Any], args: Any) -> Any:
    """Kill the worker every time it runs a unit that reads a file whose path contains `needle`; log the others once
    they are done."""
    if needle in repr(args):
        os.kill(os.getpid(), signal.SIGKILL)
    result = fn(args)
    with open(log, "a") as fh:
        fh.write(unit_line(args) + "\n")
    return result


def unit_line(args: Any) -> str:
    """How the logs name a unit (by its arguments)."""
    return repr(args)[:200].replace("\n", " ")


def refuse(args: str) -> None:
    raise InputError(args, "refused")


class FaultyExecutor(RayExecutor):
    """RayExecutor whose every unit runs through `wrap(fn, args)`. `combined`: the units whose results reached this
    process (unit_line of each), which is what a failed run keeps; a unit can finish on its worker and still be
    cancelled before its result arrives."""

    def __init__(self, wrap: Callable[..., Any], **kwargs: Any) -> None:
        super().__init__("auto", **kwargs)
        self.wrap = wrap
        self.combined: list[str] = []

    def map(self, label: str, fn: Callable[[Any], Any], units: Sequence[WorkUnit[Any]], on_done: Any = None) -> Any:
        def done(i: int, result: Any) -> None:
            self.combined.append(unit_line(units[i].args))
            if on_done is not None:
                on_done(i, result)

        return super().map(label, functools.partial(self.wrap, fn), units, done)


def executor_killing_once(marker: Path) -> FaultyExecutor:
    return FaultyExecutor(functools.partial(die_once, str(marker)))


def executor_killing(needle: str, log: Path, max_retries: int = 1) -> FaultyExecutor:
    return FaultyExecutor(functools.partial(die_on, needle, str(log)), max_retries=max_retries)
