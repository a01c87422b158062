"""`attest merge` and `attest replay`: a thin face over attest.merge and attest.replay.

`attest merge` returns a MergeResult holding everything a signed merge statement needs (recipe text, parents,
seed, device); signing (`--key`) will hand it to the statements API (issue #3) once that lands.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from attest.cli.cluster import cluster_executor, ray_option, unit_cache_option
from attest.cli.json_outputs import MergeOutput
from attest.cli.options import choice_option, device_option, parents_dir_option
from attest.cli.output import json_option, print_json, stderr, stdout, wants_json
from attest.lineage.locator import Locator
from attest.record.plan import ParentArg, merge_inputs, record_merge
from attest.record.recorder import Signing, internal_parameters
from attest.record.session import load_keys

if TYPE_CHECKING:
    from attest.merge import MergeRecipe, MergeResult
    from attest.replay import ReplayReport
    from attest.unit_cache import UnitCodec

compute_device_option = device_option("Where tensors are computed (cuda needs a CUDA build of torch and a GPU).")
tie_order_option = choice_option(
    "--tie-order",
    ["mergekit", "stable"],
    "mergekit",
    "TIES/breadcrumbs: break ties at the magnitude cutoff like mergekit's CPU sort (bit-exact with mergekit; "
    "ranked on the CPU on every device) or by lower index (linear time, identical on every device).",
)
layout_option = choice_option(
    "--layout",
    ["mergekit", "per-expert"],
    "mergekit",
    "Mixture-of-experts models: write (or expect) the routed experts fused with config.json rewritten through "
    "transformers, exactly as mergekit 0.1.5 does, or per expert as the parents store them. Dense models: no effect.",
)
SEED_TYPE = click.IntRange(-(1 << 63), (1 << 63) - 1)  # int64, as the mask key packs it
parents_option = parents_dir_option(
    "Folder holding the models the recipe names, found there by relative path, last path component, or "
    "org--name. When given, models are looked up only under these folders (absolute and '..' references are "
    "refused); without it, the recipe's paths are used as written. Repeatable.",
    metavar="DIR",
)


@click.command("merge")
@click.argument("config", type=click.Path(path_type=Path))
@click.argument("out", type=click.Path(path_type=Path))
@compute_device_option
@click.option("--seed", type=SEED_TYPE, default=None, help="Seed of the keyed mask generator (DARE, DELLA); recorded.")
@parents_option
@tie_order_option
@layout_option
@click.option(
    "--key", "keys", multiple=True, type=click.Path(path_type=Path), help="Sign a merge statement with this key."
)
@json_option
def merge_command(
    config: Path,
    out: Path,
    device: str,
    seed: int | None,
    parents_dirs: tuple[Path, ...],
    tie_order: str,
    layout: str,
    keys: tuple[Path, ...],
) -> None:
    """Merge the models of a mergekit CONFIG (YAML) into the folder OUT, tensor by tensor; with --key, also sign
    the merge statement (recipe, parents' roots, seed, engine) into OUT/.attest/ in the same step."""
    from attest.merge import load_recipe, run_merge  # torch loads only for the commands that use it

    recipe = load_recipe(config)
    parents = Locator(parents_dirs).recipe_models(recipe.referenced_models())
    signing = None
    if keys:  # load keys (and ask for passphrases) before the merge, not after
        signing = Signing(load_keys(list(keys)))
    result = run_merge(recipe, parents, out, device=device, seed=seed, tie_order=tie_order, layout=layout)
    for note in result.notes:
        stderr.print(f"note: {note}")
    seed_text = f", seed {result.seed}" if result.seed is not None else ""
    seed_text += f", experts {result.layout}" if result.layout is not None else ""
    if not wants_json():
        stdout.print(
            f"merged {result.tensor_count} tensors ({result.method}, {result.num_layers} layers{seed_text}) "
            f"into {result.output}"
        )
    recorded = _record(result, recipe, config, signing) if signing is not None else None
    if wants_json():
        print_json(
            MergeOutput(
                output=str(result.output),
                method=result.method,
                tensors=result.tensor_count,
                layers=result.num_layers,
                seed=result.seed,
                device=result.device,
                tie_order=result.tie_order,
                layout=result.layout,
                parents={ref: str(path) for ref, path in result.parents.items()},
                notes=result.notes,
                statement_sha256=recorded[0] if recorded else None,
                bundle_path=str(recorded[1]) if recorded else None,
            )
        )


def _record(result: MergeResult, recipe: MergeRecipe, config: Path, signing: Signing) -> tuple[str, Path]:
    args = [ParentArg("parent", path) for path in result.parents.values()]
    base = result.parents.get(recipe.base_model) if recipe.base_model else None
    inputs = merge_inputs(recipe, config, args, base)
    internal = internal_parameters(extra=dict(result.engine_parameters()))
    recorded = record_merge(recipe, inputs, result.output, signing, internal)
    digest = hashlib.sha256(recorded.payload).hexdigest()
    if not wants_json():
        stdout.print(f"signed merge statement {digest[:16]} into {recorded.bundle_path}")
    return digest, recorded.bundle_path


def _print_report(report: ReplayReport) -> None:
    from attest.replay import TensorStatus  # lazy: the replay wing loads torch

    for row in report.tensors:
        if row.status is not TensorStatus.EXACT:
            stdout.print(f"{row.status.value:>16}  {row.name}  {row.detail or ''}")
    for note in report.notes:
        stdout.print(f"note: {note}")
    counts = report.counts
    stdout.print(
        f"exact {counts.exact}, within tolerance {counts.within_tolerance} (<= {report.tolerance_ulps} ulp), "
        f"mismatch {counts.mismatch}"
    )
    stdout.print(report.summary)


def _replay_codecs() -> dict[Callable[..., Any], UnitCodec[Any, Any]]:
    from attest.replay.units import REPLAY_CODEC, replay_group  # lazy: the replay wing loads torch

    return {replay_group: REPLAY_CODEC}


@click.command("replay")
@click.argument("config", type=click.Path(path_type=Path))
@click.argument("candidate", type=click.Path(path_type=Path))
@parents_option
@compute_device_option
@click.option("--seed", type=SEED_TYPE, default=None, help="The seed the merge used (DARE, DELLA).")
@choice_option(
    "--masks",
    ["attest", "mergekit"],
    "attest",
    "How the merge drew its masks: attest's keyed generator, or mergekit's global CPU generator (--random-seed).",
    dest="mask_generator",
)
@click.option(
    "--tolerance-ulps",
    type=int,
    default=None,
    help="Accept differences up to this many ulps (default 0 on cpu, 1 on cuda).",
)
@tie_order_option
@layout_option
@click.option("--json", "as_json", is_flag=True, help="Print the replay report as JSON (schemas/).")
@ray_option
@unit_cache_option
def replay_command(
    config: Path,
    candidate: Path,
    parents_dirs: tuple[Path, ...],
    device: str,
    seed: int | None,
    mask_generator: str,
    tolerance_ulps: int | None,
    tie_order: str,
    layout: str,
    as_json: bool,
) -> None:
    """Recompute the merge CONFIG from its parents and compare it with the CANDIDATE folder, tensor by tensor.

    Exit 0 when the candidate is what the recipe produces (exactly or within the tolerance), 1 when not."""
    from attest.merge import load_recipe  # lazy: the merge engine loads torch
    from attest.replay import Verdict, replay  # lazy: the replay wing loads torch

    recipe = load_recipe(config)
    parents = Locator(parents_dirs).recipe_models(recipe.referenced_models())
    with cluster_executor(quiet=as_json, codecs=_replay_codecs) as ex:
        report = replay(
            recipe,
            parents,
            candidate,
            device=device,
            seed=seed,
            mask_generator=mask_generator,
            tolerance_ulps=tolerance_ulps,
            tie_order=tie_order,
            layout=layout,
            executor=ex,
        )
    if as_json:
        print_json(report)
    else:
        _print_report(report)
    ok = report.verdict in (Verdict.REPRODUCED, Verdict.REPRODUCED_WITHIN_TOLERANCE)
    raise SystemExit(0 if ok else 1)


COMMANDS = [merge_command, replay_command]
