"""Where the work of a command runs: a job cut into work units, one function mapped over them by an Executor.

The library's commands (hash, replay, detect, and verify through them) take `executor=None` and then run in this
process exactly as they always have. Given an Executor, they cut their work into WorkUnits (a group of tensors of
one shard, or the spans of one file), map a module-level function over them, and combine the results into exactly
the roots and reports of the single-process path: each unit's function opens its own files, and only digests,
comparison rows or Gram sums come back. attest.cluster.RayExecutor runs the units as Ray tasks near their files;
InProcess runs them here, one after another (the same code path, for tests and as the reference).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from attest.errors import AttestError, InputError

A = TypeVar("A")
R = TypeVar("R")
K = TypeVar("K", bound=Hashable)

UNIT_BYTES = 1 << 30
"""Most bytes one unit reads by default: a 5 GB shard is five tasks, so one node's cores share it. The environment
variable ATTEST_UNIT_BYTES sets another size (smaller units: finer retries and balance, more per-task overhead)."""
UNIT_TENSORS = 4096
"""Most tensors in one unit (bounds a task's result and its retry cost on many-tensor checkpoints)."""


@dataclass(frozen=True)
class WorkUnit(Generic[A]):
    """One task: `args` for the mapped function (small and picklable: paths and names, never tensor bytes)."""

    args: A
    files: tuple[str, ...]  # the files it reads, the one holding most of its bytes first (where it should run)
    nbytes: int  # bytes it reads (progress)
    tensors: int  # tensors it covers (progress)
    memory: int  # peak bytes it holds at once: its largest tensor times the copies the function keeps


class UnitProgress(Protocol):
    """Progress across all units of a map (a terminal bar in the CLI)."""

    def start(self, label: str, nbytes: int, tensors: int) -> None: ...

    def advance(self, nbytes: int, tensors: int) -> None: ...


class Executor(Protocol):
    def map(
        self,
        label: str,
        fn: Callable[[A], R],
        units: Sequence[WorkUnit[A]],
        on_done: Callable[[int, R], None] | None = None,
    ) -> list[R]:
        """fn(unit.args) for every unit, results in unit order. `on_done(i, result)` as each finishes (in any
        order), so finished work can be kept when a later unit fails. Raises the unit's own AttestError, or
        ClusterError when a unit could not be run: never a partial result."""
        ...


class ClusterError(AttestError):
    """The cluster could not run the work (no cluster, a node that disappeared, a worker that kept dying): exit 2,
    and no root or verdict is printed."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(f"cluster: {problem}")

    def __reduce__(self) -> tuple[object, ...]:
        return (type(self), (self.problem,))


class InProcess:
    """Runs every unit here, in order: the unit path without a cluster."""

    def __init__(self, progress: UnitProgress | None = None) -> None:
        self.progress = progress

    def map(
        self,
        label: str,
        fn: Callable[[A], R],
        units: Sequence[WorkUnit[A]],
        on_done: Callable[[int, R], None] | None = None,
    ) -> list[R]:
        if self.progress is not None:
            self.progress.start(label, sum(u.nbytes for u in units), sum(u.tensors for u in units))
        out = []
        for i, u in enumerate(units):
            out.append(fn(u.args))
            if on_done is not None:
                on_done(i, out[-1])
            if self.progress is not None:
                self.progress.advance(u.nbytes, u.tensors)
        return out


def unit_bytes() -> int:
    """ATTEST_UNIT_BYTES, or UNIT_BYTES."""
    text = os.environ.get("ATTEST_UNIT_BYTES", "")
    if not text:
        return UNIT_BYTES
    if not text.isdigit() or int(text) < 1:
        raise InputError(None, f"ATTEST_UNIT_BYTES={text!r} is not a positive number of bytes")
    return int(text)


def group_by_file(
    items: Iterable[tuple[K, str, int]], max_bytes: int | None = None, max_items: int = UNIT_TENSORS
) -> list[tuple[str, list[K]]]:
    """(key, file, nbytes) items -> (file, keys) groups: each group within one file, at most max_bytes and
    max_items (a single larger item is a group of its own). Files keep their first-seen order, keys their order.
    max_bytes: unit_bytes() by default."""
    max_bytes = unit_bytes() if max_bytes is None else max_bytes
    by_file: dict[str, list[tuple[K, int]]] = {}
    for key, file, nbytes in items:
        by_file.setdefault(file, []).append((key, nbytes))
    groups: list[tuple[str, list[K]]] = []
    for file, entries in by_file.items():
        current: list[K] = []
        size = 0
        for key, nbytes in entries:
            if current and (size + nbytes > max_bytes or len(current) >= max_items):
                groups.append((file, current))
                current, size = [], 0
            current.append(key)
            size += nbytes
        if current:
            groups.append((file, current))
    return groups
