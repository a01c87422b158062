"""`attest keygen`, `attest record merge|finetune|distill|quantize|convert`, `attest countersign`."""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import click
from rich.markup import escape

from attest.bounded import read_bounded
from attest.cli.json_outputs import CountersignOutput, KeygenOutput, RecordOutput
from attest.cli.options import PathType, option_group
from attest.cli.output import json_option, print_json, stdout, wants_json
from attest.errors import InputError
from attest.lineage.store import load_bundle
from attest.record.countersign import countersign
from attest.record.plan import (
    DEFAULT_PARENT_ROLE,
    ParentArg,
    merge_inputs,
    parse_checkpoint,
    parse_param,
    parse_parent,
    recipe_base_folder,
    record_merge,
)
from attest.record.recorder import RecordResult, Signing, internal_parameters
from attest.record.session import RecordingSession
from attest.signing.keys import (
    KEY_TYPES,
    PASSPHRASE_ENV,
    KeyType,
    PrivateKey,
    env_passphrase,
    generate_key,
    load_private_key,
)
from attest.statements.builders import now_rfc3339
from attest.statements.models import DEFAULT_BUILDER_ID, StepKind
from attest.statements.recipe import load_recipe
from attest.trust.trust_set import build_trust

PARENT_METAVAR = "[ROLE=]DIR[@org/name]"
PARENT_HELP = "An input model (repeatable): a folder, with its Hub repo id after '@', or hf://org/name[@rev] (cache)."
DATASET_HELP = "A dataset file (repeatable), with its Hub dataset id after '@' (FILE@org/name)."


def _passphrase_for(path: Path) -> bytes | None:
    """$ATTEST_KEY_PASSPHRASE, else a prompt on a terminal when the key file is encrypted."""
    pw = env_passphrase()
    if pw is not None:
        return pw
    try:
        encrypted = b"ENCRYPTED" in path.read_bytes()[:200]
    except OSError:
        return None
    if encrypted and sys.stdin.isatty():
        return str(click.prompt(f"passphrase for {path}", hide_input=True)).encode("utf-8")
    return None


def load_cli_key(path: Path) -> PrivateKey:
    return load_private_key(path, _passphrase_for(path))


@dataclass(frozen=True)
class Signer:
    """--key/--sigstore/--staging/--identity-token (keys loaded, Sigstore token obtained) and --builder-id."""

    signing: Signing
    builder_id: str


def _signer(
    keys: tuple[Path, ...], sigstore: bool, staging: bool, identity_token: str | None, builder_id: str
) -> Signer:
    return Signer(Signing([load_cli_key(k) for k in keys], sigstore, staging, identity_token).prepared(), builder_id)


signing_options = option_group(
    "signer",
    [
        click.option("--key", "keys", multiple=True, type=PathType, help="Private key to sign with (repeatable)."),
        click.option("--sigstore", is_flag=True, help="Also sign keyless with Sigstore (network + OIDC)."),
        click.option("--staging", is_flag=True, help="Use Sigstore's staging instance."),
        click.option("--identity-token", envvar="SIGSTORE_ID_TOKEN", help="OIDC token for --sigstore."),
        click.option("--builder-id", default=DEFAULT_BUILDER_ID, show_default=True, help="runDetails.builder.id"),
    ],
    _signer,
)


@dataclass(frozen=True)
class StepRun:
    """What --seed, --device and --dtype say about how the step ran."""

    seed: int | None
    device: str | None
    dtype: str | None


_run_options = option_group(
    "run",
    [
        click.option("--seed", type=int, help="Random seed the step used."),
        click.option("--device", help="Device the step ran on (cpu, cuda, ...)."),
        click.option("--dtype", help="Compute dtype of the step."),
    ],
    StepRun,
)


def common_options(f: Any) -> Any:
    """--output, the run's --seed/--device/--dtype (as `run: StepRun`) and --json."""
    f = _run_options(json_option(f))
    return click.option("--output", required=True, type=PathType, help="The model folder this step produced.")(f)


