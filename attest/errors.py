"""Typed errors whose message is what the user reads: one line that names the file and the problem."""

from __future__ import annotations

from pathlib import Path

# Exit codes (documented in README.md and SPEC.md).
EXIT_OK = 0
EXIT_VERIFICATION_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERNAL = 3


class AttestError(Exception):
    """Base class: carries the exit code the CLI should use."""

    exit_code = EXIT_USAGE


def printable(text: str) -> str:
    """A hostile file name or header string, shown so it cannot forge lines or terminal output: control characters
    and lone surrogates become escapes."""
    return "".join(
        c
        if c.isprintable() and not 0xD800 <= ord(c) <= 0xDFFF
        else c.encode("unicode_escape", "backslashreplace").decode()
        for c in text
    )


class InputError(AttestError):
    """Unreadable, malformed or hostile input (exit 2). The message names the file."""

    def __init__(self, path: str | Path | None, problem: str) -> None:
        self.path = printable(str(path)) if path is not None else None
        self.problem = printable(problem)
        super().__init__(f"{self.path}: {self.problem}" if self.path else self.problem)

    def __reduce__(self) -> tuple[object, ...]:
        """Rebuilt from (path, problem), so an error a worker process raises arrives whole (attest.cluster)."""
        return (_rebuild_input_error, (type(self), self.path, self.problem))


def _rebuild_input_error(cls: type[InputError], path: str | None, problem: str) -> InputError:
    err = InputError.__new__(cls)
    InputError.__init__(err, path, problem)
    return err


class VerificationError(AttestError):
    """A check that ran and failed (exit 1)."""

    exit_code = EXIT_VERIFICATION_FAILED
