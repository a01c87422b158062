"""The rule interface and its registry: one module per rule registers a class under its policy field name, as
mergekit registers one module per merge method."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TypeVar

from attest.verify.report import RuleResult

if TYPE_CHECKING:
    from attest.policy.procurement import _Context
    from attest.trust.policy_file import ProcurementRules


class Rule(Protocol):
    """One procurement rule, configured from the policy file; evaluate gives its verdict and evidence."""

    def evaluate(self, ctx: _Context) -> RuleResult: ...


class RuleFactory(Protocol):
    def from_rules(self, rules: ProcurementRules) -> Rule | None: ...


REGISTRY: dict[str, RuleFactory] = {}
"""Policy field name (`rules.<name>` in the policy file) -> the rule class that evaluates it."""

T = TypeVar("T")


def register(name: str) -> Callable[[T], T]:
    def add(cls: T) -> T:
        if name in REGISTRY:
            raise RuntimeError(f"procurement rule {name!r} registered twice")
        REGISTRY[name] = cls  # type: ignore[assignment]
        return cls

    return add
