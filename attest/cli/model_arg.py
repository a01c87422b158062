"""A model folder on the command line: a path, or `hf://org/name[@rev]` resolved from the local Hugging Face cache."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from attest.lineage.locator import model_path


class ModelFolder(click.ParamType):
    name = "DIR|hf://org/name[@rev]"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Path:
        if isinstance(value, Path):
            return value
        return model_path(str(value))


MODEL_FOLDER = ModelFolder()