def _report(kind: str, result: RecordResult) -> None:
    n = len(load_bundle(result.bundle_path.parent.parent))
    if wants_json():
        print_json(
            RecordOutput(
                kind=kind,
                model=result.statement.subject[0].name,
                model_root=result.manifest.model_root,
                weights_root=result.manifest.weights_root,
                statement_sha256=_digest(result.payload),
                keyids=[s.keyid for s in result.envelope.signatures] if result.envelope else [],
                sigstore_bundle=result.sigstore_bundle,
                bundle_path=str(result.bundle_path),
                envelopes=n,
            )
        )
        return
    signers = ", ".join(s.keyid[:16] for s in result.envelope.signatures) if result.envelope else "none"
    stdout.print(f"recorded {kind}: {result.statement.subject[0].name} model root {result.manifest.model_root}")
    stdout.print(f"statement sha256 {_digest(result.payload)}; key signatures: {signers}")
    if result.sigstore_bundle:
        stdout.print("Sigstore bundle written beside it")
    stdout.print(f"bundle: {result.bundle_path} ({n} envelopes)")


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@click.command("keygen")
@click.argument("path", type=PathType)
@click.option("--type", "key_type", type=click.Choice(KEY_TYPES), default="ed25519", show_default=True)
@click.option("--passphrase", "ask", is_flag=True, help=f"Encrypt the key (prompted; or set ${PASSPHRASE_ENV}).")
@click.option(
    "--passphrase-env", metavar="VAR", help="Encrypt the key with the passphrase in this environment variable."
)
@click.option("--passphrase-file", type=PathType, help="Encrypt the key with the passphrase in this file (first line).")
@click.option("--force", is_flag=True, help="Replace an existing key.")
@json_option
def keygen_command(
    path: Path, key_type: str, ask: bool, passphrase_env: str | None, passphrase_file: Path | None, force: bool
) -> None:
    """Write a new private key to PATH (PKCS#8 PEM, mode 0600) and its public key to PATH.pub."""
    passphrase = _new_passphrase(ask, passphrase_env, passphrase_file)
    public = generate_key(path, cast(KeyType, key_type), passphrase, overwrite=force)
    if wants_json():
        print_json(
            KeygenOutput(
                key_type=key_type,
                private_key=str(path),
                public_key=f"{path}.pub",
                keyid=public.keyid,
                encrypted=passphrase is not None,
            )
        )
        return
    stdout.print(f"{key_type} key written to {path} (public key: {path}.pub, keyid {public.keyid})")


MAX_PASSPHRASE_FILE = 4096


def _new_passphrase(ask: bool, env_var: str | None, file: Path | None) -> bytes | None:
    """--passphrase-env VAR, --passphrase-file F, $ATTEST_KEY_PASSPHRASE, or (--passphrase) a prompt on a terminal:
    never a prompt without one (a pipeline would read an empty passphrase or hang)."""
    if env_var and file:
        raise InputError(None, "give --passphrase-env or --passphrase-file, not both")
    if env_var:
        value = os.environ.get(env_var)
        if not value:
            raise InputError(None, f"--passphrase-env {env_var}: the variable is not set or empty")
        return value.encode("utf-8")
    if file is not None:
        data = read_bounded(file, MAX_PASSPHRASE_FILE, f"a passphrase file is at most {MAX_PASSPHRASE_FILE} bytes")
        line = data.splitlines()[0] if data.strip(b"\r\n") else b""
        if not line:
            raise InputError(file, "the passphrase file is empty")
        return line
    passphrase = env_passphrase()
    if ask and passphrase is None:
        if not sys.stdin.isatty():
            raise InputError(
                None,
                f"--passphrase needs a terminal; use --passphrase-env VAR, --passphrase-file F or ${PASSPHRASE_ENV}",
            )
        passphrase = str(click.prompt("passphrase", hide_input=True, confirmation_prompt=True)).encode("utf-8")
    return passphrase


@click.group("record")
def record_group() -> None:
    """Sign a statement that a step made the model in --output from its parents."""


def _parents(specs: tuple[str, ...], kind: StepKind) -> list[ParentArg]:
    if not specs:
        raise InputError(None, "no --parent given")
    return [parse_parent(s, DEFAULT_PARENT_ROLE[kind]) for s in specs]


@record_group.command("merge")
@click.option("--config", "config", required=True, type=PathType, help="The mergekit YAML that was run.")
@click.option("--parent", "parents", multiple=True, metavar=PARENT_METAVAR, help=PARENT_HELP)
@common_options
@signing_options
def record_merge_command(config: Path, parents: tuple[str, ...], output: Path, run: StepRun, signer: Signer) -> None:
    """Record a mergekit merge: the YAML verbatim, its sha256 and parsed form, and each parent's roots."""
    started = now_rfc3339()
    recipe = load_recipe(config, recording=True)
    inputs = merge_inputs(recipe, config, _parents(parents, "merge"), recipe_base_folder(recipe))
    internal = internal_parameters(run.seed, run.device, run.dtype or _str_or_none(recipe.parsed.get("dtype")))
    _report("merge", record_merge(recipe, inputs, output, signer.signing, internal, started, signer.builder_id))


