"""The trust options of verify, card, report and bom: one decorator that turns them into a TrustSet."""

from __future__ import annotations

from pathlib import Path

import click

from attest.cli.options import PathType, option_group
from attest.trust.trust_set import TrustSet, build_trust

TRUSTED_ROOT_FLAG = "--trusted-root"


def _trust(
    keys: tuple[Path, ...],
    identity: str | None,
    issuer: str | None,
    trust_root: Path | None,
    staging: bool,
    policy: Path | None,
    trusted_roots: tuple[str, ...],
) -> TrustSet:
    return build_trust(policy, keys, identity, issuer, trust_root, staging, roots=trusted_roots)


trust_options = option_group(
    "trust",
    [
        click.option("--key", "keys", multiple=True, type=PathType, help="Trusted public key."),
        click.option("--identity", help="Trusted Sigstore identity (certificate SAN)."),
        click.option("--issuer", help="OIDC issuer of --identity."),
        click.option("--trust-root", type=PathType, help="Sigstore trusted_root.json."),
        click.option("--staging", is_flag=True, help="Use the Sigstore staging instance's trust root."),
        click.option("--policy", type=PathType, help="Trust policy file (YAML, schemas/)."),
        click.option(
            TRUSTED_ROOT_FLAG,
            "trusted_roots",
            multiple=True,
            metavar="NAME=sha256:HEX",
            help="Allow-list a model root (an official base release) where the lineage may end; repeatable. "
            "The same as a `trusted_roots:` entry of a policy.",
        ),
    ],
    _trust,
)
"""Add the trust options to a command; the command receives `trust: TrustSet` instead of them."""
