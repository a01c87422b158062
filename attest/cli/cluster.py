"""`--ray [ADDRESS|local|auto]` and `--ray-nodes FILE`, one shared decorator for hash, verify, replay and detect:
run the command's work units on a Ray cluster (attest.cluster), with a cluster-wide progress bar on a terminal."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from attest.cli.output import stderr
from attest.cluster import RayExecutor
from attest.errors import InputError
from attest.executor import Executor
from attest.unit_cache import CachingExecutor, UnitCache, UnitCodec

F = TypeVar("F", bound=Callable[..., object])


def _remember(ctx: click.Context, param: click.Parameter, value: object) -> object:
    ctx.meta[f"attest.{param.name}"] = value
    return value


def ray_option(f: F) -> F:
    """Add --ray and --ray-nodes; read them with cluster_executor() (the command's signature does not change)."""
    f = click.option(
        "--ray-nodes",
        "ray_nodes",
        type=click.Path(path_type=Path),
        expose_value=False,
        callback=_remember,
        help="With --ray: a JSON/YAML map of shard file name or path prefix -> Ray node (id, IP or host name) "
        "holding it; those shards are read only on that node.",
    )(f)
    return click.option(
        "--ray",
        "ray",
        is_flag=False,
        flag_value="auto",
        default=None,
        metavar="[ADDRESS|local|auto]",
        expose_value=False,
        callback=_remember,
        help="Run the hashing, replay and fitting as Ray tasks near the shards: auto (RAY_ADDRESS or this machine's "
        "`ray start` cluster), local (a private cluster here) or a cluster ADDRESS. Needs attest-weights[ray].",
    )(f)


def unit_cache_option(f: F) -> F:
    """Add --no-cache (read with cluster_executor(codecs=...)): replay and detect under --ray keep finished units."""
    return click.option(
        "--no-cache",
        "no_unit_cache",
        is_flag=True,
        expose_value=False,
        callback=_remember,
        help="With --ray: recompute every work unit, even those an earlier run finished on unchanged inputs.",
    )(f)


class ClusterProgress:
    """Tensors and bytes done across the cluster, with throughput, on stderr when it is a terminal (attest.executor's
    UnitProgress)."""

    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress
        self._task: TaskID | None = None
        self._tensors = (0, 0)

    def start(self, label: str, nbytes: int, tensors: int) -> None:
        if self._progress is not None:
            if self._task is not None:
                self._progress.remove_task(self._task)
            self._tensors = (0, tensors)
            self._task = self._progress.add_task(label, total=nbytes, tensors=f"0/{tensors} tensors")

    def advance(self, nbytes: int, tensors: int) -> None:
        if self._progress is not None and self._task is not None:
            done = self._tensors[0] + tensors
            self._tensors = (done, self._tensors[1])
            self._progress.update(self._task, advance=nbytes, tensors=f"{done}/{self._tensors[1]} tensors")


@contextlib.contextmanager
def cluster_executor(
    quiet: bool = False, codecs: Callable[[], Mapping[Callable[..., Any], UnitCodec[Any, Any]]] | None = None
) -> Iterator[Executor | None]:
    """The RayExecutor --ray asks for (None without --ray), with its progress bar; disconnected afterwards. With
    `codecs` (the command's cacheable unit functions) and no --no-cache, finished units are kept in the unit cache
    (attest.unit_cache) and reused by a rerun."""
    ctx = click.get_current_context()
    address = ctx.meta.get("attest.ray")
    node_map = ctx.meta.get("attest.ray_nodes")
    if address is None:
        if node_map is not None:
            raise InputError(None, "--ray-nodes needs --ray")
        yield None
        return
    with contextlib.ExitStack() as stack:
        progress = None
        if not quiet and stderr.is_terminal:
            columns = (
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[tensors]}"),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
            )
            progress = ClusterProgress(stack.enter_context(Progress(*columns, console=stderr, transient=True)))
        try:
            executor = RayExecutor(address, node_map=node_map, progress=progress)
        except ImportError:
            raise InputError(None, '--ray needs Ray: pip install "attest-weights[ray]"') from None
        ray_executor = stack.enter_context(executor)
        if codecs is None or ctx.meta.get("attest.no_unit_cache"):
            yield ray_executor
            return
        cache = UnitCache()
        yield CachingExecutor(ray_executor, cache, codecs())
        if cache.hits:
            stderr.print(
                f"{cache.hits} of {cache.hits + cache.computed} work units taken from the unit cache "
                "(their inputs are unchanged since an earlier run; --no-cache recomputes them)"
            )
