"""Option shapes several commands share: one definition each, so a flag reads and behaves the same everywhere."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import click

PathType = click.Path(path_type=Path)
Decorator = Callable[[Callable[..., Any]], Callable[..., Any]]


def choice_option(flag: str, choices: Sequence[str], default: str, help: str, dest: str | None = None) -> Decorator:
    """A choice with a default that --help shows."""
    names = (flag, dest) if dest else (flag,)
    return click.option(*names, type=click.Choice(list(choices)), default=default, show_default=True, help=help)


def device_option(help: str) -> Decorator:
    return choice_option("--device", ["cpu", "cuda"], "cpu", help)


def paths_option(flag: str, dest: str, help: str, metavar: str | None = None) -> Decorator:
    """A repeatable path option; the command receives a tuple of Paths."""
    return click.option(flag, dest, multiple=True, type=PathType, metavar=metavar, help=help)


def parents_dir_option(help: str = "Folder holding parents by name.", metavar: str | None = None) -> Decorator:
    return paths_option("--parents-dir", "parents_dirs", help, metavar)


def option_group(name: str, options: Sequence[Decorator], build: Callable[..., Any]) -> Decorator:
    """Add `options` to a command as one group: their values (named as `build`'s parameters) are handed to `build`,
    and the command receives what it returns as the one argument `name`."""
    keys = list(inspect.signature(build).parameters)

    def decorate(f: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            kwargs[name] = build(**{k: kwargs.pop(k) for k in keys})
            return f(*args, **kwargs)

        command: Callable[..., Any] = wrapper
        for option in reversed(options):
            command = option(command)
        return command

    return decorate
