"""`attest hash`, `attest prove`, `attest check-proof`, `attest diff`."""

from __future__ import annotations

import json
import sys
from itertools import chain
from pathlib import Path
from typing import TypeVar

import click
from pydantic import ValidationError
from rich.table import Table

from attest.atomic import atomic_write_text
from attest.bounded import read_bounded
from attest.cli.cluster import cluster_executor, ray_option
from attest.cli.json_outputs import ProofCheckOutput
from attest.cli.output import ByteProgress, json_option, print_json, shown, stderr, stdout, wants_json
from attest.errors import InputError, VerificationError
from attest.executor import Executor
from attest.identity import IdentityManifest, check_proof, diff_manifests, hash_model, make_proof
from attest.identity.manifest import manifest_json
from attest.identity.merkle import ALGORITHMS, Algorithm
from attest.identity.proofs import TensorProof
from attest.strict_json import strict_loads

MAX_JSON_INPUT = 256 * 1024 * 1024
T = TypeVar("T", IdentityManifest, TensorProof)

algorithm_option = click.option(
    "--algorithm",
    type=click.Choice(ALGORITHMS),
    default="sha256",
    show_default=True,
    help="Hash function of the Merkle trees (sha256 is the one signed statements use as subject).",
)
ignore_option = click.option(
    "--ignore", "ignore", multiple=True, metavar="PATH", help="Leave this relative path out of the identity."
)


def hash_with_progress(
    path: Path,
    algorithm: Algorithm,
    *,
    use_cache: bool,
    ignore: tuple[str, ...],
    quiet: bool = False,
    executor: Executor | None = None,
) -> IdentityManifest:
    bar = ByteProgress(f"hashing {path.name}", enabled=not quiet and executor is None)
    with bar.running():
        return hash_model(
            path,
            algorithm,
            use_cache=use_cache,
            ignore=list(ignore),
            on_total=bar.total,
            on_bytes=bar.advance,
            executor=executor,
        )


def load_json_model(path: Path, model: type[T]) -> T:
    """A manifest or proof file, parsed as strict JSON (no duplicate keys, no NaN/Infinity) and then validated."""
    raw = read_bounded(path, MAX_JSON_INPUT)
    try:
        doc = strict_loads(raw)
    except RecursionError:
        raise InputError(path, "not valid JSON (nested too deeply)") from None
    except ValueError as exc:
        raise InputError(path, f"not valid JSON ({str(exc).splitlines()[0]})") from None
    try:
        return model.model_validate(doc)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "document"
        raise InputError(path, f"not a valid {model.__name__} ({where}: {first['msg']})") from None


@click.command("hash")
@click.argument("folder", type=click.Path(path_type=Path))
@algorithm_option
@click.option("--json", "as_json", is_flag=True, help="Print the identity manifest as JSON (schemas/).")
@click.option("--no-cache", is_flag=True, help="Re-read every file even if it is unchanged since the last run.")
@ignore_option
@ray_option
def hash_command(folder: Path, algorithm: Algorithm, as_json: bool, no_cache: bool, ignore: tuple[str, ...]) -> None:
    """Compute the weights root and model root of a model FOLDER (safetensors, sharded or not)."""
    with cluster_executor(quiet=as_json) as ex:
        manifest = hash_with_progress(folder, algorithm, use_cache=not no_cache, ignore=ignore, executor=ex)
    if as_json:  # print_json's text, entry by entry (manifest_json): 10^5 entries are never held as objects or text
        sys.stdout.writelines(chain(manifest_json(manifest, indent=2), ["\n"]))
        return
    table = Table(title=f"{shown(folder)}  ({algorithm})", show_lines=False)
    table.add_column("tensor / file")
    table.add_column("dtype")
    table.add_column("shape")
    table.add_column("digest")
    for t in manifest.tensors:
        table.add_row(shown(t.name), t.dtype, "x".join(map(str, t.shape)) or "scalar", t.digest[:16])
    for f in manifest.files:
        table.add_row(shown(f.path), f.kind, f"{f.size} B", f.digest[:16])
    stdout.print(table)
    stdout.print(f"tensors: {len(manifest.tensors)}  files: {len(manifest.files)}")
    for note in manifest.notes:
        stdout.print(f"[yellow]note[/]: {shown(note)}")
    stdout.print(f"weights root: [bold]{manifest.weights_root}[/]")
    stdout.print(f"model root:   [bold]{manifest.model_root}[/]")


