"""The runner protocol (SPEC.md section 8.8): a verifier replays a segment of a transcript recorded from a user's own
loop with that loop's code, which the statement pins by the SHA-256 of one file (the `runner` dependency).

The verifier names the runner file on the command line (`--runner FILE`); attest never takes code from a model or
checkpoint folder. attest copies the file's bytes into a private temporary folder, refuses it unless their SHA-256 is
the recorded one, writes a RunnerRequest (RFC 8785 JSON: the start checkpoint folder, the committed batches with their
token ids, the hyperparameters, the determinism settings, the teacher) and runs the copy as a subprocess
(`python RUNNER request.json` for a `.py` file, else `RUNNER request.json`), with the temporary folder as its working
directory. The runner writes the segment's end checkpoint (SPEC.md 8.2) into the request's `output` folder and exits
0; attest hashes that folder and compares it bit for bit with the recorded checkpoint.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Final, Literal

import rfc8785
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from attest.errors import InputError
from attest.strict_json import strict_loads
from attest.training.checkpoint import checkpoint_record
from attest.training.transcript import CheckpointRecord, DatasetPin, Determinism

REQUEST_FORMAT: Final = "attest-runner-request/v1"
MAX_RUNNER_BYTES = 64 * 1024**2
MAX_REQUEST_BYTES = 1024**3
TAIL_BYTES = 2000


class RunnerBatch(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    step: int = Field(ge=1, description="The optimizer step (1-based) these samples are for")
    indices: list[int] = Field(description="0-based data-file line numbers, in batch order")
    input_ids: list[list[int]] = Field(description="Each sample's token ids (checked against the commitment)")


class RunnerRequest(BaseModel):
    """What a runner is handed: replay steps start_step+1 ... end_step from the start checkpoint."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    format: Literal["attest-runner-request/v1"] = REQUEST_FORMAT
    segment: int = Field(ge=0)
    start_step: int = Field(ge=0)
    end_step: int = Field(ge=1)
    start_checkpoint: str = Field(description="Absolute path of the start checkpoint folder (model/ and state/)")
    output: str = Field(description="Absolute path of the folder to write the end checkpoint into (absent)")
    teacher: str | None = Field(default=None, description="Absolute path of the teacher's model folder (distill)")
    hyperparameters: dict[str, Any] = Field(description="The statement's externalParameters.hyperparameters")
    determinism: Determinism
    dataset: DatasetPin = Field(description="The transcript's data file pin (its record count fixes epoch lengths)")
    batches: list[RunnerBatch]


def read_request(path: str | os.PathLike[str]) -> RunnerRequest:
    """For runner authors: the request attest wrote (InputError when it is not one)."""
    p = Path(path)
    try:
        if p.stat().st_size > MAX_REQUEST_BYTES:
            raise InputError(p, f"larger than {MAX_REQUEST_BYTES} bytes")
        return RunnerRequest.model_validate(strict_loads(p.read_bytes().decode("utf-8")))
    except OSError as exc:
        raise InputError(p, f"cannot read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, ValueError, ValidationError) as exc:
        raise InputError(p, f"not an {REQUEST_FORMAT} request ({str(exc).splitlines()[0]})") from None


def pinned_copy(runners: list[Path], want: str, into: Path) -> Path:
    """Copy the first given runner whose bytes have SHA-256 `want` into `into` (so what runs is what was hashed);
    InputError naming what was refused otherwise."""
    seen = []
    for path in runners:
        try:
            if not path.is_file():
                raise InputError(path, "a runner must be a file")
            with path.open("rb") as fh:
                data = fh.read(MAX_RUNNER_BYTES + 1)
        except OSError as exc:
            raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
        if len(data) > MAX_RUNNER_BYTES:
            raise InputError(path, f"a runner larger than {MAX_RUNNER_BYTES} bytes")
        got = hashlib.sha256(data).hexdigest()
        if got == want:
            target = into / path.name
            target.write_bytes(data)
            target.chmod(0o700)
            return target
        seen.append(f"{path} has {got[:16]}…")
    if not seen:
        raise InputError(
            None,
            f"the transcript was recorded with an external runner (sha256 {want[:16]}…): name that file with --runner",
        )
    raise InputError(None, f"refused: no --runner has the recorded sha256 {want[:16]}… ({'; '.join(seen)})")


def _tail(path: Path) -> str:
    with path.open("rb") as fh:
        fh.seek(max(0, path.stat().st_size - TAIL_BYTES))
        lines = fh.read().decode("utf-8", "replace").strip().splitlines()
    return lines[-1] if lines else ""


def run_runner(runner: Path, request: RunnerRequest, work: Path) -> CheckpointRecord:
    """Run the pinned runner copy on `request` in `work`; the record of the checkpoint it wrote. RuntimeError
    (with the runner's last line of output) when it fails or writes no checkpoint."""
    req = work / "request.json"
    req.write_bytes(rfc8785.dumps(request.model_dump(mode="json")))
    argv = [sys.executable, str(runner), str(req)] if runner.suffix == ".py" else [str(runner), str(req)]
    log = work / "runner.log"
    with log.open("wb") as out:
        code = subprocess.run(argv, cwd=work, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT).returncode
    if code != 0:
        raise RuntimeError(f"the runner exited {code}: {_tail(log)}")
    output = Path(request.output)
    if not (output / "model").is_dir() or not (output / "state").is_dir():
        raise RuntimeError(f"the runner wrote no checkpoint (model/ and state/) into {output}")
    return checkpoint_record(output, request.end_step)
