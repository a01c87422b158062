"""`attest sign --format model-signing` and `attest verify-model-sig`: OpenSSF model-signing `model.sig` interop."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from attest.cli.json_outputs import SignOutput
from attest.cli.output import ByteProgress, json_option, print_json, shown, stdout, wants_json
from attest.errors import InputError, VerificationError, printable
from attest.signing.keys import (
    PASSPHRASE_ENV,
    READABLE_KEY_TYPES,
    EncryptedKeyError,
    PrivateKey,
    load_private_key,
    load_public_key,
)
from attest.signing.model_sig import (
    Trust,
    check_key_type,
    load_certificate_anchors,
    sign_model_sig,
    verify_model_sig,
)
from attest.signing.model_sig.signers import certificate_signer, key_signer, sigstore_signer
from attest.signing.sigstore import SigstoreTrust

F = TypeVar("F", bound=Callable[..., Any])

ignore_option = click.option(
    "--ignore",
    "ignore",
    multiple=True,
    metavar="PATH",
    help="Leave this path (relative to the folder) out; repeatable.",
)


def path_option(*decls: str, **kwargs: Any) -> Callable[[F], F]:
    """An option naming a file (its existence is checked where it is read, with a one-line error)."""
    return click.option(*decls, type=click.Path(path_type=Path), **kwargs)


def _load_key(key: Path, env_var: str | None) -> PrivateKey:
    """Passphrase from --passphrase-env VAR or $ATTEST_KEY_PASSPHRASE (never an argument), else a prompt on a TTY."""
    name = env_var or PASSPHRASE_ENV
    value = os.environ.get(name)
    if env_var and value is None:
        raise InputError(None, f"--passphrase-env {env_var}: the variable is not set")
    try:
        loaded = load_private_key(key, value.encode("utf-8") if value else None, key_types=READABLE_KEY_TYPES)
    except EncryptedKeyError:
        if not sys.stdin.isatty():
            raise EncryptedKeyError(
                key, "the key is encrypted: give its passphrase with --passphrase-env VAR"
            ) from None
        passphrase = str(click.prompt(f"Passphrase for {key}", hide_input=True)).encode("utf-8")
        loaded = load_private_key(key, passphrase, key_types=READABLE_KEY_TYPES)
    check_key_type(loaded)
    return loaded


@click.command("sign")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["model-signing"]),
    default="model-signing",
    show_default=True,
    help="model-signing: an OpenSSF model-signing model.sig (Sigstore bundle, DSSE).",
)
@path_option("--key", "key_path", help="EC P-256, P-384 or P-521 private key (PKCS#8 PEM): key or certificate mode.")
@path_option(
    "--signing-certificate", help="Certificate mode: the X.509 certificate (PEM) of --key, shipped in the signature."
)
@path_option(
    "--certificate-chain",
    "chain",
    multiple=True,
    help="Certificate mode: certificates (PEM) from the signing certificate's issuer up to a root; repeatable.",
)
@click.option("--sigstore", is_flag=True, help="Sigstore keyless mode (network + an OIDC identity token).")
@click.option("--staging", is_flag=True, help="With --sigstore: Sigstore's staging instance.")
@click.option("--identity-token", envvar="SIGSTORE_ID_TOKEN", help="With --sigstore: the OIDC token to sign with.")
@click.option(
    "--passphrase-env",
    metavar="VAR",
    help="Read the key's passphrase from this environment variable (default $ATTEST_KEY_PASSPHRASE).",
)
@ignore_option
@click.option("--quiet", is_flag=True, help="No progress bar.")
@json_option
def sign_command(
    folder: Path,
    fmt: str,
    key_path: Path | None,
    signing_certificate: Path | None,
    chain: tuple[Path, ...],
    sigstore: bool,
    staging: bool,
    identity_token: str | None,
    passphrase_env: str | None,
    ignore: tuple[str, ...],
    quiet: bool,
) -> None:
    """Sign a model FOLDER: writes FOLDER/model.sig, verifiable by the model-signing library and `verify-model-sig`.

    Like `model_signing sign key|certificate|sigstore`: --key KEY; --key KEY --signing-certificate CERT
    [--certificate-chain CA ...]; or --sigstore (keyless)."""
    if sigstore and (key_path or signing_certificate or chain):
        raise click.UsageError("--sigstore signs keyless: leave out --key, --signing-certificate, --certificate-chain")
    if not sigstore and key_path is None:
        raise click.UsageError("give --key KEY (with --signing-certificate for certificate mode), or --sigstore")
    if chain and signing_certificate is None:
        raise click.UsageError("--certificate-chain goes with --signing-certificate")
    if staging and not sigstore:
        raise click.UsageError("--staging applies to --sigstore")
    # every refusal (key, certificate, token) comes before the folder is hashed
    if sigstore:
        method, make = "sigstore", sigstore_signer(staging=staging, token=identity_token)
    else:
        assert key_path is not None
        key = _load_key(key_path, passphrase_env)
        if signing_certificate is None:
            method, make = "key", key_signer(key)
        else:
            method, make = "certificate", certificate_signer(key, signing_certificate, chain)
    bar = ByteProgress(f"hashing {folder.name}", enabled=not (quiet or wants_json()))
    with bar.running():
        signed = sign_model_sig(folder, make_bundle=make, ignore=ignore, on_total=bar.total, on_bytes=bar.advance)
    if wants_json():
        print_json(
            SignOutput(
                format="model-signing",
                method=method,
                signature=signed.signature,
                files=signed.resources,
                subject_sha256=signed.subject_digest,
                ignore_paths=signed.ignore_paths,
            )
        )
        return
    stdout.print(f"signed {signed.resources} files of {shown(folder)} ({method} mode): {shown(signed.signature)}")
    stdout.print(f"subject sha256: [bold]{signed.subject_digest}[/]")


@click.command("verify-model-sig")
@click.argument("model", type=click.Path(path_type=Path))
@path_option("--signature", help="The model.sig to check (default: MODEL/model.sig, or beside a single-file MODEL).")
@path_option("--key", "key_path", help="Trust this EC public key (PEM).")
@path_option(
    "--certificate-chain",
    "chain",
    multiple=True,
    help="Trust signing certificates chaining to these PEM certificates; repeatable.",
)
@click.option("--identity", help="Sigstore keyless: the signer identity (certificate SAN) to trust.")
@click.option("--issuer", help="Sigstore keyless: the OIDC issuer of that identity.")
@path_option(
    "--trust-root", help="Sigstore trusted_root.json (default: sigstore-python's bundled production root, offline)."
)
@ignore_option
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON (schemas/).")
@click.option("--quiet", is_flag=True, help="No progress bar.")
def verify_model_sig_command(
    model: Path,
    signature: Path | None,
    key_path: Path | None,
    chain: tuple[Path, ...],
    identity: str | None,
    issuer: str | None,
    trust_root: Path | None,
    ignore: tuple[str, ...],
    as_json: bool,
    quiet: bool,
) -> None:
    """Check MODEL (a folder or a single file) against an OpenSSF model-signing signature.

    Give exactly one trust: --key, --certificate-chain, or --identity with --issuer. Exit 0 verified, 1 failed,
    2 bad input."""
    chosen = [bool(key_path), bool(chain), bool(identity or issuer)]
    if sum(chosen) != 1:
        raise click.UsageError("give exactly one of --key, --certificate-chain, or --identity with --issuer")
    if (identity or issuer) and not (identity and issuer):
        raise click.UsageError("--identity and --issuer go together")
    if trust_root and not identity:
        raise click.UsageError("--trust-root applies to Sigstore keyless verification (--identity/--issuer)")
    trust: Trust
    if key_path:
        trust = load_public_key(key_path, key_types=READABLE_KEY_TYPES)
    elif chain:
        trust = load_certificate_anchors(chain)
    else:
        assert identity and issuer
        trust = SigstoreTrust(identity, issuer, trust_root)
    bar = ByteProgress(f"hashing {model.name}", enabled=not quiet and not as_json)
    with bar.running():
        result = verify_model_sig(
            model, trust, signature_path=signature, ignore=ignore, on_total=bar.total, on_bytes=bar.advance
        )
    if as_json:
        print_json(result)
        if not result.verified:
            raise SystemExit(1)
        return
    for note in result.notes:
        stdout.print(f"[yellow]note[/]: {shown(note)}")
    if result.verified:
        stdout.print(
            f"OK: {shown(model)} matches {shown(result.signature)} ({result.kind} signature, "
            f"{result.files_checked} files, subject sha256 {shown(result.subject_digest)})"
        )
        stdout.print(f"signed by {shown(result.signer)}")
        return
    for problem in result.problems:
        click.echo(f"FAILED: {printable(problem)}", err=True)
    raise VerificationError(
        f"{model} does not verify against {result.signature} ({len(result.problems)} "
        f"problem{'s' if len(result.problems) != 1 else ''}; first: {result.problems[0]})"
    )


COMMANDS = [sign_command, verify_model_sig_command]
