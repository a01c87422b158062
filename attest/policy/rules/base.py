"""The rule interface, its registry and the context rules evaluate in.

A rule is a subclass of `Rule` named after its policy field (`class X(Rule[Config], name="field")`): defining the
class registers it, as mergekit registers one module per merge method, and the policy file's `rules.<field>` section
configures it. Each rule module holds only its logic: `evaluate(ctx)` returning a `RuleResult`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Generic, TypeVar

from attest.lineage.locator import Locator
from attest.verify.lineage import StepRecord, VerifiedLineage, nodes
from attest.verify.report import LineageNode, RuleResult

if TYPE_CHECKING:
    from attest.forensics import DetectReport
    from attest.trust.policy_file import ProcurementRules
    from attest.trust.trust_set import TrustSet
    from attest.verify.engine import VerifyOptions

__all__ = ["REGISTRY", "Rule", "RuleContext", "RuleResult", "nodes", "short_digest"]


@dataclass
class RuleContext:
    """What every rule reads: the verified lineage, the trust set, the verify options (the command line's folders),
    and evidence computed once for all rules (folders hashed by the lineage's locator, detect's report)."""

    lineage: VerifiedLineage
    trust: TrustSet
    options: VerifyOptions
    detect_result: tuple[DetectReport | None, list[str], dict[str, str]] | None = field(default=None, repr=False)

    @property
    def root(self) -> LineageNode:
        assert self.lineage.report.lineage is not None
        return self.lineage.report.lineage

    @property
    def locator(self) -> Locator:
        return self.lineage.locator

    def say(self, msg: str) -> None:
        if self.options.on_step is not None:
            self.options.on_step(msg)

    def path(self, p: str) -> Path:
        """A path from the policy file: relative to the policy's folder."""
        q = Path(p)
        return q if q.is_absolute() else (self.trust.policy_dir or Path(".")) / q

    def trusted_step(self, digest: str) -> StepRecord | None:
        rec = self.lineage.steps.get(digest)
        return rec if rec is not None and rec.trusted else None


def short_digest(d: str) -> str:
    return f"sha256:{d[:16]}…"


C = TypeVar("C")


class Rule(ABC, Generic[C]):
    """One procurement rule, configured by its section of the policy file (`config`; `rules` is the whole `rules`
    mapping, for a rule that reads another's settings)."""

    name: ClassVar[str]

    def __init__(self, config: C, rules: ProcurementRules | None = None) -> None:
        self.config = config
        self.rules = rules

    def __init_subclass__(cls, *, name: str, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if name in REGISTRY:
            raise RuntimeError(f"procurement rule {name!r} registered twice")
        cls.name = name
        REGISTRY[name] = cls

    @classmethod
    def from_rules(cls, rules: ProcurementRules) -> Rule[Any] | None:
        """The rule as the policy configures it; None when the policy does not ask for it."""
        config = getattr(rules, cls.name)
        return None if config is None else cls(config, rules)

    def result(self, title: str) -> RuleResult:
        """A passing verdict titled `title`, for evaluate to fill with evidence (and fail)."""
        return RuleResult(rule=self.name, title=title, passed=True)

    @abstractmethod
    def evaluate(self, ctx: RuleContext) -> RuleResult:
        """The rule's verdict on the verified lineage, with its evidence."""


REGISTRY: dict[str, type[Rule[Any]]] = {}
"""Policy field name (`rules.<name>` in the policy file) -> the rule class that evaluates it."""
