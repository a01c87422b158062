"""The verification report: what `attest verify --json` prints and what the rich tree is drawn from."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

ProblemCode = Literal[
    "content_mismatch",  # the folder's bytes are not what the statement names
    "no_statement",  # no statement names this model
    "bad_signature",  # an envelope whose signatures do not verify under any trusted signer
    "untrusted_signer",  # valid signature, but by nobody the policy trusts
    "unattested_parent",  # a parent with neither a trusted statement nor a trusted root digest
    "parent_mismatch",  # a local parent checkpoint whose bytes differ from the digest its child names
    "cycle",  # a lineage that leads back to itself
    "conflicting_statements",  # two trusted statements about the same subject that disagree
    "unknown_predicate",  # a statement of a predicate type attest does not understand (never trusted)
    "unrelated_statement",  # a statement about a model outside this lineage
    "malformed_envelope",  # an envelope or statement that does not parse
    "model_signing",  # an OpenSSF model-signing signature that does not verify
    "replay_mismatch",  # a replayed merge that does not reproduce the published tensors
    "recipe_parents",  # a merge statement whose recorded parents are not the models its own recorded recipe names
    "training_mismatch",  # a training transcript whose chain or replayed segments do not check out
]


class Problem(BaseModel):
    model_config = ConfigDict(extra="forbid")
    code: ProblemCode
    message: str
    subject: str | None = Field(default=None, description="Digest or name of the node the problem is about")


class LineageNode(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    digest: str = Field(description="sha256 model root")
    step: str | None = Field(default=None, description="merge, finetune, distill, quantize, convert; None for a root")
    role: str | None = Field(default=None, description="The role this node plays for its child (base, parent, ...)")
    signers: list[str] = Field(default_factory=list)
    verdict: Literal["verified", "trusted_root", "unattested", "failed"]
    rehashed: bool = Field(default=False, description="The checkpoint was available locally and re-hashed")
    ref: bool = Field(
        default=False,
        description="A model already shown earlier in the report (depth first, parents in order): this entry repeats "
        "its fields for this edge, and its parents are listed there, not again",
    )
    parents: list[LineageNode] = Field(default_factory=list)


class RuleResult(BaseModel):
    """One procurement rule's verdict, with the evidence a reader needs to check it by hand."""

    model_config = ConfigDict(extra="forbid")
    rule: str = Field(description="The rule's key in the policy's `rules` section")
    title: str = Field(description="What the rule demands, in words")
    passed: bool
    evidence: list[str] = Field(default_factory=list, description="One line per fact the verdict rests on")

    def fail(self, line: str) -> None:
        """The rule fails, for the reason `line` gives."""
        self.passed = False
        self.evidence.append(line)


class PolicyResult(BaseModel):
    """The procurement rules of the policy file, each evaluated (SPEC.md section 7.1)."""

    model_config = ConfigDict(extra="forbid")
    policy: str = Field(description="The policy file")
    name: str | None = Field(default=None, description="The policy's own title (`name:`)")
    passed: bool = Field(description="Every rule passed")
    rules: list[RuleResult] = Field(default_factory=list)


class VerifyReport(BaseModel):
    model_config = ConfigDict(extra="forbid")
    verified: bool
    model: str
    model_root: str
    weights_root: str
    problems: list[Problem] = Field(default_factory=list)
    lineage: LineageNode | None = None
    notes: list[str] = Field(default_factory=list)
    policy: PolicyResult | None = Field(
        default=None, description="Procurement rules (--policy with a rules section); verified is false if one fails"
    )
