"""The trust options of verify, card, report and bom: one decorator that turns them into a TrustSet."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

TRUSTED_ROOT_FLAG = "--trusted-root"

_OPTIONS = [
    click.option("--key", "keys", multiple=True, type=click.Path(path_type=Path), help="Trusted public key."),
    click.option("--identity", help="Trusted Sigstore identity (certificate SAN)."),
    click.option("--issuer", help="OIDC issuer of --identity."),
    click.option("--trust-root", type=click.Path(path_type=Path), help="Sigstore trusted_root.json."),
    click.option("--staging", is_flag=True, help="Use the Sigstore staging instance's trust root."),
    click.option("--policy", type=click.Path(path_type=Path), help="Trust policy file (YAML, schemas/)."),
    click.option(
        TRUSTED_ROOT_FLAG,
        "trusted_roots",
        multiple=True,
        metavar="NAME=sha256:HEX",
        help="Allow-list a model root (an official base release) where the lineage may end; repeatable. "
        "The same as a `trusted_roots:` entry of a policy.",
    ),
]


def trust_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add the trust options to a command; the command receives `trust: TrustSet` instead of them."""

    @functools.wraps(f)
    def wrapper(
        *args: Any,
        keys: tuple[Path, ...],
        identity: str | None,
        issuer: str | None,
        trust_root: Path | None,
        staging: bool,
        policy: Path | None,
        trusted_roots: tuple[str, ...],
        **kwargs: Any,
    ) -> Any:
        from attest.trust.trust_set import build_trust

        kwargs["trust"] = build_trust(policy, keys, identity, issuer, trust_root, staging, roots=trusted_roots)
        return f(*args, **kwargs)

    command: Callable[..., Any] = wrapper
    for option in reversed(_OPTIONS):
        command = option(command)
    return command
