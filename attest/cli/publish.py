"""`attest card`, `attest report`, `attest bom`: lineage for hub users, auditors and procurement systems."""

from __future__ import annotations

import json
from pathlib import Path
from typing import cast

import click
from rich.markup import escape

from attest.atomic import atomic_write_text
from attest.cli.json_outputs import CardCheckOutput
from attest.cli.model_arg import MODEL_FOLDER
from attest.cli.options import PathType, parents_dir_option
from attest.cli.output import ByteProgress, json_option, print_json, stderr, stdout, wants_json
from attest.cli.trust_options import trust_options
from attest.errors import EXIT_OK, EXIT_VERIFICATION_FAILED, InputError
from attest.policy.model_card import read_card
from attest.policy.pipeline import verify_with_policy
from attest.publish.bom import build_bom
from attest.publish.card import (
    card_against_statements,
    generate_card,
    pending_step,
    recorded_card_is_current,
    verify_command_line,
    write_card,
)
from attest.publish.report import build_report, render_html
from attest.record.plan import DEFAULT_PARENT_ROLE, parse_param, parse_parent
from attest.statements.models import STEP_KINDS, StepKind
from attest.trust.trust_set import TrustSet
from attest.verify.engine import VerifyOptions
from attest.verify.lineage import VerifiedLineage


def _verify(
    folder: Path, trust: TrustSet, parents_dirs: tuple[Path, ...], quiet: bool, policy_rules: bool = True
) -> VerifiedLineage:
    bar = ByteProgress(f"hashing {folder.name}", enabled=not quiet)
    with bar.running():
        return verify_with_policy(
            folder,
            trust,
            VerifyOptions(
                parents_dirs=parents_dirs,
                on_total=bar.total,
                on_bytes=bar.advance,
                evaluate_policy=policy_rules,
                on_step=None if quiet else lambda m: stderr.print(f"[dim]{escape(m)}[/]"),
            ),
        )


