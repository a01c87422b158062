"""Recording from inside a training script: inputs are hashed and the key is loaded *before* training starts (a bad
key must not cost a training run), the environment is captured, and the output is hashed and signed at the end.

    with recording("finetune", output=out, parents=[base], key="builder.key", params={"lr": 1e-4}) as rec:
        train(...)
        rec.checkpoint(out / "checkpoint-100", step=100)   # optional
        model.save_pretrained(out)

An exception inside the block records nothing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from attest.errors import InputError
from attest.identity import hash_model
from attest.record.recorder import RecordResult, Signing, internal_parameters, record_step
from attest.record.refs import ModelRef, resolve_model
from attest.signing.keys import PrivateKey, env_passphrase, load_private_key
from attest.statements.builders import (
    checkpoint_byproduct,
    code_dependency,
    dataset_dependency,
    new_invocation_id,
    now_rfc3339,
)
from attest.statements.models import DEFAULT_BUILDER_ID, STEP_KINDS, ResourceDescriptor, StepKind

PathLike = str | os.PathLike[str]
ParentSpec = PathLike | tuple[str, PathLike]
"""A parent folder, or (role, folder)."""

DEFAULT_PARENT_ROLE: dict[StepKind, str] = {
    "merge": "parent",
    "finetune": "base",
    "distill": "student-init",
    "quantize": "base",
    "convert": "base",
}


def load_keys(keys: Sequence[PathLike | PrivateKey], passphrase: bytes | None = None) -> list[PrivateKey]:
    """Private keys from paths (passphrase: the given one, else $ATTEST_KEY_PASSPHRASE) or already loaded."""
    pw = passphrase if passphrase is not None else env_passphrase()
    return [k if isinstance(k, PrivateKey) else load_private_key(k, pw) for k in keys]


class RecordingSession:
    """One step being recorded: start() before the work, finish() after it. See the module docstring."""

    def __init__(
        self,
        kind: StepKind,
        output: PathLike,
        *,
        parents: Sequence[ParentSpec] = (),
        teacher: PathLike | None = None,
        datasets: Sequence[PathLike] = (),
        code: PathLike | None = None,
        params: dict[str, Any] | None = None,
        seed: int | None = None,
        device: str | None = None,
        dtype: str | None = None,
        key: PathLike | PrivateKey | Sequence[PathLike | PrivateKey] | None = None,
        passphrase: bytes | None = None,
        sigstore: bool = False,
        staging: bool = False,
        builder_id: str = DEFAULT_BUILDER_ID,
        allow_unchanged: bool = False,
    ) -> None:
        if kind not in STEP_KINDS:
            raise InputError(None, f"unknown step kind {kind!r} (choose from {', '.join(STEP_KINDS)})")
        self.kind = kind
        self.output = Path(output)
        self._parent_specs = [(p if isinstance(p, tuple) else (DEFAULT_PARENT_ROLE[kind], p)) for p in parents]
        if teacher is not None:
            self._parent_specs.append(("teacher", teacher))
        self._dataset_paths = [Path(d) for d in datasets]
        self._code = Path(code) if code is not None else None
        self.params: dict[str, Any] = dict(params or {})
        self.internal: dict[str, Any] = {}
        self.seed, self.device, self.dtype = seed, device, dtype
        if key is None:
            keys: list[PathLike | PrivateKey] = []
        elif isinstance(key, str | os.PathLike | PrivateKey):
            keys = [key]
        else:
            keys = list(key)
        self._key_specs, self._passphrase = keys, passphrase
        self._sigstore, self._staging = sigstore, staging
        self.builder_id, self.allow_unchanged = builder_id, allow_unchanged
        self.inputs: list[tuple[str, ModelRef]] = []
        self.dependencies: list[ResourceDescriptor] = []
        self.byproducts: list[ResourceDescriptor] = []
        self.invocation_id = new_invocation_id()
        self.started_on: str | None = None
        self.signing: Signing | None = None
        self.result: RecordResult | None = None

    def start(self) -> RecordingSession:
        """Load keys, name the inputs (hash or attestation), digest datasets and code, note the start time."""
        signing = Signing(load_keys(self._key_specs, self._passphrase), self._sigstore, self._staging)
        self.signing = signing.prepared()
        self.started_on = now_rfc3339()
        self.inputs = [(role, resolve_model(p)) for role, p in self._parent_specs]
        self.dependencies = [dataset_dependency(p) for p in self._dataset_paths]
        if self._code is not None:
            self.dependencies.append(code_dependency(self._code))
        return self

    def checkpoint(self, path: PathLike, step: int | None = None) -> None:
        """Note an intermediate checkpoint's roots (a byproduct of the run), hashed now while it exists."""
        p = Path(path)
        self.byproducts.append(checkpoint_byproduct(p.name, hash_model(p), step))

    def finish(self) -> RecordResult:
        """Hash the output, sign, write `.attest/` in the output folder."""
        if self.signing is None or self.started_on is None:
            raise RuntimeError("RecordingSession.finish() before start()")
        self.result = record_step(
            self.kind,
            self.output,
            self.inputs,
            self.signing,
            external={"hyperparameters": self.params} if self.params else {},
            internal=internal_parameters(self.seed, self.device, self.dtype, self.internal),
            extra_dependencies=self.dependencies,
            byproducts=self.byproducts,
            started_on=self.started_on,
            invocation_id=self.invocation_id,
            builder_id=self.builder_id,
            allow_unchanged=self.allow_unchanged,
        )
        return self.result


@contextlib.contextmanager
def recording(kind: StepKind, output: PathLike, **options: Any) -> Iterator[RecordingSession]:
    """Context manager over RecordingSession: start on entry, finish on a clean exit, nothing on an exception."""
    session = RecordingSession(kind, output, **options).start()
    yield session
    session.finish()
