"""Parameter settings: precedence, filters and layer gradients, resolved per tensor as mergekit 0.1.5 does.

A setting is a scalar, a list of scalars (a gradient over the layers of an output slice), a `{filter, value}` entry,
or a list of those (the first whose filter is a substring of the tensor name wins). Scopes are searched from the
most specific (slice source) to the global `parameters:`; the first scope that yields a value wins.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import TypeAdapter, ValidationError

from attest.errors import InputError

MISSING: Any = object()
MAX_SETTING_DEPTH = 8
"""How deeply `{filter, value}` entries may nest (self-referencing YAML aliases would otherwise recurse forever)."""


class Scope(StrEnum):
    SHARED = "shared"  # one value per output tensor
    INPUT = "input"  # one value per input model
    NON_BASE = "non_base"  # one value per input model other than the base


@dataclass(frozen=True)
class ParameterSpec:
    name: str
    kind: Any  # float, bool, int, or float | None
    scope: Scope
    default: Any = MISSING
    minimum: float | None = None  # inclusive bounds of a numeric parameter
    maximum: float | None = None

    @property
    def required(self) -> bool:
        return self.default is MISSING

    def validate(self, value: Any) -> Any:
        """The value as the parameter's type; NaN, infinities and values outside the bounds are refused."""
        try:
            out = _adapter(self.kind).validate_python(value)
        except ValidationError:
            raise InputError(None, f"parameter {self.name}: {value!r} is not a valid {self.kind}") from None
        if isinstance(out, (int, float)) and not isinstance(out, bool):
            if isinstance(out, float) and not math.isfinite(out):
                raise InputError(None, f"parameter {self.name}: {value!r} is not a finite number")
            if (self.minimum is not None and out < self.minimum) or (self.maximum is not None and out > self.maximum):
                raise InputError(None, f"parameter {self.name}: {value!r} is outside [{self.minimum}, {self.maximum}]")
        return out


@functools.cache
def _adapter(kind: Any) -> TypeAdapter[Any]:
    """One TypeAdapter per parameter type (building one costs more than validating: 3 lookups per tensor)."""
    return TypeAdapter(kind)


def _is_scalar(value: Any) -> bool:
    return isinstance(value, (bool, int, float, str))


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def evaluate_setting(tensor_name: str, setting: Any, t: float, validate: Callable[[Any], Any], depth: int = 0) -> Any:
    """One setting at one tensor and gradient position t in [0, 1]; None when no filter matches."""
    if depth > MAX_SETTING_DEPTH:
        raise InputError(
            None, f"parameter setting nested more than {MAX_SETTING_DEPTH} levels deep (a YAML alias loop?)"
        )
    if isinstance(setting, dict):
        setting = [setting]
    if _is_scalar(setting):
        return validate(setting)
    if not isinstance(setting, list):
        raise InputError(None, f"unexpected parameter setting {setting!r}")
    if not setting:
        return None
    if all(_is_scalar(e) for e in setting):
        values = [validate(e) for e in setting]
        if not all(_is_number(v) for v in values):
            return values[int(t * (len(values) - 1))]
        # Same float expression (and so the same rounding) as mergekit's gradient interpolation.
        scaled = t * (len(setting) - 1)
        i0 = int(scaled)
        i1 = min(len(setting) - 1, i0 + 1)
        frac = scaled - i0
        return validate((1 - frac) * values[i0] + frac * values[i1])
    for cond in setting:
        if not isinstance(cond, dict) or "value" not in cond:
            raise InputError(None, f"parameter entry {cond!r} needs a `value` (and optionally a `filter`)")
        if cond.get("filter") is not None and not isinstance(cond.get("filter"), str):
            raise InputError(
                None, f"parameter filter {cond['filter']!r} must be a string (a substring of tensor names)"
            )
    for cond in setting:
        flt = cond.get("filter")
        if flt is None or flt == "*" or (tensor_name and flt in tensor_name):
            return evaluate_setting(tensor_name, cond["value"], t, validate, depth + 1)
    return None


Settings = Mapping[str, Any] | None


def resolve(spec: ParameterSpec, scopes: Iterable[Settings], tensor_name: str, t: float) -> Any:
    for scope in scopes:
        if scope is not None and spec.name in scope:
            value = evaluate_setting(tensor_name, scope[spec.name], t, spec.validate)
            if value is not None:
                return value
    if spec.required:
        raise InputError(None, f"missing required parameter {spec.name!r} for tensor {tensor_name}")
    return spec.validate(spec.default)
