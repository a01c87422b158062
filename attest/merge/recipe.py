"""mergekit YAML recipes as typed models, with the keys mergekit would silently ignore reported.

mergekit drops unknown keys without a word; a recipe that says `densty: 0.5` then merges at density 1.0. We parse
the same YAML, keep the text verbatim (it is what gets recorded and hashed), and list every key that has no effect.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from attest.errors import InputError
from attest.recipe_yaml import MAX_RECIPE_BYTES, load_recipe_yaml

FLOAT_DTYPES = ("bfloat16", "float16", "float32", "float64")


class _Lenient(BaseModel):
    """Accept unknown keys so they can be reported instead of rejected (mergekit ignores them)."""

    model_config = ConfigDict(extra="allow")

    def unknown_keys(self) -> list[str]:
        return sorted((self.model_extra or {}).keys())


def _model_name(value: Any) -> Any:
    if isinstance(value, str) and "+" in value:
        raise ValueError(f"LoRA model references ({value!r}) are not supported")
    return value


class InputModel(_Lenient):
    model: str
    parameters: dict[str, Any] | None = None

    @field_validator("model")
    @classmethod
    def _no_lora(cls, value: str) -> str:
        return _model_name(value)


class InputSlice(_Lenient):
    model: str
    layer_range: tuple[int, int]
    parameters: dict[str, Any] | None = None

    @field_validator("model")
    @classmethod
    def _no_lora(cls, value: str) -> str:
        return _model_name(value)

    @model_validator(mode="after")
    def _range_ordered(self) -> InputSlice:
        if not 0 <= self.layer_range[0] <= self.layer_range[1]:
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
    def _no_lora(cls, value: str | None) -> str | None:
        return _model_name(value)

    @field_validator("dtype", "out_dtype")
    @classmethod
    def _float_dtype(cls, value: str | None) -> str | None:
        if value is None:
            return None
        name = value.removeprefix("torch.")
        if name not in FLOAT_DTYPES:
            raise ValueError(f"unsupported dtype {value!r} (one of {', '.join(FLOAT_DTYPES)})")
        return name

    @model_validator(mode="after")
    def _one_layout(self) -> MergeRecipe:
        if self.modules:
            raise ValueError("the `modules:` form is not supported; use `models:` or `slices:`")
        if bool(self.models) == bool(self.slices):
            raise ValueError("exactly one of `models` or `slices` must be given")
        if self.tokenizer_source is not None and self.tokenizer is not None:
            raise ValueError("give tokenizer_source or tokenizer, not both")
        return self

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


def parse_recipe(text: str, source: str | Path | None = None) -> MergeRecipe:
    """Parse recipe YAML text; any problem becomes one InputError naming `source`."""
    data = load_recipe_yaml(text, source)
    if not isinstance(data, dict):
        raise InputError(source, "a merge recipe must be a YAML mapping")
    try:
        return MergeRecipe.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "recipe"
        raise InputError(source, f"invalid merge recipe ({where}: {first['msg']})") from None
    except (RecursionError, ValueError) as exc:
        raise InputError(source, f"invalid merge recipe ({type(exc).__name__})") from None


def load_recipe(path: str | Path) -> tuple[MergeRecipe, str]:
    """Read a recipe file; returns the parsed recipe and its text exactly as given."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_RECIPE_BYTES:
            raise InputError(p, f"recipe larger than {MAX_RECIPE_BYTES} bytes")
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(p, f"cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise InputError(p, "recipe is not UTF-8 text") from None
    return parse_recipe(text, p), text
