"""`attest detect`: find an undisclosed merge among candidate parents, from the weights alone."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.table import Table

from attest.cli.cluster import cluster_executor, ray_option, unit_cache_option
from attest.cli.output import ByteProgress, stderr, stdout
from attest.errors import InputError

if TYPE_CHECKING:
    from attest.forensics import DetectReport
    from attest.unit_cache import UnitCodec

_STYLE = {
    "pure_merge": "bold green",
    "merge_plus_training": "bold yellow",
    "derived_not_merge": "bold cyan",
    "undetermined": "bold magenta",
    "not_derived": "bold",
}


def _detect_codecs() -> dict[Callable[..., Any], UnitCodec[Any, Any]]:
    from attest.forensics.units import DETECT_CODEC, detect_group  # lazy: attest.forensics loads torch

    return {detect_group: DETECT_CODEC}


@click.command("detect")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option(
    "--candidate",
    "candidates",
    multiple=True,
    required=True,
    type=click.Path(path_type=Path),
    help="A candidate parent folder (repeat for each).",
)
@click.option("--base", type=click.Path(path_type=Path), help="The common base: fit M - B on the deltas P_i - B.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (schemas/detect-report.schema.json).")
@click.option("--plot", type=click.Path(path_type=Path), help="Write a PNG of the coefficients per layer here.")
@click.option(
    "--claim",
    "claim",
    is_flag=True,
    help="Check each finetune/distill the model's own statements claim after the merge.",
)
@ray_option
@unit_cache_option
def detect_command(
    folder: Path, candidates: tuple[Path, ...], base: Path | None, as_json: bool, plot: Path | None, claim: bool
) -> None:
    """Fit FOLDER as a merge of the candidates; say whether it is one, and what else happened to it."""
    if plot is not None and plot.suffix.lower() != ".png":
        raise InputError(plot, "--plot writes a PNG: give a path ending in .png")
    with cluster_executor(quiet=as_json, codecs=_detect_codecs) as ex:
        bar = ByteProgress(f"reading {folder.name} and {len(candidates)} candidates", enabled=not as_json and not ex)
        with bar.running():
            from attest.forensics import detect  # torch loads only when this command runs

            report = detect(folder, list(candidates), base, on_total=bar.total, on_bytes=bar.advance, executor=ex)
    if claim:
        from attest.forensics.claims import check_claims  # lazy: attest.forensics loads torch

        checks, notes = check_claims(folder, report)
        report = report.model_copy(update={"claims": checks, "notes": [*report.notes, *notes]})
    if plot is not None:
        from attest.forensics.plot import plot_coefficients  # lazy: matplotlib, only for --plot

        plot_coefficients(report, plot)
        if as_json:
            stderr.print(f"plot written to {plot}")
    if as_json:
        from attest.forensics.report import report_json_chunks  # lazy: importing attest.forensics loads torch

        # Every field, nulls included: `ci_low: null` says "undetermined", an absent key says nothing. Streamed: a
        # large MoE's report lists 10^5 tensors.
        for chunk in report_json_chunks(report):
            sys.stdout.write(chunk)
        sys.stdout.write("\n")
        return
    _summary(report)
    if plot is not None:
        stdout.print(f"plot: {plot}")


def _summary(r: DetectReport) -> None:
    from attest.forensics.report import display_names  # lazy: importing attest.forensics loads torch

    names = display_names(r)
    stdout.print(f"verdict: [{_STYLE[r.verdict]}]{r.verdict}[/]")
    stdout.print(f"  {r.reason}")
    if r.alignment is not None:
        al = r.alignment
        moved = [p for p in al.permutations if p.moved]
        parts = ", ".join(
            f"{p.kind}{'' if p.layer is None else f' L{p.layer}'} {p.moved}/{p.size} (cos {p.cosine:.3f})"
            for p in moved
        )
        state = "aligned" if al.applied else "alignment not applied"
        stdout.print(f"{state}: {al.reason}")
        stdout.print(f"  before alignment: {al.plain_verdict} ({al.plain_reason})")
        if parts:
            stdout.print(f"  permutations: {parts}")
    table = Table(title="coefficients (median over tensors, 95% bootstrap CI over tensors)")
    for col in ("participant", "value", "CI low", "CI high", "significant"):
        table.add_column(col)
    for c in r.coefficients:
        table.add_row(
            names.get(c.candidate, c.candidate),
            f"{c.value:.5f}",
            _fmt(c.ci_low),
            _fmt(c.ci_high),
            "yes" if c.significant else "no",
        )
    stdout.print(table)
    extra = [f"explained {r.explained:.4f}" if r.explained is not None else ""]
    if r.merge_test is not None:
        t = r.merge_test
        extra.append(
            f"merge share {t.merge_share:.4f} (critical {t.critical:.2f}, {t.tensors_above} of {t.tensors} tensors "
            f"above; training share {t.training_share:.4f})"
        )
        if t.midpoint_ratio is not None and t.mean_nearest is not None:
            extra.append(
                f"midpoint ratio {t.midpoint_ratio:.4f} (critical {t.midpoint_critical:.2f}; the candidates' mean is "
                f"nearest in {t.mean_nearest:.0%} of the elements)"
            )
    if r.fit_cos is not None:
        extra.append(f"cos(M - B, fit) {r.fit_cos:.5f}")
    if r.coefficient_sum is not None:
        extra.append(f"sum of candidate coefficients {r.coefficient_sum:.5f}")
    stdout.print("fit: " + ", ".join(e for e in extra if e))
    if r.shares and r.verdict in ("pure_merge", "merge_plus_training"):
        shares = [
            f"{names.get(s.candidate, s.candidate)} {s.value:.4f} [{_fmt(s.ci_low)}, {_fmt(s.ci_high)}]"
            for s in r.shares
        ]
        stdout.print("candidate shares (each candidate's coefficient over their sum): " + ", ".join(shares))
    for s in r.spread:
        stdout.print(
            f"spread over layers, {names.get(s.candidate, s.candidate)}: {s.shape} (range {s.layer_range:.4f})"
        )
    if r.residual is not None:
        res = r.residual
        hist = ", ".join(f"{b.ulps} ulp: {b.elements}" for b in res.ulp_histogram if b.elements)
        stdout.print(
            f"residual at storage precision: {res.differing} of {res.elements} elements differ ({hist or 'none'}); "
            f"{res.unexplained} unexplained by rounding ({res.unexplained_fraction:.2e}, floor {res.floor:.0e}) "
            f"in {res.tensors_with_unexplained} of {res.tensors} tensors"
        )
    for rel in r.relations:
        corr = f"{rel.correlation:.4f}" if rel.correlation is not None else "n/a"
        stdout.print(
            f"relation to {names.get(rel.model, rel.model)}: correlation {corr}, relative distance {rel.distance:.4f}"
        )
    for h in r.hints:
        stdout.print(f"[magenta]hint[/] {h.method}: {h.evidence}")
    for chk in r.claims or []:
        said = {True: "[yellow]yes[/]", False: "[red]no[/]", None: "undecided"}
        stdout.print(f"claimed {chk.step} ({chk.subject[:16]}…) changed the weights: {said[chk.changed_weights]}")
        stdout.print(f"  {chk.evidence}")
    for note in r.notes:
        stdout.print(f"[yellow]note[/]: {note}")


def _fmt(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.5f}"


COMMANDS = [detect_command]
