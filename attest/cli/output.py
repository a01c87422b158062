"""Shared terminal helpers: rich consoles, progress bars only on a TTY, JSON printing."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator

import click
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

from attest.errors import printable

stdout = Console(soft_wrap=True)
if not stdout.is_terminal:
    stdout = Console(soft_wrap=True, width=200)
stderr = Console(stderr=True)


def shown(text: object) -> str:
    """Untrusted text (tensor, file and dependency names, paths, messages that quote them) for the terminal: rich
    markup made inert and control characters (newlines, ANSI escapes) escaped, so a hostile name can neither crash
    the output nor fake a line of it."""
    return escape(printable(str(text)))


def _remember_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    ctx.meta["attest.json"] = value
    return value


# `--json` for commands whose result is a few facts: read with wants_json() where the result is printed, so the
# command's own signature does not change.
json_option = click.option(
    "--json",
    is_flag=True,
    expose_value=False,
    callback=_remember_json,
    help="Print the result as one JSON object (schemas/*-output.schema.json).",
)


def wants_json() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get("attest.json"))


def print_json(model: BaseModel) -> None:
    sys.stdout.write(model.model_dump_json(indent=2, by_alias=True, exclude_none=True) + "\n")


class ByteProgress:
    """A bytes progress bar on stderr when it is a terminal; silent otherwise."""

    def __init__(self, label: str, enabled: bool) -> None:
        self._enabled = enabled and stderr.is_terminal
        self._label = label
        self._progress: Progress | None = None
        self._task: int | None = None

    def total(self, n: int) -> None:
        if self._progress is not None:
            self._task = self._progress.add_task(self._label, total=n)

    def advance(self, n: int) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, advance=n)  # type: ignore[arg-type]

    @contextlib.contextmanager
    def running(self) -> Iterator[ByteProgress]:
        if not self._enabled:
            yield self
            return
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=stderr,
            transient=True,
        ) as progress:
            self._progress = progress
            yield self
            self._progress = None
