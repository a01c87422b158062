"""Recording from inside a training script: inputs are hashed and the key is loaded *before* training starts (a bad
key must not cost a training run), the environment is captured, and the output is hashed and signed at the end.

    with recording("finetune", output=out, parents=[base], key="builder.key", params={"lr": 1e-4}) as rec:
        train(...)
        rec.checkpoint(out / "checkpoint-100", step=100)   # optional
        model.save_pretrained(out)

With `data=`, `checkpoints=`, `checkpoint_every=` and `runner=` the session records a training transcript (SPEC.md
8.7) that `attest verify --replay-training N --runner FILE` replays with that runner file:

    with recording("finetune", out, parents=[base], key=k, data="train.jsonl", checkpoints=ckpt,
                   checkpoint_every=2, runner="runner.py", params={"learning_rate": 1e-3}) as rec:
        rec.begin_training(model, optimizer)         # checkpoint 0
        for indices in order:
            samples = rec.batch(indices)             # the token ids of those data-file lines, committed
            ...forward, backward, optimizer.step()...
            rec.end_step(model, optimizer)           # a checkpoint every K steps
        model.save_pretrained(out)                   # finish() writes the last checkpoint and checks the output

An exception inside the block records nothing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    sha256_file,
)
from attest.statements.models import DEFAULT_BUILDER_ID, STEP_KINDS, ResourceDescriptor, StepKind

if TYPE_CHECKING:
    from attest.training.recorder import TranscriptRecorder

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
        data: PathLike | None = None,
        checkpoints: PathLike | None = None,
        checkpoint_every: int | None = None,
        runner: PathLike | None = None,
    ) -> None:
        if kind not in STEP_KINDS:
            raise InputError(None, f"unknown step kind {kind!r} (choose from {', '.join(STEP_KINDS)})")
        self.kind = kind
        self.output = Path(output)
        self._parents = [_parent_arg(p, DEFAULT_PARENT_ROLE[kind]) for p in parents]
        if teacher is not None:
            self._parents.append(ParentArg("teacher", Path(teacher)))
        self._datasets = list(datasets)
        self._transcript_spec = (data, checkpoints, checkpoint_every, runner)
        if data is not None and (checkpoints is None or checkpoint_every is None or runner is None):
            raise InputError(None, "a training transcript (data=) needs checkpoints=, checkpoint_every= and runner=")
        if data is not None and all(Path(d) != Path(data) for d in self._datasets):
            self._datasets.append(data)
        self.transcript: TranscriptRecorder | None = None
        self._trained: tuple[Any, Any] | None = None
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
        if self._transcript_spec[0] is not None:
            self._start_transcript()
        return self

    def _start_transcript(self) -> None:
        from attest.training.recorder import TranscriptRecorder  # lazy: attest.training loads torch
        from attest.training.transcript import RUNNER_ROLE, ModelPin

        data, checkpoints, every, runner = self._transcript_spec
        assert data is not None and checkpoints is not None and every is not None and runner is not None
        role = DEFAULT_PARENT_ROLE[self.kind]
        starts = [ref for r, ref in self.inputs if r == role]
        teachers = [ref for r, ref in self.inputs if r == "teacher"]
        if len(starts) != 1 or self.kind not in ("finetune", "distill"):
            raise InputError(None, f"a training transcript needs a finetune/distill step with exactly one {role}")
        runner_dep = ResourceDescriptor(
            name=Path(runner).name,
            uri=Path(runner).resolve().as_uri(),
            digest={"sha256": sha256_file(Path(runner))},
            annotations={"role": RUNNER_ROLE},
        )
        self.dependencies.append(runner_dep)
        start = starts[0]
        self.transcript = TranscriptRecorder(
            Path(data),
            Path(checkpoints),
            every,
            (start.path, ModelPin(model_root=start.model_root, weights_root=start.weights_root)),
            (runner_dep.digest or {})["sha256"],
            ModelPin(model_root=teachers[0].model_root, weights_root=teachers[0].weights_root) if teachers else None,
            start.path / "tokenizer.json",
        )

    def _recorder(self) -> TranscriptRecorder:
        if self.transcript is None:
            raise RuntimeError("no training transcript is being recorded (give data=, checkpoints=, runner=)")
        return self.transcript

    def begin_training(self, model: Any, optimizer: Any) -> None:
        """Checkpoint 0 of the transcript (the start model's files, the fresh optimizer, the RNG state now)."""
        self._recorder().begin(model, optimizer)
        self._trained = (model, optimizer)

    @property
    def began_training(self) -> bool:
        return self._trained is not None

    def batch(self, indices: Sequence[int]) -> list[list[int]]:
        """Commit data-file lines (0-based) to the current step; returns their token ids (input_ids or tokenized)."""
        return self._recorder().batch(list(indices))

    def end_step(self, model: Any, optimizer: Any) -> None:
        """After the optimizer step: close the step's batch; a checkpoint every K steps."""
        self._recorder().end_step(model, optimizer)

    def checkpoint(self, path: PathLike, step: int | None = None) -> None:
        """Note an intermediate checkpoint's roots (a byproduct of the run), hashed now while it exists."""
        if self.transcript is not None:
            raise InputError(Path(path), "a transcript's checkpoints are written by the recorder, not noted by hand")
        p = Path(path)
        self.byproducts.append(checkpoint_byproduct(p.name, hash_model(p), step))

    def finish(self) -> RecordResult:
        """Hash the output, sign, write `.attest/` in the output folder."""
        if self.signing is None or self.started_on is None:
            raise RuntimeError("RecordingSession.finish() before start()")
        external: dict[str, Any] = {"hyperparameters": self.params} if self.params else {}
        if self.transcript is not None:
            external, self.byproducts = self._finish_transcript()
        self.result = record_step(
            self.kind,
            self.output,
            self.inputs,
            self.signing,
            external=external,
            internal=internal_parameters(self.seed, self.device, self.dtype, self.internal),
            extra_dependencies=self.dependencies,
            byproducts=self.byproducts,
            started_on=self.started_on,
            invocation_id=self.invocation_id,
            builder_id=self.builder_id,
            allow_unchanged=self.allow_unchanged,
        )
        return self.result

    def _finish_transcript(self) -> tuple[dict[str, Any], list[ResourceDescriptor]]:
        """The last checkpoint, the output checked against it, and the statement's transcript fields."""
        from attest.training.transcript import checkpoint_byproduct  # lazy: attest.training loads torch

        if self._trained is None:
            raise InputError(None, "the transcript has no checkpoint 0: call begin_training(model, optimizer)")
        transcript, hyper = self._recorder().finish(*self._trained, self.params)
        if hash_model(self.output, use_cache=False).weights_root != transcript.checkpoints[-1].weights_root:
            raise InputError(self.output, "the saved model's weights are not the last checkpoint's (save it last)")
        self.internal["determinism"] = transcript.determinism.model_dump(mode="json")
        body = transcript.model_dump(mode="json", exclude_none=True)
        return {"hyperparameters": hyper, "training_transcript": body}, [
            checkpoint_byproduct(c) for c in transcript.checkpoints
        ]


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
