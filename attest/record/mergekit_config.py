"""A mergekit YAML recipe as a statement carries it: the exact text, its sha256 and its parsed form.

The text is what was run; the parsed form is for readers; the digest ties the two. The YAML is validated with
mergekit's own configuration model when mergekit is installed, so a recipe mergekit would refuse is refused here.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from attest.errors import InputError
from attest.recipe_yaml import MAX_RECIPE_BYTES, load_recipe_yaml


@dataclass(frozen=True)
class MergeRecipe:
    text: str
    sha256: str
    parsed: dict[str, Any]

    def external_parameters(self) -> dict[str, Any]:
        return {"mergekit_config": {"yaml": self.text, "sha256": self.sha256, "parsed": self.parsed}}

    def model_references(self) -> list[str]:
        """Every model the recipe names (base_model, models[].model, slices[].base_model, slices[].sources[].model),
        as the merge engine reads them."""
        from attest.merge.recipe import parse_recipe

        return parse_recipe(self.text, "config").referenced_models()


def load_merge_recipe(path: Path) -> MergeRecipe:
    """Read and validate a mergekit YAML file; InputError for anything mergekit would not run."""
    try:
        if not path.is_file():
            raise InputError(path, "no such config file")
        if path.stat().st_size > MAX_RECIPE_BYTES:
            raise InputError(path, f"config larger than {MAX_RECIPE_BYTES} bytes")
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(path, "config is not UTF-8 text") from None
    doc = load_recipe_yaml(text, path)
    if not isinstance(doc, dict):
        raise InputError(path, "not a valid mergekit config (the top level is not a mapping)")
    try:
        parsed = json.loads(json.dumps(doc, allow_nan=False))
    except (TypeError, ValueError) as exc:
        raise InputError(path, f"config holds values JSON cannot carry ({exc})") from None
    _validate_with_mergekit(path, doc)
    return MergeRecipe(text=text, sha256=hashlib.sha256(raw).hexdigest(), parsed=parsed)


def _validate_with_mergekit(path: Path, doc: dict[str, Any]) -> None:
    if "merge_method" not in doc:
        raise InputError(path, "not a valid mergekit config (no merge_method)")
    if not doc.get("models") and not doc.get("slices"):
        raise InputError(path, "not a valid mergekit config (neither models nor slices)")
    try:
        with warnings.catch_warnings():  # mergekit 0.1.5 imports numpy.core, which warns on numpy 2
            warnings.simplefilter("ignore", DeprecationWarning)
            from mergekit.config import MergeConfiguration
    except ImportError:
        return
    from pydantic import ValidationError

    try:
        MergeConfiguration.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "document"
        raise InputError(path, f"not a valid mergekit config ({where}: {first['msg']})") from None
    except (ValueError, TypeError) as exc:
        raise InputError(path, f"not a valid mergekit config ({str(exc).splitlines()[0]})") from None