def _str_or_none(v: Any) -> str | None:
    return v if isinstance(v, str) else None


def _training_command(kind: StepKind) -> click.Command:
    @click.option("--parent", "parents", multiple=True, metavar=PARENT_METAVAR, help=PARENT_HELP)
    @click.option("--teacher", "teachers", multiple=True, type=PathType, help="A teacher model (distill).")
    @click.option("--dataset", "datasets", multiple=True, type=PathType, help=DATASET_HELP)
    @click.option("--code", type=PathType, help="The training code's git work tree (commit + dirty flag).")
    @click.option("--param", "params", multiple=True, metavar="KEY=VALUE", help="A hyperparameter (repeatable).")
    @click.option("--checkpoint", "checkpoints", multiple=True, metavar="[STEP=]DIR", help="Intermediate checkpoint.")
    @click.option("--allow-unchanged", is_flag=True, help="Record even if the output weights equal an input's.")
    @common_options
    @signing_options
    def command(
        parents: tuple[str, ...],
        teachers: tuple[Path, ...],
        datasets: tuple[Path, ...],
        code: Path | None,
        params: tuple[str, ...],
        checkpoints: tuple[str, ...],
        allow_unchanged: bool,
        output: Path,
        run: StepRun,
        signer: Signer,
    ) -> None:
        inputs = [*_parents(parents, kind), *(ParentArg("teacher", t) for t in teachers)]
        if kind == "distill" and not teachers:
            raise InputError(None, "a distill step needs --teacher DIR")
        session = RecordingSession(
            kind,
            output,
            parents=inputs,
            datasets=datasets,
            code=code,
            params=dict(parse_param(p) for p in params),
            seed=run.seed,
            device=run.device,
            dtype=run.dtype,
            key=signer.signing.keys,
            sigstore=signer.signing.sigstore,
            staging=signer.signing.staging,
            identity_token=signer.signing.token,
            builder_id=signer.builder_id,
            allow_unchanged=allow_unchanged,
        ).start()
        for spec in checkpoints:
            step, path = parse_checkpoint(spec)
            session.checkpoint(path, step)
        _report(kind, session.finish())

    command.__doc__ = f"Record a {kind} step: parents, datasets, code, hyperparameters and the output's roots."
    return click.command(kind)(command)


_TRAINING_KINDS: tuple[StepKind, ...] = ("finetune", "distill", "quantize", "convert")
for _kind in _TRAINING_KINDS:
    record_group.add_command(_training_command(_kind))


@click.command("countersign")
@click.argument("folder", type=PathType)
@click.option("--key", "keys", multiple=True, required=True, type=PathType, help="Private key to add (repeatable).")
@click.option("--policy", type=PathType, help="Trust policy the folder must verify under before it is signed.")
@click.option("--trusted-key", "trusted", multiple=True, type=PathType, help="Trusted public key (repeatable).")
@json_option
def countersign_command(folder: Path, keys: tuple[Path, ...], policy: Path | None, trusted: tuple[Path, ...]) -> None:
    """Verify FOLDER under --policy / --trusted-key, then add signatures (an auditor's) to its own trusted
    statements. A folder that does not verify is refused (exit 2)."""
    loaded = [load_cli_key(k) for k in keys]
    result = countersign(folder, loaded, build_trust(policy, trusted))
    if wants_json():
        added = [k.public.keyid for k in loaded if result.added[k.public.keyid]]
        bundle = str(result.bundle) if result.bundle is not None else None
        print_json(
            CountersignOutput(
                model_root=result.model_root, statements=result.statements, keyids=added, bundle_path=bundle
            )
        )
        return
    stdout.print(f"verified {escape(str(folder))} (model root {result.model_root}) under the given trust")
    for key in loaded:
        n = result.added[key.public.keyid]
        if n:
            stdout.print(f"key {key.public.keyid[:16]}: countersigned {n} of {result.statements} statement(s)")
        else:
            stdout.print(f"key {key.public.keyid[:16]}: had already signed every statement; nothing added")
    if result.bundle is None:
        stdout.print("nothing added; the bundle is unchanged")
    else:
        stdout.print(f"bundle: {escape(str(result.bundle))}")


COMMANDS = [keygen_command, record_group, countersign_command]
