"""The `attest` command: a thin click face over the library. Each capability adds its commands from its own module.

Command modules load only when their command runs (`attest --help` imports click and nothing heavy): COMMANDS below
names each command's module and one-line summary; tests/cli/test_cli_entry.py checks it against the modules' COMMANDS.
"""

from __future__ import annotations

import gc
import importlib
import os
import sys
from typing import NoReturn

import click

from attest import __version__
from attest.errors import EXIT_INTERNAL, EXIT_USAGE, AttestError, printable

DISTRIBUTION = "attest-weights"  # the PyPI name; the command and the import package are `attest`
# What `pip install attest-weights[ml]` adds (pyproject.toml): a command that imports one of these without the extra
# exits 2 and says what to install.
ML_MODULES = frozenset({"torch", "numpy", "safetensors", "matplotlib", "huggingface_hub"})

# command name -> (module under attest.cli, summary shown by `attest --help`)
COMMANDS: dict[str, tuple[str, str]] = {
    "hash": ("identity", "Weights root, model root and per-tensor digests of a model folder."),
    "prove": ("identity", "An inclusion proof for one tensor."),
    "check-proof": ("identity", "Check a proof against a trusted model root or weights root."),
    "diff": ("identity", "Name every tensor and file that differs between two folders or manifests."),
    "verify": ("verify", "Re-hash a folder, check its signatures and walk its lineage to trusted roots."),
    "merge": ("merge", "Run a mergekit recipe with attest's streaming engine."),
    "replay": ("merge", "Recompute a merge and say whether a candidate is exactly what the recipe produces."),
    "sign": ("model_signing", "Write an OpenSSF model-signing model.sig for a folder."),
    "verify-model-sig": ("model_signing", "Check a folder against an OpenSSF model-signing model.sig."),
    "keygen": ("record", "Write a new signing key and its public key."),
    "record": ("record", "Sign a statement that a step made a model from its parents."),
    "countersign": ("record", "Add a signature (an auditor's) to a folder's own statement."),
    "detect": ("detect", "Find an undisclosed merge among candidate parents, from the weights alone."),
    "card": ("publish", "Write or check the Hugging Face model card from the signed statements."),
    "report": ("publish", "An HTML / JSON audit report of a verified folder."),
    "bom": ("publish", "A CycloneDX 1.6 ML-BOM of a verified folder."),
    "train": ("train", "Train deterministically with attest's reference loop, recorded with a replayable transcript."),
}


def load_command(name: str) -> click.Command:
    """The click command `name`, importing its module now."""
    module = importlib.import_module(f"attest.cli.{COMMANDS[name][0]}")
    for command in module.COMMANDS:
        if command.name == name:
            return command
    raise LookupError(f"attest.cli.{COMMANDS[name][0]} has no command {name!r}")


class LazyGroup(click.Group):
    """Lists commands from COMMANDS without importing them; imports one only when it is invoked or asked for help."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return load_command(cmd_name) if cmd_name in COMMANDS else super().get_command(ctx, cmd_name)

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = [
            (n, COMMANDS[n][1] if n in COMMANDS else self.commands[n].get_short_help_str())
            for n in self.list_commands(ctx)
        ]
        with formatter.section("Commands"):
            formatter.write_dl(rows)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="attest")
def cli() -> None:
    """Verifiable identity and signed, replayable lineage for model weights.

    Exit codes: 0 ok; 1 verification failed; 2 usage error or unreadable/malformed input; 3 internal error.
    """


def entry() -> None:
    """The `attest` console script (and `python -m attest`): main, then a process exit that skips the interpreter's
    final garbage collections. Shutdown collects the whole heap several times while it clears modules; with numba and
    LLVM loaded (detect, merge) that took ~0.45 s of a command on a 2-core host, for memory the OS takes back anyway.
    gc.freeze() moves every live object out of the collector's sight first: objects are still released as their
    references drop, only the cycle search over them is skipped. Not in `main`, which tests call in-process."""
    try:
        main()
    finally:
        gc.freeze()


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
    except ModuleNotFoundError as exc:
        missing = _missing_ml_module(exc)
        if missing is None:
            _internal(exc)
        click.echo(
            f"attest: error: this command needs {missing}, which is not installed: pip install '{DISTRIBUTION}[ml]'",
            err=True,
        )
        sys.exit(EXIT_USAGE)
    except KeyboardInterrupt:
        click.echo("attest: interrupted", err=True)
        sys.exit(130)
    except Exception as exc:
        _internal(exc)
    sys.exit(rv if isinstance(rv, int) else 0)


def _missing_ml_module(exc: ModuleNotFoundError) -> str | None:
    """The top-level name of a missing module of the `[ml]` extra, or None when the missing module is anything else
    (then it is a bug of ours: exit 3)."""
    top = (exc.name or "").partition(".")[0]
    return top if top in ML_MODULES else None


def _internal(exc: BaseException) -> NoReturn:
    """A bug of ours: still one line, unless asked for the traceback."""
    if os.environ.get("ATTEST_DEBUG"):
        raise exc
    click.echo(
        f"attest: internal error: {type(exc).__name__}: {printable(str(exc))} (set ATTEST_DEBUG=1 for details)",
        err=True,
    )
    sys.exit(EXIT_INTERNAL)
