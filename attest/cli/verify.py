"""`attest verify`: the product's main job."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click
from rich.tree import Tree

from attest.cli.cluster import cluster_executor, ray_option
from attest.cli.model_arg import MODEL_FOLDER
from attest.cli.options import device_option, parents_dir_option, paths_option
from attest.cli.output import ByteProgress, print_json, shown, stderr, stdout
from attest.cli.trust_options import trust_options
from attest.errors import EXIT_OK, EXIT_VERIFICATION_FAILED
from attest.policy.pipeline import verify_model
from attest.trust.trust_set import TrustSet
from attest.verify.engine import VerifyOptions
from attest.verify.report import LineageNode, VerifyReport

MAX_NONCE_BYTES = 64


class HexNonce(click.ParamType):
    """--nonce: 1 to 64 bytes as an even number of hex digits (exit 2 otherwise)."""

    name = "HEX"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> bytes:
        if isinstance(value, bytes):
            return value
        try:
            raw = bytes.fromhex(str(value))
        except ValueError:
            self.fail(f"{value!r} is not an even number of hex digits", param, ctx)
        if len(raw) > MAX_NONCE_BYTES or (value and not raw):
            self.fail(f"a nonce is 1 to {MAX_NONCE_BYTES} bytes", param, ctx)
        return raw


_VERDICT_STYLE = {
    "verified": "[green]verified[/]",
    "trusted_root": "[green]trusted root[/]",
    "unattested": "[red]unattested[/]",
    "failed": "[red]failed[/]",
}


def _label(node: LineageNode) -> str:
    """One line per node; every string from a statement or the folder goes through `shown` (no forged lines)."""
    parts = [f"[bold]{shown(node.name)}[/]", shown(node.digest[:16])]
    if node.role:
        parts.append(f"as {shown(node.role)}")
    if node.ref:
        parts.append("(shown above)")
        return "  ".join(parts)
    if node.step:
        parts.append(f"step: {shown(node.step)}")
    if node.signers:
        parts.append("signed by " + shown(", ".join(node.signers)))
    if node.rehashed:
        parts.append("re-hashed locally")
    parts.append(_VERDICT_STYLE[node.verdict])
    return "  ".join(parts)


def _tree(root: LineageNode) -> Tree:
    """The lineage as a rich tree, each model in full once (a repeat is one line): linear in the report's size.
    Built without recursion, so a deep lineage cannot exhaust the stack."""
    tree = Tree(_label(root))
    todo = [(tree, p) for p in reversed(root.parents)]
    while todo:
        branch, node = todo.pop()
        child = branch.add(_label(node))
        todo.extend((child, p) for p in reversed(node.parents))
    return tree


def render_report(report: VerifyReport) -> None:
    if report.lineage is not None:
        stdout.print(_tree(report.lineage))
    stdout.print(f"model root:   {shown(report.model_root)}")
    stdout.print(f"weights root: {shown(report.weights_root)}")
    for note in report.notes:
        stdout.print(f"[yellow]note[/]: {shown(note)}")
    for p in report.problems:
        stdout.print(f"[red]problem[/] {shown('[' + p.code + ']')}: {shown(p.message)}")
    if report.policy is not None:
        title = report.policy.name or report.policy.policy
        stdout.print(f"[bold]policy[/] {shown(title)}:")
        for r in report.policy.rules:
            mark = "[green]PASS[/]" if r.passed else "[red]FAIL[/]"
            stdout.print(f"  {mark} {shown(r.rule)}: {shown(r.title)}")
            for line in r.evidence:
                stdout.print(f"       - {shown(line)}")
    stdout.print("[bold green]VERIFIED[/]" if report.verified else "[bold red]NOT VERIFIED[/]")


def _progress(message: str) -> None:
    stderr.print(f"[dim]{shown(message)}[/]")


@click.command("verify")
@click.argument("folder", type=MODEL_FOLDER)
@trust_options
@paths_option("--attestations", "attestations", "More statements: a .intoto.jsonl file or a folder of them.")
@parents_dir_option("Folder holding parent checkpoints by name; found parents are re-hashed.")
@click.option("--ignore", "ignore", multiple=True, metavar="PATH", help="Leave this relative path out.")
@click.option("--replay", is_flag=True, help="Recompute each recorded merge from its parents and compare per tensor.")
@device_option("Where --replay computes (cpu: bit-exact; cuda: within 1 ulp).")
@click.option(
    "--replay-training",
    type=click.IntRange(1),
    metavar="N",
    help="Check the model's training transcript and re-execute N segments chosen from its statement's digest.",
)
@paths_option("--checkpoints", "checkpoints_dirs", "Checkpoints.")
@paths_option("--data", "training_data", "Training data file.")
@click.option(
    "--runner",
    "runners",
    multiple=True,
    type=click.Path(path_type=Path),
    help="Training code you trust to replay a user-loop transcript; used only if its sha256 is the recorded one.",
)
@click.option(
    "--nonce",
    type=HexNonce(),
    default="",
    help="Hex nonce of yours mixed into the segment choice, so a prover cannot re-sign until it misses a forgery.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (schemas/verify-report.schema.json).")
@click.option("--quiet", is_flag=True, help="Print nothing; the exit code says it.")
@ray_option
def verify_command(
    folder: Path,
    trust: TrustSet,
    attestations: tuple[Path, ...],
    parents_dirs: tuple[Path, ...],
    ignore: tuple[str, ...],
    replay: bool,
    device: str,
    replay_training: int | None,
    checkpoints_dirs: tuple[Path, ...],
    training_data: tuple[Path, ...],
    runners: tuple[Path, ...],
    nonce: bytes,
    as_json: bool,
    quiet: bool,
) -> int:
    """Re-hash FOLDER, check its statements' signatures against the trusted keys and identities, and walk its
    lineage to trusted roots; with a --policy that has `rules`, evaluate each procurement rule too.
    Exit 0 verified (and every rule passed), 1 not verified, 2 bad input."""
    with cluster_executor(quiet=quiet or as_json) as ex:
        bar = ByteProgress(f"hashing {folder.name}", enabled=not (quiet or as_json or ex))
        with bar.running():
            report = verify_model(
                folder,
                trust,
                VerifyOptions(
                    attestations,
                    parents_dirs,
                    ignore,
                    on_total=bar.total,
                    on_bytes=bar.advance,
                    on_step=None if (quiet or as_json) else _progress,
                    replay=replay,
                    device=device,
                    replay_training=replay_training,
                    checkpoints_dirs=checkpoints_dirs,
                    training_data=training_data,
                    training_nonce=nonce,
                    runners=runners,
                    executor=ex,
                ),
            )
    if as_json:
        print_json(report)
    elif not quiet:
        render_report(report)
    return EXIT_OK if report.verified else EXIT_VERIFICATION_FAILED


COMMANDS = [verify_command]
