"""Hugging Face model cards generated from signed lineage (SPEC.md section 7.2).

The card (README.md) is an ordinary file of the model folder, so it is covered by the model root: it must be
written *before* the model's own statement is signed. `attest card DIR --step KIND --parent ...` therefore builds
the card from the parents' statements plus the step about to be recorded (the same options `attest record` takes);
`attest record` then signs a root that includes the card, and any later edit of the card fails verification.
`--check` compares an existing card's front matter and wording with the statements (attest.policy.model_card).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from attest.atomic import atomic_write_text
from attest.errors import InputError
from attest.lineage.locator import Locator, hub_dataset_id, hub_model_id
from attest.lineage.store import load_bundle
from attest.policy.model_card import (
    CARD_FILE,
    LINEAGE_END,
    LINEAGE_START,
    RELATION,
    Card,
    ParentView,
    StepView,
    base_models,
    check_card,
    read_card,
    step_from_statement,
    step_views,
)
from attest.record.plan import ParentArg, dataset_input, model_input, recipe_base_folder, with_base_role
from attest.statements.models import StepKind
from attest.statements.recipe import load_recipe
from attest.trust.trust_set import TrustSet
from attest.verify.engine import VerifyOptions, verify_lineage
from attest.verify.lineage import VerifiedLineage, head_step


def render_card(card: Card) -> str:
    front = yaml.safe_dump(card.front, sort_keys=False, allow_unicode=True, default_flow_style=False).strip()
    body = card.body if card.body.startswith("\n") else "\n" + card.body
    return f"---\n{front}\n---\n{body.rstrip()}\n"


def write_card(folder: Path, text: str) -> Path:
    path = folder / CARD_FILE
    atomic_write_text(path, text)
    return path


# --- generating -----------------------------------------------------------------------------------------------------


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


def pending_step(
    folder: Path,
    kind: StepKind,
    parents: Sequence[ParentArg],
    trust: TrustSet,
    *,
    teachers: Sequence[Path] = (),
    config: Path | None = None,
    datasets: Sequence[Path] = (),
    params: dict[str, Any] | None = None,
) -> tuple[StepView, dict[str, StepView]]:
    """The step `attest record` is about to sign, as a card step, plus every attested parent's verified lineage.
    Parents are planned as `attest record` plans them (attest.record.plan), each folder hashed once."""
    if not parents:
        raise InputError(None, "no --parent given")
    dataset_deps = [dataset_input(d) for d in datasets]
    recipe_text, base = None, None
    if kind == "merge":
        if config is None:
            raise InputError(None, "a merge card needs --config (the mergekit YAML)")
        recipe = load_recipe(config, recording=True)
        recipe_text, base = recipe.text, recipe_base_folder(recipe)
    locator = Locator()
    views: dict[str, StepView] = {}
    parent_views = []
    for arg in with_base_role([*parents, *(ParentArg("teacher", t) for t in teachers)], base):
        if load_bundle(arg.path):  # verified first: its hash is the one the input's name reuses
            lineage = verify_lineage(arg.path, trust, VerifyOptions(evaluate_policy=False), locator)
            views.update(step_views(lineage.steps, trust.roots))
        role, ref = model_input(arg, locator)
        shown = arg.hub or trust.roots.get(ref.model_root) or hub_model_id(ref.uri)  # a Hub id given with @ wins
        parent_views.append(ParentView(ref.name, ref.model_root, role, shown))
    step = StepView(
        name=folder.resolve().name,
        kind=kind,
        digest=None,
        parents=parent_views,
        recipe_yaml=recipe_text,
        hyperparameters=dict(params or {}),
        datasets=[(dep.name or "dataset", dep.sha256 or "") for dep in dataset_deps],
        hub_datasets=[hub for dep in dataset_deps if (hub := hub_dataset_id(dep.uri))],
    )
    return step, views


def verify_command_line(folder: Path, trust: TrustSet) -> str:
    """The command a reader of the card runs to check it (the policy or keys the card was generated with)."""
    cmd = f"attest verify ./{folder.resolve().name}"
    if trust.policy_path is not None:
        return f"{cmd} --policy {trust.policy_path.name}"
    if trust.keys:
        return cmd + "".join(f" --key {k.name}" for k in trust.keys)
    return f"{cmd} --key PUBLISHER.pub  # or --policy trust-policy.yaml"


def recorded_card_is_current(lineage: VerifiedLineage, trust: TrustSet, verify_cmd: str, title: str | None) -> Path:
    """`attest card DIR` on a recorded folder: its card must already be what the statements give (rewriting it would
    change the model root); returns the card's path, else raises InputError saying why."""
    folder = lineage.folder
    rec = lineage.steps.get(lineage.report.model_root)
    if rec is None:
        raise InputError(
            folder,
            "no statement names this folder: describe the step about to be recorded with --step KIND --parent "
            "DIR ... (the card is written before `attest record` signs it)",
        )
    existing = read_card(folder)
    views = step_views(lineage.steps, trust.roots)
    text = generate_card(existing, views[rec.digest], views, verify_cmd, title)
    on_disk = (folder / CARD_FILE).read_text(encoding="utf-8") if existing is not None else None
    if text != on_disk:
        raise InputError(
            folder / CARD_FILE,
            "this folder is already recorded and its card differs: rewriting it would change the model root and "
            "break the signature; write the card before recording (attest card DIR --step KIND --parent ...)",
        )
    return folder / CARD_FILE


def card_against_statements(lineage: VerifiedLineage) -> tuple[bool, list[str], list[str]]:
    """`attest card --check`: (a statement to check against was found, the card's contradictions, notes)."""
    rec, current = head_step(lineage.steps, lineage.report.model_root)
    notes = []
    if rec is not None and not current:
        notes.append(
            "no statement names this folder as it is (it changed after signing: `attest verify` fails); "
            "checking the card against the folder's own statement"
        )
    if rec is not None and not rec.trusted:
        notes.append("the statement about this model is not signed by a trusted signer")
    findings = check_card(read_card(lineage.folder), step_from_statement(rec) if rec is not None else None)
    if rec is None:
        notes.append(
            "nothing to check the card against: no statement names this folder (record it with `attest record`, "
            "then check)"
        )
    return rec is not None, findings, notes