@click.command("card")
@click.argument("folder", type=PathType)
@click.option("--check", is_flag=True, help="Only report where the existing card contradicts the statements.")
@click.option("--step", "kind", type=click.Choice(STEP_KINDS), help="The step about to be recorded (card first).")
@click.option("--config", type=PathType, help="The mergekit YAML of a merge step.")
@click.option(
    "--parent", "parents", multiple=True, metavar="[ROLE=]DIR[@org/name]", help="An input model; @org/name: its Hub id."
)
@click.option("--teacher", "teachers", multiple=True, type=PathType, help="A teacher model (distill).")
@click.option("--dataset", "datasets", multiple=True, type=PathType, help="A dataset file; FILE@org/name: its Hub id.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="A hyperparameter (repeatable).")
@click.option("--title", help="Heading of a new card (default: the folder name).")
@parents_dir_option()
@trust_options
@json_option
def card_command(
    folder: Path,
    check: bool,
    kind: str | None,
    config: Path | None,
    parents: tuple[str, ...],
    teachers: tuple[Path, ...],
    datasets: tuple[Path, ...],
    params: tuple[str, ...],
    title: str | None,
    parents_dirs: tuple[Path, ...],
    trust: TrustSet,
) -> int:
    """Write FOLDER/README.md's front matter and lineage section from the signed statements, or --check it.

    The card is covered by the model root, so write it BEFORE `attest record` signs: pass --step KIND and the same
    --parent/--config/--dataset/--param as the record command that follows. --check exits 1 when the card
    contradicts the statements."""
    if check:
        return _check_card(folder, trust, parents_dirs)
    verify_cmd = verify_command_line(folder, trust)
    existing = read_card(folder)
    if kind is None:
        lineage = _verify(folder, trust, parents_dirs, quiet=False, policy_rules=False)
        stdout.print(f"card {recorded_card_is_current(lineage, trust, verify_cmd, title)} is up to date")
        return EXIT_OK
    step_kind = cast(StepKind, kind)
    step, views = pending_step(
        folder,
        step_kind,
        [parse_parent(s, DEFAULT_PARENT_ROLE[step_kind]) for s in parents],
        trust,
        teachers=teachers,
        config=config,
        datasets=datasets,
        params=dict(parse_param(p) for p in params),
    )
    text = generate_card(existing, step, views, verify_cmd, title)
    path = write_card(folder, text)
    stdout.print(f"card written: {path} ({kind} of {', '.join(p.display for p in step.parents)})")
    stdout.print("now sign the folder, card included: attest record " + kind + " ... --output " + str(folder))
    return EXIT_OK


def _check_card(folder: Path, trust: TrustSet, parents_dirs: tuple[Path, ...]) -> int:
    """`card --check`: exit 1 on a contradiction, and also when no statement names the folder (nothing to check
    the card against is not agreement)."""
    as_json = wants_json()
    lineage = _verify(folder, trust, parents_dirs, quiet=as_json, policy_rules=False)
    checked, findings, notes = card_against_statements(lineage)
    result = CardCheckOutput(
        card=str(folder / "README.md"),
        checked=checked,
        agrees=checked and not findings,
        contradictions=findings,
        notes=notes,
    )
    if as_json:
        print_json(result)
    else:
        for note in notes:
            stdout.print(f"[yellow]note[/]: {escape(note)}")
        for f in findings:
            stdout.print(f"[red]contradiction[/]: {escape(f)}")
        if result.agrees:
            stdout.print("[green]the card agrees with the statements[/]")
    return EXIT_OK if result.agrees else EXIT_VERIFICATION_FAILED


@click.command("report")
@click.argument("folder", type=MODEL_FOLDER)
@click.option("--html", "html_path", type=PathType, help="Write one self-contained HTML page here.")
@click.option("--json", "as_json", is_flag=True, help="Print the same content as JSON (schemas/audit-report).")
@parents_dir_option()
@trust_options
def report_command(
    folder: Path,
    html_path: Path | None,
    as_json: bool,
    parents_dirs: tuple[Path, ...],
    trust: TrustSet,
) -> int:
    """Verify FOLDER (and the --policy rules) and write an audit report: lineage graph, verdicts, evidence, roots,
    signers. Exit 0 verified, 1 not verified (the report is written either way), 2 bad input."""
    if html_path is None and not as_json:
        raise InputError(None, "give --html FILE and/or --json")
    lineage = _verify(folder, trust, parents_dirs, quiet=as_json)
    report = build_report(lineage, trust.roots)
    if html_path is not None:
        atomic_write_text(html_path, render_html(report))
        if not as_json:
            stdout.print(f"report written: {html_path} ({'VERIFIED' if report.verified else 'NOT VERIFIED'})")
    if as_json:
        print_json(report)
    return EXIT_OK if report.verified else EXIT_VERIFICATION_FAILED


@click.command("bom")
@click.argument("folder", type=MODEL_FOLDER)
@click.option("--format", "fmt", type=click.Choice(["cyclonedx"]), default="cyclonedx", show_default=True)
@click.option("-o", "--output", type=PathType, help="Write the BOM here (default: stdout).")
@parents_dir_option()
@click.option("--with-rules", is_flag=True, help="Evaluate the policy's rules (the training replay is recorded).")
@trust_options
def bom_command(
    folder: Path,
    fmt: str,
    output: Path | None,
    parents_dirs: tuple[Path, ...],
    with_rules: bool,
    trust: TrustSet,
) -> None:
    """A CycloneDX 1.6 ML-BOM of FOLDER: the model and its ancestors as machine-learning-model components, their
    attest roots, pedigree and each step's formulation. Statements are included only as verified under the trust."""
    lineage = _verify(folder, trust, parents_dirs, quiet=output is None, policy_rules=with_rules)
    text = json.dumps(build_bom(lineage), indent=2) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        atomic_write_text(output, text)
        stdout.print(f"CycloneDX 1.6 BOM written: {output}")


COMMANDS = [card_command, report_command, bom_command]
