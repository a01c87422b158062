"""Hugging Face model cards generated from signed lineage, and checked against it (SPEC.md section 7.2).

The card (README.md) is an ordinary file of the model folder, so it is covered by the model root: it must be
written *before* the model's own statement is signed. `attest card DIR --step KIND --parent ...` therefore builds
the card from the parents' statements plus the step about to be recorded (the same options `attest record` takes);
`attest record` then signs a root that includes the card, and any later edit of the card fails verification.
`--check` compares an existing card's front matter and wording with the statements.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from huggingface_hub.repocard import REGEX_YAML_BLOCK

from attest.atomic import atomic_write_text
from attest.errors import InputError
from attest.publish.plain_text import plain_text
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


def hf_name(uri: str | None) -> str | None:
    if uri and uri.startswith("hf://"):
        return uri.removeprefix("hf://").split("@", 1)[0]
    return None


def hf_dataset(uri: str | None) -> str | None:
    if uri and uri.startswith("hf://datasets/"):
        return uri.removeprefix("hf://datasets/").split("@", 1)[0]
    return None


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
            shown = (names or {}).get(digest) or hf_name(dep.uri)
            parents.append(ParentView(dep.name or dep.uri or digest[:16], digest, role, shown))
        elif role == "dataset":
            datasets.append((dep.name or dep.uri or "dataset", (dep.digest or {}).get("sha256", "")))
            if hub := hf_dataset(dep.uri):
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


# --- reading and writing ------------------------------------------------------------------------------------------


def read_card(folder: Path) -> Card | None:
    """The folder's README.md split into front matter and body, read as huggingface_hub's `ModelCard.load` reads it
    (UTF-8 with an optional BOM, newlines kept, its own front-matter pattern); None when there is none."""
    path = folder / CARD_FILE
    if not path.is_file():
        return None
    try:
        if path.stat().st_size > MAX_CARD_BYTES:
            raise InputError(path, f"model card larger than {MAX_CARD_BYTES} bytes")
        with path.open("rb") as f:
            raw = f.read(MAX_CARD_BYTES + 1)
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
    if len(raw) > MAX_CARD_BYTES:
        raise InputError(path, f"model card larger than {MAX_CARD_BYTES} bytes")
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


def render_card(card: Card) -> str:
    front = yaml.safe_dump(card.front, sort_keys=False, allow_unicode=True, default_flow_style=False).strip()
    body = card.body if card.body.startswith("\n") else "\n" + card.body
    return f"---\n{front}\n---\n{body.rstrip()}\n"


def write_card(folder: Path, text: str) -> Path:
    path = folder / CARD_FILE
    atomic_write_text(path, text)
    return path


# --- generating -----------------------------------------------------------------------------------------------------


def base_models(step: StepView) -> list[str]:
    """What Hugging Face calls the base model(s): every merged parent; the trained model for training steps."""
    roles = ("base", "parent", "student-init")
    return list(dict.fromkeys(p.display for p in step.parents if p.role in roles))


def front_matter(step: StepView, existing: dict[str, Any]) -> dict[str, Any]:
    """The existing front matter with base_model, base_model_relation and tags set from the step."""
    front = dict(existing)
    bases = base_models(step)
    if bases:
        front["base_model"] = bases if step.kind == "merge" or len(bases) > 1 else bases[0]
    else:
        front.pop("base_model", None)
    relation = RELATION.get(step.kind)
    if relation and bases:
        front["base_model_relation"] = relation
    else:
        front.pop("base_model_relation", None)
    if step.hub_datasets:
        front["datasets"] = list(dict.fromkeys(step.hub_datasets))
    tags = [str(t) for t in front.get("tags") or []] if isinstance(front.get("tags"), list) else []
    wanted = ["attest", *(["merge"] if step.kind == "merge" else [])]
    if step.kind != "merge":
        tags = [t for t in tags if t not in ("merge", "mergekit")]
    front["tags"] = list(dict.fromkeys([*tags, *wanted]))
    return front


def _tree_lines(step: StepView, steps: dict[str, StepView]) -> list[str]:
    lines = [f"{step.name}  [{step.kind}]"]

    def walk(parents: list[ParentView], prefix: str, seen: tuple[str, ...]) -> None:
        for i, p in enumerate(parents):
            last = i == len(parents) - 1
            sub = steps.get(p.digest)
            what = (
                f"[{sub.kind}" + (f", signed by {', '.join(sub.signers)}]" if sub.signers else "]") if sub else "[root]"
            )
            lines.append(f"{prefix}{'└── ' if last else '├── '}{p.display} ({p.role}, sha256:{p.digest[:16]}…)  {what}")
            if sub is not None and p.digest not in seen:
                walk(sub.parents, prefix + ("    " if last else "│   "), (*seen, p.digest))

    walk(step.parents, "", ())
    return lines


def _step_section(step: StepView, own: bool) -> list[str]:
    head = f"#### {step.name}: {step.kind}"
    out = [head, ""]
    if step.digest and not own:
        out.append(f"- model root: `sha256:{step.digest}`")
    for p in step.parents:
        out.append(f"- {p.role}: {p.display} (`sha256:{p.digest}`)")
    for name, digest in step.datasets:
        out.append(f"- dataset: {name} (`sha256:{digest}`)")
    if step.hyperparameters:
        shown = ", ".join(f"{k}={v}" for k, v in sorted(step.hyperparameters.items()))
        out.append(f"- hyperparameters: {shown}")
    if own:
        out.append("- signed: by the statement recorded over this folder, card included (see the command below)")
    elif step.signers:
        out.append(f"- signed by: {', '.join(step.signers)}" + ("" if step.trusted else " (not checked)"))
    else:
        out.append("- signed by: nobody trusted (signatures not checked: give --policy or --key)")
    if step.recipe_yaml:
        out += ["", "Recipe (mergekit YAML, as recorded):", "", "```yaml", step.recipe_yaml.rstrip(), "```"]
    out.append("")
    return out


def lineage_section(step: StepView, steps: dict[str, StepView], verify_command: str) -> str:
    """The generated markdown between the lineage markers: tree, each step, the verify command."""
    out = [
        LINEAGE_START,
        "## Lineage",
        "",
        "Generated by `attest card` from the signed in-toto/SLSA statements in `.attest/`; edits inside this "
        "section are overwritten, and any edit of this file after signing makes verification fail.",
        "",
        "```text",
        *_tree_lines(step, steps),
        "```",
        "",
        "### Steps",
        "",
        *_step_section(step, own=True),
    ]
    seen: set[str] = set()

    def walk(s: StepView) -> None:
        for p in s.parents:
            sub = steps.get(p.digest)
            if sub is not None and p.digest not in seen:
                seen.add(p.digest)
                out.extend(_step_section(sub, own=False))
                walk(sub)

    walk(step)
    out += ["### Verify", "", "```bash", verify_command, "```", LINEAGE_END]
    return "\n".join(out)


def generate_card(
    existing: Card | None, step: StepView, steps: dict[str, StepView], verify_command: str, title: str | None = None
) -> str:
    """The full README.md text: updated front matter, the old body with the lineage section replaced or added."""
    card = existing or Card({}, f"\n# {title or step.name}\n")
    section = lineage_section(step, steps, verify_command)
    body = card.body
    start, end = body.find(LINEAGE_START), body.find(LINEAGE_END)
    if start != -1 and end > start:
        body = body[:start] + section + body[end + len(LINEAGE_END) :]
    else:
        body = body.rstrip() + "\n\n" + section + "\n"
    return render_card(Card(front_matter(step, card.front), body))


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