@click.command("prove")
@click.argument("folder", type=click.Path(path_type=Path))
@click.argument("tensor")
@algorithm_option
@click.option("-o", "--output", type=click.Path(path_type=Path), help="Write the proof here instead of stdout.")
def prove_command(folder: Path, tensor: str, algorithm: Algorithm, output: Path | None) -> None:
    """Emit an inclusion proof that TENSOR is part of FOLDER's weights root and model root."""
    manifest = hash_with_progress(folder, algorithm, use_cache=False, ignore=())
    proof = make_proof(manifest, tensor)
    text = proof.model_dump_json(indent=2) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        atomic_write_text(output, text)
        stderr.print(f"proof for {shown(tensor)} written to {shown(output)}")


@click.command("check-proof")
@click.argument("proof_file", type=click.Path(path_type=Path))
@click.option("--root", "root_hex", required=True, help="The trusted model root or weights root (hex).")
@click.option(
    "--tree-size",
    type=click.IntRange(min=1),
    help="The trusted tensor count: the proof must be for exactly this many tensors (then its index is exact).",
)
@json_option
def check_proof_command(proof_file: Path, root_hex: str, tree_size: int | None) -> None:
    """Check a tensor inclusion proof against a trusted root, without the other tensors."""
    if len(root_hex) != 64 or any(c not in "0123456789abcdefABCDEF" for c in root_hex):
        raise InputError(None, f"--root {root_hex!r} is not a root: 64 hex digits expected")
    proof = load_json_model(proof_file, TensorProof)
    t = proof.tensor
    if wants_json():
        facts = {"root": root_hex, "tensor": t.name, "dtype": t.dtype, "shape": list(t.shape)}
        try:
            which = check_proof(proof, root_hex, tree_size)
        except VerificationError as exc:
            print_json(ProofCheckOutput(ok=False, problem=str(exc), **facts))
            raise SystemExit(1) from None
        print_json(ProofCheckOutput(ok=True, matched=which, **facts))
        return
    which = check_proof(proof, root_hex, tree_size)
    where = f" at index {proof.index} of {tree_size}" if tree_size is not None else ""
    stdout.print(
        f"OK: tensor {shown(t.name)} ({shown(t.dtype)} {list(t.shape)}) is included{where} in"
        f" {which.replace('_', ' ')} {shown(root_hex)}"
    )


@click.command("diff")
@click.argument("expected", type=click.Path(path_type=Path))
@click.argument("actual", type=click.Path(path_type=Path))
@algorithm_option
@click.option("--json", "as_json", is_flag=True)
def diff_command(expected: Path, actual: Path, algorithm: Algorithm, as_json: bool) -> None:
    """Name every tensor and file that differs between two models (folders or manifest JSON files).

    Exit 0 when identical, 1 when they differ."""

    def load(p: Path) -> IdentityManifest:
        if p.is_file():
            return load_json_model(p, IdentityManifest)
        return hash_with_progress(p, algorithm, use_cache=False, ignore=())

    a, b = load(expected), load(actual)
    if a.algorithm != b.algorithm:
        raise InputError(actual, f"uses {b.algorithm}, {expected} uses {a.algorithm}")
    d = diff_manifests(a, b)
    from attest.checkpoint.compare import canonical_diff, needs_canonical  # lazy: reads tensors with torch

    if not d.same_weights and needs_canonical(d):
        if expected.is_dir() and actual.is_dir():
            d = canonical_diff(expected, actual, d)
        else:
            d.notes.append("routed experts differ as stored; give both folders to compare them per expert")
    if as_json:
        click.echo(json.dumps(d.model_dump(), indent=2))
    else:
        for line in d.lines():
            stdout.print(shown(line))
        stdout.print("identical" if d.identical else "different")
    raise SystemExit(0 if d.identical else 1)


COMMANDS = [hash_command, prove_command, check_proof_command, diff_command]
