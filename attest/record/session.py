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
from attest.lineage.locator import Locator
from attest.record.plan import DEFAULT_PARENT_ROLE, ParentArg, dataset_input, model_input
from attest.record.recorder import RecordResult, Signing, internal_parameters, record_step
from attest.record.refs import ModelRef
from attest.signing.keys import PrivateKey, env_passphrase, load_private_key
from attest.statements.builders import (
    checkpoint_byproduct,
    code_dependency,
    new_invocation_id,
    now_rfc3339,
)
from attest.statements.models import DEFAULT_BUILDER_ID, STEP_KINDS, ResourceDescriptor, StepKind

PathLike = str | os.PathLike[str]
ParentSpec = PathLike | tuple[str, PathLike] | ParentArg
"""A parent folder, (role, folder), or a parsed `--parent` (attest.record.plan.parse_parent)."""


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
        identity_token: str | None = None,
        builder_id: str = DEFAULT_BUILDER_ID,
        allow_unchanged: bool = False,
    ) -> None:
        if kind not in STEP_KINDS:
            raise InputError(None, f"unknown step kind {kind!r} (choose from {', '.join(STEP_KINDS)})")
        self.kind = kind
        self.output = Path(output)
        self._parents = [_parent_arg(p, DEFAULT_PARENT_ROLE[kind]) for p in parents]
        if teacher is not None:
            self._parents.append(ParentArg("teacher", Path(teacher)))
        self._datasets = list(datasets)
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
        self._sigstore, self._staging, self._token = sigstore, staging, identity_token
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
        signing = Signing(load_keys(self._key_specs, self._passphrase), self._sigstore, self._staging, self._token)
        self.signing = signing.prepared()
        self.started_on = now_rfc3339()
        locator = Locator()
        self.inputs = [model_input(p, locator) for p in self._parents]
        self.dependencies = [dataset_input(p) for p in self._datasets]
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


def _parent_arg(spec: ParentSpec, default_role: str) -> ParentArg:
    if isinstance(spec, ParentArg):
        return spec
    role, path = spec if isinstance(spec, tuple) else (default_role, spec)
    return ParentArg(role, Path(path), explicit=isinstance(spec, tuple))


@contextlib.contextmanager
def recording(kind: StepKind, output: PathLike, **options: Any) -> Iterator[RecordingSession]:
    """Context manager over RecordingSession: start on entry, finish on a clean exit, nothing on an exception."""
    session = RecordingSession(kind, output, **options).start()
    yield session
    session.finish()
