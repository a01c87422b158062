"""The `attest` command: a thin click face over the library. Each capability adds its commands from its own module."""

from __future__ import annotations

import os
import sys

import click

from attest import __version__
from attest.cli import detect, identity, merge, model_signing, publish, record, train, verify
from attest.errors import EXIT_INTERNAL, EXIT_USAGE, AttestError, printable


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="attest")
def cli() -> None:
    """Verifiable identity and signed, replayable lineage for model weights.

    Exit codes: 0 ok; 1 verification failed; 2 usage error or unreadable/malformed input; 3 internal error.
    """


for _module in (identity, verify, merge, model_signing, record, detect, publish, train):
    for _command in _module.COMMANDS:
        cli.add_command(_command)


def main(argv: list[str] | None = None) -> None:
    """Entry point: every failure becomes one line on stderr and a documented exit code, never a traceback."""
    try:
        rv = cli.main(args=argv, prog_name="attest", standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("attest: aborted", err=True)
        sys.exit(EXIT_USAGE)
    except click.ClickException as exc:
        exc.show()
        sys.exit(EXIT_USAGE if exc.exit_code not in (0, 1) else exc.exit_code)
    except AttestError as exc:
        click.echo(f"attest: error: {printable(str(exc))}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("attest: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug of ours: still one line, unless asked for the traceback
        if os.environ.get("ATTEST_DEBUG"):
            raise
        click.echo(
            f"attest: internal error: {type(exc).__name__}: {printable(str(exc))} (set ATTEST_DEBUG=1 for details)",
            err=True,
        )
        sys.exit(EXIT_INTERNAL)
    sys.exit(rv if isinstance(rv, int) else 0)
