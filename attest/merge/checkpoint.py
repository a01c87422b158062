"""Read-only access to a model folder's tensors through attest's strict safetensors reader, one tensor at a time."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch

from attest.errors import InputError
from attest.identity.folder import scan_folder
from attest.identity.safetensors_reader import SafetensorsFile, TensorInfo
from attest.strict_json import strict_loads

TORCH_DTYPES: dict[str, torch.dtype] = {
    "BF16": torch.bfloat16,
    "F16": torch.float16,
    "F32": torch.float32,
    "F64": torch.float64,
    "I8": torch.int8,
    "U8": torch.uint8,
    "I16": torch.int16,
    "I32": torch.int32,
    "I64": torch.int64,
    "BOOL": torch.bool,
    "F8_E4M3": torch.float8_e4m3fn,
    "F8_E5M2": torch.float8_e5m2,
}
SAFETENSORS_TAGS = {v: k for k, v in TORCH_DTYPES.items()}
MAX_CONFIG_BYTES = 16 * 1024 * 1024


def torch_dtype(tag: str, where: Path) -> torch.dtype:
    try:
        return TORCH_DTYPES[tag]
    except KeyError:
        raise InputError(where, f"tensors of dtype {tag} cannot be merged") from None


class Checkpoint:
    """A model folder: its tensors by name (zero-copy views of the mapped files) and its config.json."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        scan = scan_folder(self.folder)
        if not scan.weight_files:
            raise InputError(self.folder, "no safetensors weight files")
        self.pickle_files: list[str] = list(scan.pickle_files)  # relative POSIX paths; never loaded
        self.other_files: list[str] = list(scan.other_files)
        self._files: list[SafetensorsFile] = []
        self._where: dict[str, SafetensorsFile] = {}
        try:
            for rel in scan.weight_files:
                f = SafetensorsFile(scan.real_paths.get(rel.as_posix(), self.folder / rel))
                self._files.append(f)
                for t in f.tensors:
                    self._where[t.name] = f
        except BaseException:
            self.close()
            raise
        self.config = self._read_config()

    @property
    def has_config(self) -> bool:
        return (self.folder / "config.json").is_file()

    def _read_config(self) -> dict[str, Any]:
        path = self.folder / "config.json"
        if not path.is_file():
            return {}
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise InputError(path, f"larger than {MAX_CONFIG_BYTES} bytes")
        try:
            data = strict_loads(path.read_bytes())
        except (ValueError, UnicodeDecodeError) as exc:
            raise InputError(path, f"not valid JSON ({exc})") from None
        except RecursionError:
            raise InputError(path, "not valid JSON (nested too deeply)") from None
        if not isinstance(data, dict):
            raise InputError(path, "config.json is not a JSON object")
        return data

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        for f in self._files:
            f.close()
        self._files = []

    @property
    def names(self) -> list[str]:
        return list(self._where)

    def __contains__(self, name: str) -> bool:
        return name in self._where

    def info(self, name: str) -> TensorInfo:
        f = self._where.get(name)
        if f is None:
            raise InputError(self.folder, f"no tensor named {name!r}")
        return f.info(name)

    def dtype(self, name: str) -> torch.dtype:
        return torch_dtype(self.info(name).dtype, self.folder)

    def load(self, name: str) -> torch.Tensor:
        """A read-only tensor over the mapped bytes (no copy). Callers must not write into it."""
        info = self.info(name)
        dtype = torch_dtype(info.dtype, self.folder)
        if info.nbytes == 0:
            return torch.empty(info.shape, dtype=dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # the mapping is read-only by design
            flat = torch.frombuffer(self._where[name].view(name), dtype=dtype)
        return flat.reshape(info.shape)

    def release(self, name: str) -> None:
        """Drop this tensor's pages from our resident memory once it has been used."""
        self._where[name].release(name)
