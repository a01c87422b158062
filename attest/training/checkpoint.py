"""Training checkpoints (SPEC.md section 8.2): `step-NNNNNNNN/model/` (config + safetensors weights, a model folder)
and `step-NNNNNNNN/state/` (`state.safetensors`: optimizer moments and RNG state as tensors; `state.json`: the
optimizer settings as canonical JSON). Never a pickle: state is tensors plus JSON, loaded with safetensors.

A checkpoint's root binds the model root, the weights root and the state folder's model root (section 1), so it
covers weights, optimizer state and RNG state at once.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import rfc8785
import torch

from attest.errors import InputError
from attest.identity import hash_model
from attest.strict_json import strict_loads
from attest.training.data import checkpoint_root
from attest.training.transcript import STATE_FORMAT, CheckpointRecord, TrainingHyperparameters

MODEL_FILES = ("config.json", "generation_config.json")
STATE_FILE = "state.safetensors"
STATE_JSON = "state.json"
RNG_TENSOR = "rng.torch_cpu"
OPTIMIZER_PREFIX = "optimizer."
MAX_STATE_JSON = 64 * 1024**2


def _quiet() -> None:
    from transformers.utils import logging

    logging.disable_progress_bar()


def load_model(folder: Path, dtype: torch.dtype | str, causal: bool = True) -> Any:
    """A causal LM (else the bare model, for hidden-state distillation) from config.json + safetensors only: no
    remote code, no pickles, no network."""
    from transformers import AutoModel, AutoModelForCausalLM

    _quiet()
    cls = AutoModelForCausalLM if causal else AutoModel
    try:
        return cls.from_pretrained(
            folder,
            dtype=dtype,
            trust_remote_code=False,
            local_files_only=True,
            use_safetensors=True,
            attn_implementation="eager",
        )
    except (OSError, ValueError, KeyError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        what = "a causal LM" if causal else "a model"
        raise InputError(folder, f"cannot load as {what} from config.json + safetensors ({first})") from None


def make_optimizer(model: Any, hyper: TrainingHyperparameters) -> torch.optim.Optimizer:
    return torch.optim.AdamW(
        model.parameters(),
        lr=hyper.learning_rate,
        betas=(hyper.adam_beta1, hyper.adam_beta2),
        eps=hyper.adam_epsilon,
        weight_decay=hyper.weight_decay,
        foreach=False,
    )


def optimizer_names(model: Any, optimizer: torch.optim.Optimizer) -> list[str]:
    """The model's parameter names in the optimizer's order (param group by param group); InputError when the
    optimizer holds a tensor that is not a named parameter of the model, or one twice."""
    by_id = {id(p): n for n, p in model.named_parameters()}
    names = [by_id.get(id(p)) for group in optimizer.param_groups for p in group["params"]]
    if None in names or len(set(names)) != len(names):
        raise InputError(None, "the optimizer's parameters are not distinct named parameters of the model")
    return [n for n in names if n is not None]


def optimizer_settings(optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    """The param groups without their parameter lists, as JSON values (tuples become lists)."""
    out = []
    for group in optimizer.state_dict()["param_groups"]:
        out.append({k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(group.items()) if k != "params"})
    return out


def state_document(optimizer: torch.optim.Optimizer, names: list[str], step: int) -> dict[str, Any]:
    return {
        "format": STATE_FORMAT,
        "step": step,
        "optimizer": type(optimizer).__module__ + "." + type(optimizer).__qualname__,
        "param_groups": optimizer_settings(optimizer),
        "parameters": names,
    }


def state_tensors(optimizer: torch.optim.Optimizer, names: list[str]) -> dict[str, torch.Tensor]:
    state = optimizer.state_dict()["state"]
    out: dict[str, torch.Tensor] = {RNG_TENSOR: torch.get_rng_state()}
    for index, name in enumerate(names):
        for key, value in sorted(state.get(index, {}).items()):
            tensor = value if isinstance(value, torch.Tensor) else torch.tensor(value)
            out[f"{OPTIMIZER_PREFIX}{name}.{key}"] = tensor.detach().cpu().contiguous()
    return out


def write_checkpoint(
    target: Path,
    model: Any,
    optimizer: torch.optim.Optimizer,
    names: list[str],
    step: int,
    copy_from: Path | None = None,
) -> CheckpointRecord:
    """Write model/ and state/ into a temporary sibling, hash both, then rename into place (atomic). With
    `copy_from` (checkpoint 0), model/ is a copy of that folder's config files and weight files, byte for byte."""
    from safetensors.torch import save_file

    _quiet()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp"))
    try:
        if copy_from is None:
            model.save_pretrained(tmp / "model", safe_serialization=True)
        else:
            (tmp / "model").mkdir()
            for f in sorted(copy_from.iterdir()):
                if f.name in MODEL_FILES or f.name.endswith((".safetensors", ".safetensors.index.json")):
                    shutil.copyfile(f, tmp / "model" / f.name)
        (tmp / "state").mkdir()
        save_file(state_tensors(optimizer, names), str(tmp / "state" / STATE_FILE))
        (tmp / "state" / STATE_JSON).write_bytes(rfc8785.dumps(state_document(optimizer, names, step)))
        record = checkpoint_record(tmp, step)
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return record


def checkpoint_record(folder: Path, step: int) -> CheckpointRecord:
    """Hash a checkpoint folder (never from a cache) into its record."""
    model = hash_model(folder / "model", "sha256", use_cache=False)
    state = hash_model(folder / "state", "sha256", use_cache=False)
    return CheckpointRecord(
        step=step,
        model_root=model.model_root,
        weights_root=model.weights_root,
        state_root=state.model_root,
        root=checkpoint_root(step, model.model_root, model.weights_root, state.model_root),
    )


def read_state_document(folder: Path) -> dict[str, Any]:
    path = folder / "state" / STATE_JSON
    try:
        if path.stat().st_size > MAX_STATE_JSON:
            raise InputError(path, f"larger than {MAX_STATE_JSON} bytes")
        doc = strict_loads(path.read_bytes().decode("utf-8"))
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise InputError(path, f"not JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != STATE_FORMAT:
        raise InputError(path, f"not an {STATE_FORMAT} document")
    return doc


def load_state(folder: Path, optimizer: torch.optim.Optimizer, names: list[str]) -> None:
    """Load optimizer moments and the RNG state from state/ (already hashed by the caller); InputError when the
    tensors do not fit the model."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = folder / "state" / STATE_FILE
    try:
        tensors = load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise InputError(path, f"cannot read state ({exc})") from None
    rng = tensors.pop(RNG_TENSOR, None)
    if rng is None or rng.dtype != torch.uint8:
        raise InputError(path, f"no {RNG_TENSOR} uint8 tensor")
    per_param: dict[int, dict[str, torch.Tensor]] = {}
    index = {n: i for i, n in enumerate(names)}
    for key, value in tensors.items():
        name, _, field = key.removeprefix(OPTIMIZER_PREFIX).rpartition(".")
        if not key.startswith(OPTIMIZER_PREFIX) or name not in index:
            raise InputError(path, f"state tensor {key!r} names no parameter of the model")
        per_param.setdefault(index[name], {})[field] = value
    sd = optimizer.state_dict()
    sd["state"] = per_param
    try:
        optimizer.load_state_dict(sd)
        torch.set_rng_state(rng)
    except (RuntimeError, ValueError, KeyError) as exc:
        raise InputError(path, f"state does not fit the model ({exc})") from None
