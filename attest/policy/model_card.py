"""Hugging Face model cards read and checked against the signed lineage (SPEC.md section 7.2).

The policy's claims rule and `attest card --check` read cards here; attest.publish.card writes them from the same
step views. A card is hostile input: it is read bounded, parsed strictly, and only compared, never executed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from huggingface_hub.repocard import REGEX_YAML_BLOCK

from attest.bounded import read_bounded
from attest.errors import InputError
from attest.lineage.locator import hub_dataset_id, hub_model_id
from attest.policy.plain_text import plain_text
from attest.statements.models import ROLES, STEP_OF_BUILD_TYPE
from attest.strict_yaml import load_yaml
from attest.verify.lineage import StepRecord

CARD_FILE = "README.md"
MAX_CARD_BYTES = 4 * 1024 * 1024
LINEAGE_START = "<!-- attest:lineage:start -->"
LINEAGE_END = "<!-- attest:lineage:end -->"
RELATION = {"merge": "merge", "finetune": "finetune", "distill": "finetune", "quantize": "quantized"}
"""Hugging Face `base_model_relation` per step kind; a convert step has none (same model, other format)."""

_TRAINING_CLAIM = re.compile(
    r"post[- ]?train\w*|fine[- ]?tun\w*|further[- ]train\w*|continued[- ]pre[- ]?train\w*|"
    r"\btrained (?:on|with|it|for)\b|home[- ]?grown|from scratch|distill\w*|in[- ]house (?:model|training)",
    re.I,
)
_ORIGIN_CLAIM = re.compile(r"home[- ]?grown|from scratch|in[- ]house model|our own (?:base )?model", re.I)


@dataclass
class Card:
    """A model card split into its YAML front matter and its markdown body."""

    front: dict[str, Any]
    body: str


@dataclass(frozen=True)
class ParentView:
    name: str
    digest: str
    role: str
    hf_name: str | None = None

    @property
    def display(self) -> str:
        return self.hf_name or self.name


@dataclass
class StepView:
    """One step of a lineage as a card shows it: a signed statement, or the step about to be recorded."""

    name: str
    kind: str
    digest: str | None
    parents: list[ParentView] = field(default_factory=list)
    recipe_yaml: str | None = None
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    datasets: list[tuple[str, str]] = field(default_factory=list)
    hub_datasets: list[str] = field(default_factory=list)
    """Hub dataset ids (recorded as hf://datasets/org/name): what the card's `datasets:` key lists."""
    signers: list[str] = field(default_factory=list)
    trusted: bool = False


def step_from_statement(rec: StepRecord, names: dict[str, str] | None = None) -> StepView:
    """A signed statement as a card step; `names` (digest -> published name, e.g. the policy's allow-listed roots)
    overrides how a parent is named on the hub."""
    st = rec.statement
    build = st.predicate.buildDefinition
    parents, datasets, hub_datasets = [], [], []
    for dep in build.resolvedDependencies or []:
        role = str(dep.role)
        digest = dep.sha256
        if role in ROLES and digest:
            shown = (names or {}).get(digest) or hub_model_id(dep.uri)
            parents.append(ParentView(dep.name or dep.uri or digest[:16], digest, role, shown))
        elif role == "dataset":
            datasets.append((dep.name or dep.uri or "dataset", (dep.digest or {}).get("sha256", "")))
            if hub := hub_dataset_id(dep.uri):
                hub_datasets.append(hub)
    ext = build.externalParameters
    recipe = ext.get("mergekit_config", {}).get("yaml") if isinstance(ext.get("mergekit_config"), dict) else None
    hyper = ext.get("hyperparameters") if isinstance(ext.get("hyperparameters"), dict) else {}
    return StepView(
        name=st.subject[0].name,
        kind=STEP_OF_BUILD_TYPE.get(build.buildType, build.buildType),
        digest=rec.digest,
        parents=parents,
        recipe_yaml=recipe if isinstance(recipe, str) else None,
        hyperparameters=dict(hyper or {}),
        datasets=datasets,
        hub_datasets=hub_datasets,
        signers=list(rec.signers),
        trusted=rec.trusted,
    )


# --- reading ------------------------------------------------------------------------------------------------------


def read_card(folder: Path) -> Card | None:
    """The folder's README.md split into front matter and body, read as huggingface_hub's `ModelCard.load` reads it
    (UTF-8 with an optional BOM, newlines kept, its own front-matter pattern); None when there is none."""
    path = folder / CARD_FILE
    if not path.is_file():
        return None
    raw = read_bounded(path, MAX_CARD_BYTES, f"model card larger than {MAX_CARD_BYTES} bytes")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(path, "model card is not UTF-8 text") from None
    return parse_card(text, path)


def parse_card(text: str, where: str | Path = CARD_FILE) -> Card:
    """Front matter found exactly where huggingface_hub finds it (`REGEX_YAML_BLOCK`: leading blank lines allowed),
    so attest checks the metadata the Hub shows. Stricter than the Hub on the YAML itself: a key given twice (the Hub
    keeps the last) and aliases are refused, since rules read these values (attest/strict_yaml.py)."""
    m = REGEX_YAML_BLOCK.search(text)
    if not m:
        return Card({}, text)
    front = load_yaml(m.group(2), where, "front matter", allow_aliases=False) or {}
    if not isinstance(front, dict):
        raise InputError(where, "front matter must be a YAML mapping")
    return Card(front, text[m.end() :])


def base_models(step: StepView) -> list[str]:
    """What Hugging Face calls the base model(s): every merged parent; the trained model for training steps."""
    roles = ("base", "parent", "student-init")
    return list(dict.fromkeys(p.display for p in step.parents if p.role in roles))


# --- checking -------------------------------------------------------------------------------------------------------


def _norm(name: str) -> str:
    return name.split("@", 1)[0].rstrip("/").rsplit("/", 1)[-1].lower()


def _human_text(body: str) -> str:
    """The prose a reader sees: the generated section and code blocks dropped, markdown rendered to plain text."""
    start, end = body.find(LINEAGE_START), body.find(LINEAGE_END)
    if start != -1 and end > start:
        body = body[:start] + body[end + len(LINEAGE_END) :]
    return plain_text(re.sub(r"```.*?```", " ", body, flags=re.S))


def _sentences(text: str) -> list[str]:
    return [s.strip() for s in re.split(r"(?<=[.!?])\s+|\n\s*\n", text) if s.strip()]


def check_card(card: Card | None, step: StepView | None) -> list[str]:
    """Every place where the card contradicts the statements (empty: consistent)."""
    if card is None:
        return ["no model card (README.md) in the folder"]
    findings: list[str] = []
    claimed = card.front.get("base_model")
    claimed_list = [str(c) for c in (claimed if isinstance(claimed, list) else [claimed] if claimed else [])]
    relation = card.front.get("base_model_relation")
    if step is None:
        if claimed_list or relation:
            findings.append(
                f"the card claims base_model {claimed_list} / base_model_relation {relation!r}, but no statement "
                "names this model"
            )
        return findings
    expected = base_models(step)
    want = {_norm(b) for b in expected}
    have = {_norm(c) for c in claimed_list}
    for b in expected:
        if _norm(b) not in have:
            findings.append(f"base_model does not name {b}, a {step.kind} parent in the statements")
    for c in claimed_list:
        if _norm(c) not in want:
            findings.append(f"base_model names {c}, which is not a parent in the statements")
    exp_rel = RELATION.get(step.kind)
    if relation is not None and exp_rel is not None and relation != exp_rel:
        findings.append(f"base_model_relation is {relation!r}, but the statements record a {step.kind} ({exp_rel!r})")
    if relation is None and exp_rel is not None and expected:
        findings.append(f"base_model_relation is missing (the statements record a {step.kind}: {exp_rel!r})")
    tags = card.front.get("tags") if isinstance(card.front.get("tags"), list) else []
    if step.kind != "merge" and "merge" in [str(t) for t in tags or []]:
        findings.append(f"tags say merge, but the statements record a {step.kind}")
    parents = ", ".join(p.display for p in step.parents) or "nothing"
    for sentence in _sentences(_human_text(card.body)):
        flat = " ".join(sentence.split())
        if step.kind == "merge" and "merg" not in flat.lower():
            m = _TRAINING_CLAIM.search(flat)
            if m:
                findings.append(
                    f"the card says {m.group(0)!r} (\u201c{flat[:160]}\u201d), but the statements record a plain "
                    f"merge of {parents} with no training step"
                )
                continue
        m = _ORIGIN_CLAIM.search(flat)
        if m and step.parents:
            findings.append(
                f"the card says {m.group(0)!r} (\u201c{flat[:160]}\u201d), but the statements record this model as "
                f"a {step.kind} of {parents}"
            )
    return findings


def step_views(steps: dict[str, StepRecord], names: dict[str, str] | None = None) -> dict[str, StepView]:
    """Every statement of a verified lineage as a card step, keyed by subject digest."""
    return {d: step_from_statement(rec, names) for d, rec in steps.items()}
