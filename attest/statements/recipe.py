"""mergekit YAML recipes as one typed model: the text verbatim, its sha256, its parsed form, and what it asks for.

mergekit drops unknown keys without a word; a recipe that says `densty: 0.5` then merges at density 1.0. We parse
the same YAML, keep the text verbatim (it is what gets recorded and hashed), and list every key that has no effect.

The same recipe serves two purposes. To *run* it (attest merge, replay) it must be a form this engine computes
(no LoRA references, no `modules:`, a float dtype). To *record* it (attest record merge, a merge someone ran with
mergekit) it must be what mergekit itself accepts, checked with mergekit's own configuration model when mergekit
is installed, and representable as JSON; the engine's restrictions do not apply, since recording does not compute.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from attest.bounded import read_bounded
from attest.errors import InputError
from attest.recipe_yaml import MAX_RECIPE_BYTES, load_recipe_yaml

RECORDING = "recording"
"""Validation context key: True when the recipe is read to be recorded, not run (the engine's limits are off)."""

FLOAT_DTYPES = ("bfloat16", "float16", "float32", "float64")


class _Lenient(BaseModel):
    """Accept unknown keys so they can be reported instead of rejected (mergekit ignores them)."""

    model_config = ConfigDict(extra="allow")

    def unknown_keys(self) -> list[str]:
        return sorted((self.model_extra or {}).keys())


def _recording(info: ValidationInfo) -> bool:
    return bool(isinstance(info.context, dict) and info.context.get(RECORDING))


def _model_name(value: Any, info: ValidationInfo) -> Any:
    if isinstance(value, str) and "+" in value and not _recording(info):
        raise ValueError(f"LoRA model references ({value!r}) are not supported")
    return value


class InputModel(_Lenient):
    model: str
    parameters: dict[str, Any] | None = None

    @field_validator("model")
    @classmethod
    def _no_lora(cls, value: str, info: ValidationInfo) -> str:
        return _model_name(value, info)


class InputSlice(_Lenient):
    model: str
    layer_range: tuple[int, int]
    parameters: dict[str, Any] | None = None

    @field_validator("model")
    @classmethod
    def _no_lora(cls, value: str, info: ValidationInfo) -> str:
        return _model_name(value, info)

    @model_validator(mode="after")
    def _range_ordered(self, info: ValidationInfo) -> InputSlice:
        if not _recording(info) and not 0 <= self.layer_range[0] <= self.layer_range[1]:
            raise ValueError(f"layer_range {list(self.layer_range)} must be [start, end] with 0 <= start <= end")
        return self


class OutputSlice(_Lenient):
    sources: list[InputSlice] = Field(min_length=1)
    base_model: str | None = None
    residual_weight: float | None = None
    parameters: dict[str, Any] | None = None


class MergeRecipe(_Lenient):
    """A mergekit 0.1.5 merge configuration (the `models:` or `slices:` form)."""

    merge_method: str
    base_model: str | None = None
    dtype: str | None = None
    out_dtype: str | None = None
    parameters: dict[str, Any] | None = None
    models: list[InputModel] | None = None
    slices: list[OutputSlice] | None = None
    modules: dict[str, Any] | None = None
    tokenizer_source: str | None = None
    tokenizer: dict[str, Any] | None = None
    chat_template: str | None = None

    @field_validator("base_model")
    @classmethod
    def _no_lora(cls, value: str | None, info: ValidationInfo) -> str | None:
        return _model_name(value, info)

    @field_validator("dtype", "out_dtype")
    @classmethod
    def _float_dtype(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None or _recording(info):
            return value
        name = value.removeprefix("torch.")
        if name not in FLOAT_DTYPES:
            raise ValueError(f"unsupported dtype {value!r} (one of {', '.join(FLOAT_DTYPES)})")
        return name

    _text: str = PrivateAttr(default="")
    _document: Any = PrivateAttr(default=None)
    _source: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _one_layout(self, info: ValidationInfo) -> MergeRecipe:
        if _recording(info):  # mergekit's own model (when installed) judges the layout of a recorded recipe
            return self
        if self.modules:
            raise ValueError("the `modules:` form is not supported; use `models:` or `slices:`")
        if bool(self.models) == bool(self.slices):
            raise ValueError("exactly one of `models` or `slices` must be given")
        if self.tokenizer_source is not None and self.tokenizer is not None:
            raise ValueError("give tokenizer_source or tokenizer, not both")
        return self

    @property
    def text(self) -> str:
        """The recipe exactly as given (what was run, recorded and hashed)."""
        return self._text

    @property
    def sha256(self) -> str:
        """sha256 of the text's UTF-8 bytes: the file's bytes when it was read from a file."""
        return hashlib.sha256(self._text.encode("utf-8")).hexdigest()

    @property
    def parsed(self) -> dict[str, Any]:
        """The YAML document as JSON values, as a statement carries it (InputError if JSON cannot carry it)."""
        try:
            return json.loads(json.dumps(self._document, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise InputError(self._source, f"config holds values JSON cannot carry ({exc})") from None

    def mergekit_config_yml(self) -> str:
        """The text mergekit writes as `mergekit_config.yml`: the file read in text mode (newlines as `\\n`)."""
        return self._text.replace("\r\n", "\n").replace("\r", "\n")

    def external_parameters(self) -> dict[str, Any]:
        """A merge statement's externalParameters: the recipe verbatim, its sha256 and its parsed form."""
        return {"mergekit_config": {"yaml": self._text, "sha256": self.sha256, "parsed": self.parsed}}

    def referenced_models(self) -> list[str]:
        """Every model the recipe names, base first, then in config order, without repeats."""
        names: list[str] = [self.base_model] if self.base_model else []
        for m in self.models or []:
            names.append(m.model)
        for s in self.slices or []:
            if s.base_model:
                names.append(s.base_model)
            names.extend(src.model for src in s.sources)
        return list(dict.fromkeys(names))

    def model_references(self) -> list[str]:
        """The models a recorded merge must list as parents (the same list as referenced_models)."""
        return self.referenced_models()

    def ignored_keys(self) -> list[str]:
        """Dotted paths of keys mergekit reads past without effect."""
        out = [k for k in self.unknown_keys()]
        for i, m in enumerate(self.models or []):
            out += [f"models[{i}].{k}" for k in m.unknown_keys()]
        for i, s in enumerate(self.slices or []):
            out += [f"slices[{i}].{k}" for k in s.unknown_keys()]
            if s.residual_weight is not None:
                out.append(f"slices[{i}].residual_weight")
            for j, src in enumerate(s.sources):
                out += [f"slices[{i}].sources[{j}].{k}" for k in src.unknown_keys()]
        return out

    def parameter_names(self) -> list[tuple[str, str]]:
        """(where, parameter name) for every parameter setting in the recipe."""
        out = [("parameters", k) for k in self.parameters or {}]
        for i, m in enumerate(self.models or []):
            out += [(f"models[{i}].parameters", k) for k in m.parameters or {}]
        for i, s in enumerate(self.slices or []):
            out += [(f"slices[{i}].parameters", k) for k in s.parameters or {}]
            for j, src in enumerate(s.sources):
                out += [(f"slices[{i}].sources[{j}].parameters", k) for k in src.parameters or {}]
        return out


def parse_recipe(text: str, source: str | Path | None = None, *, recording: bool = False) -> MergeRecipe:
    """Parse recipe YAML text; any problem becomes one InputError naming `source`.

    recording: read a recipe to record it rather than run it (see the module docstring)."""
    data = load_recipe_yaml(text, source)
    if recording:
        if not isinstance(data, dict):
            raise InputError(source, "not a valid mergekit config (the top level is not a mapping)")
        _check_with_mergekit(source, data)
    elif not isinstance(data, dict):
        raise InputError(source, "a merge recipe must be a YAML mapping")
    try:
        recipe = MergeRecipe.model_validate(data, context={RECORDING: recording})
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "recipe"
        what = "not a valid mergekit config" if recording else "invalid merge recipe"
        raise InputError(source, f"{what} ({where}: {first['msg']})") from None
    except (RecursionError, ValueError) as exc:
        raise InputError(source, f"invalid merge recipe ({type(exc).__name__})") from None
    recipe._text, recipe._document = text, data
    recipe._source = None if source is None else str(source)
    if recording:
        recipe.parsed  # noqa: B018 (a recorded recipe must be JSON: fail now, not at signing)
    return recipe


def load_recipe(path: str | Path, *, recording: bool = False) -> MergeRecipe:
    """Read a recipe file (bounded, UTF-8, bytes as they are: its sha256 is the file's)."""
    p = Path(path)
    if not p.is_file():
        raise InputError(p, "no such config file")
    raw = read_bounded(p, MAX_RECIPE_BYTES, f"recipe larger than {MAX_RECIPE_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(p, "recipe is not UTF-8 text") from None
    return parse_recipe(text, p, recording=recording)


def _check_with_mergekit(source: str | Path | None, doc: dict[str, Any]) -> None:
    """Refuse what mergekit 0.1.5 would refuse to run (with its own model when it is installed)."""
    if "merge_method" not in doc:
        raise InputError(source, "not a valid mergekit config (no merge_method)")
    if not doc.get("models") and not doc.get("slices"):
        raise InputError(source, "not a valid mergekit config (neither models nor slices)")
    try:
        with warnings.catch_warnings():  # mergekit 0.1.5 imports numpy.core, which warns on numpy 2
            warnings.simplefilter("ignore", DeprecationWarning)
            from mergekit.config import MergeConfiguration  # lazy: mergekit pulls in torch and transformers
    except ImportError:
        return
    try:
        MergeConfiguration.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "document"
        raise InputError(source, f"not a valid mergekit config ({where}: {first['msg']})") from None
    except (ValueError, TypeError) as exc:
        raise InputError(source, f"not a valid mergekit config ({str(exc).splitlines()[0]})") from None
