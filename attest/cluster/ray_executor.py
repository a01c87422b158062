"""RayExecutor: the work units of hash, replay and detect as Ray tasks, each placed near the files it reads.

Each task runs one unit's function on a worker that opens the unit's files itself (paths go out, digests, rows and
Gram sums come back: no tensor bytes cross the object store). A task whose worker process or node dies is retried by
Ray (max_retries, system failures only: an attest error in a unit, such as a malformed file, fails the run at once
with that error, exactly as in one process). When a unit cannot be completed the pending tasks are cancelled and
ClusterError is raised, so nothing is ever combined from part of the units.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from attest.cluster.locality import Node, NodeLocator, load_node_map
from attest.errors import AttestError
from attest.executor import ClusterError, UnitProgress, WorkUnit

A = TypeVar("A")
R = TypeVar("R")

MAX_RETRIES = 3
"""Retries of a unit whose worker or node died (Ray's task default)."""
QUIET = logging.ERROR
WAIT_BATCH = 256
"""Tasks collected per ray.wait call (one call per finished task would be quadratic in 10^4 tasks)."""


def _run_unit(fn: Callable[[Any], Any], args: Any) -> Any:
    return fn(args)


def _errors_to_stderr() -> None:
    """Ray's driver prints the cluster's error messages ("a worker died", "raylet terminated") on stdout, where they
    would corrupt `--json` output: send them to stderr. (ray._private.worker.print_to_stdstream, Ray 2.60; left
    alone if a later Ray moves it.)"""
    import ray._private.worker as ray_worker  # lazy: ray

    original = getattr(ray_worker, "print_to_stdstream", None)
    if original is None or getattr(original, "_attest_stderr", False):
        return

    def to_stderr(data: dict[str, Any], ignore_prefix: bool) -> None:
        original({**data, "is_err": True}, ignore_prefix)

    to_stderr._attest_stderr = True  # type: ignore[attr-defined]
    ray_worker.print_to_stdstream = to_stderr


class RayExecutor:
    """Connect to a Ray cluster: "auto" (RAY_ADDRESS or the cluster started on this machine by `ray start`),
    "local" (start a private one here), or a cluster address such as ray://head:10001 or head:6379."""

    def __init__(
        self,
        address: str = "auto",
        *,
        node_map: Path | None = None,
        progress: UnitProgress | None = None,
        max_retries: int = MAX_RETRIES,
        num_cpus: int | None = None,
    ) -> None:
        import ray  # lazy: a heavy optional dependency (attest-weights[ray])

        self._ray = ray
        self.progress = progress
        self.max_retries = max_retries
        self._owned = False
        mapping = load_node_map(node_map) if node_map is not None else None
        if not ray.is_initialized():
            try:
                if address == "local":
                    ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False, logging_level=QUIET)
                else:
                    ray.init(address=address, log_to_driver=False, logging_level=QUIET)
            except (ConnectionError, RuntimeError, ValueError) as exc:
                first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise ClusterError(
                    f"cannot connect to a Ray cluster at {address!r} ({first}); start one with `ray start --head`, "
                    "or use --ray local"
                ) from None
            self._owned = True
        _errors_to_stderr()
        self._remote = ray.remote(_run_unit)
        self.locator = NodeLocator(self.nodes(), mapping)

    def nodes(self) -> list[Node]:
        return [
            Node(n["NodeID"], n.get("NodeManagerAddress", ""), n.get("NodeManagerHostname", ""))
            for n in self._ray.nodes()
            if n.get("Alive")
        ]

    def close(self) -> None:
        """Disconnect (and stop a cluster this executor started)."""
        if self._owned and self._ray.is_initialized():
            self._ray.shutdown()
        self._owned = False

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _options(self, unit: WorkUnit[Any]) -> dict[str, Any]:
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy  # lazy: ray

        opts: dict[str, Any] = {"num_cpus": 1, "max_retries": self.max_retries}
        if unit.memory > 0:
            opts["memory"] = unit.memory
        place = self.locator.place(unit.files[0]) if unit.files else None
        if place is not None and place.node_id is not None:
            opts["scheduling_strategy"] = NodeAffinitySchedulingStrategy(place.node_id, soft=place.soft)
        return opts

    def _check_memory(self, units: Sequence[WorkUnit[Any]]) -> None:
        """A task asking for more memory than any node has would wait forever: refuse it now."""
        largest = max((n.get("Resources", {}).get("memory", 0) for n in self._ray.nodes() if n.get("Alive")), default=0)
        need = max((u.memory for u in units), default=0)
        if largest and need > largest:
            raise ClusterError(
                f"a work unit needs {need} bytes of memory (its largest tensor and the copies held), more than the "
                f"largest node offers ({int(largest)} bytes)"
            )

    def map(
        self,
        label: str,
        fn: Callable[[A], R],
        units: Sequence[WorkUnit[A]],
        on_done: Callable[[int, R], None] | None = None,
    ) -> list[R]:
        ray = self._ray
        if self.progress is not None:
            self.progress.start(label, sum(u.nbytes for u in units), sum(u.tensors for u in units))
        self._check_memory(units)
        fn_ref = ray.put(fn)
        index = {}
        for i, u in enumerate(units):
            index[self._remote.options(**self._options(u)).remote(fn_ref, u.args)] = i
        results: list[Any] = [None] * len(units)
        pending = list(index)
        failure: BaseException | None = None

        def collect(done: list[Any]) -> None:
            nonlocal failure
            for ref in done:
                i = index[ref]
                try:
                    results[i] = self._get(ref, units[i])
                except Exception as exc:
                    failure = failure or exc
                    continue
                if on_done is not None:
                    on_done(i, results[i])
                if self.progress is not None:
                    self.progress.advance(units[i].nbytes, units[i].tensors)

        try:
            while pending and failure is None:
                done, pending = ray.wait(pending, num_returns=min(len(pending), WAIT_BATCH), timeout=0.2)
                collect(done)
            if failure is not None and pending:  # keep (on_done) what finished meanwhile, then stop the rest
                done, pending = ray.wait(pending, num_returns=len(pending), timeout=0)
                collect(done)
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)
        if failure is not None:
            raise failure
        return results

    def _get(self, ref: Any, unit: WorkUnit[Any]) -> Any:
        ex = self._ray.exceptions
        where = unit.files[0] if unit.files else "a work unit"
        try:
            return self._ray.get(ref)
        except ex.RayTaskError as exc:
            cause = exc.cause
            if isinstance(cause, AttestError):  # the unit's own verdict on its input: as in one process
                raise cause from None
            if isinstance(cause, BaseException):  # a bug in a unit: exit 3, as in one process
                raise cause from exc
            raise
        except (ex.WorkerCrashedError, ex.NodeDiedError, ex.LocalRayletDiedError) as exc:
            raise ClusterError(
                f"the worker reading {where} died {self.max_retries + 1} times or its node left the cluster "
                f"({type(exc).__name__}); no result was combined: rerun when the cluster is whole"
            ) from None
        except ex.RayError as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
            raise ClusterError(
                f"the task reading {where} failed ({type(exc).__name__}: {first[:200]}); no result was combined"
            ) from None
