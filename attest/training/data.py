"""The training data file (JSON lines) and the commitments to it: sample leaves, batch roots, checkpoint roots.

Every line is one sample: an object with `input_ids` (a list of token ids) or `text` (tokenized with the model's
`tokenizer.json` through the `tokenizers` library; no code from a model folder runs). The file is read once, its
SHA-256 computed on the way, and each line's byte span kept so a batch can be re-read by index.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from attest.errors import InputError
from attest.identity.merkle import hash_record, root
from attest.strict_json import reject_duplicate_keys
from attest.training.transcript import CHECKPOINT_FORMAT

TAG_CHECKPOINT = b"\x05"
TAG_SAMPLE = b"\x06"
MAX_DATA_BYTES = 16 * 1024**3
MAX_LINE_BYTES = 16 * 1024**2
MAX_RECORDS = 50_000_000
MAX_SEQUENCE = 1 << 20


def sample_leaf(index: int, input_ids: list[int]) -> bytes:
    return hash_record("sha256", TAG_SAMPLE, {"index": index, "input_ids": input_ids})


def batch_root(samples: list[tuple[int, list[int]]]) -> str:
    """MTH over the sample leaves of a batch, in batch order."""
    return root("sha256", [sample_leaf(i, ids) for i, ids in samples]).hex()


def checkpoint_root(step: int, model_root: str, weights_root: str, state_root: str) -> str:
    record = {
        "format": CHECKPOINT_FORMAT,
        "step": step,
        "model_root": model_root,
        "weights_root": weights_root,
        "state_root": state_root,
    }
    return hash_record("sha256", TAG_CHECKPOINT, record).hex()


class DataFile:
    """A JSON-lines data file: its sha256, size, record count and field, and samples by index."""

    def __init__(self, path: Path, tokenizer: Path | None = None) -> None:
        self.path = path
        try:
            size = path.stat().st_size
            if not path.is_file():
                raise InputError(path, "the training data must be a file")
            if size > MAX_DATA_BYTES:
                raise InputError(path, f"data file larger than {MAX_DATA_BYTES} bytes")
            data = path.read_bytes()
        except OSError as exc:
            raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
        self.size = len(data)
        self.sha256 = hashlib.sha256(data).hexdigest()
        self._data = data
        self.spans: list[tuple[int, int]] = []
        pos = 0
        while pos < len(data):
            end = data.find(b"\n", pos)
            end = len(data) if end < 0 else end
            if end == pos:
                raise InputError(path, f"line {len(self.spans) + 1} is empty")
            if end - pos > MAX_LINE_BYTES:
                raise InputError(path, f"line {len(self.spans) + 1} is longer than {MAX_LINE_BYTES} bytes")
            self.spans.append((pos, end))
            if len(self.spans) > MAX_RECORDS:
                raise InputError(path, f"more than {MAX_RECORDS} records")
            pos = end + 1
        if not self.spans:
            raise InputError(path, "no records")
        first = self._record(0)
        self.field: Literal["input_ids", "text"] = "input_ids" if "input_ids" in first else "text"
        self._tokenizer: Any = None
        if self.field == "text":
            if tokenizer is None or not tokenizer.is_file():
                raise InputError(path, "records carry `text` but the model folder has no tokenizer.json")
            from tokenizers import Tokenizer

            try:
                self._tokenizer = Tokenizer.from_file(str(tokenizer))
            except Exception as exc:  # the tokenizers library raises its own exception types
                raise InputError(tokenizer, f"not a tokenizer.json ({exc})") from None
        self.tokenizer_sha256 = (
            hashlib.sha256(tokenizer.read_bytes()).hexdigest() if tokenizer is not None and self._tokenizer else None
        )

    def __len__(self) -> int:
        return len(self.spans)

    def _record(self, index: int) -> dict[str, Any]:
        lo, hi = self.spans[index]
        try:
            doc = json.loads(self._data[lo:hi].decode("utf-8"), object_pairs_hook=reject_duplicate_keys)
        except (UnicodeDecodeError, ValueError) as exc:
            raise InputError(self.path, f"line {index + 1} is not a JSON object ({exc})") from None
        if not isinstance(doc, dict) or ("input_ids" in doc) == ("text" in doc):
            raise InputError(self.path, f"line {index + 1} must be an object with exactly one of input_ids, text")
        return doc

    def input_ids(self, index: int, vocab_size: int) -> list[int]:
        """Token ids of record `index` (0-based), checked: at least 2, each in [0, vocab_size)."""
        if not 0 <= index < len(self.spans):
            raise InputError(self.path, f"sample index {index} outside the file's {len(self.spans)} records")
        doc = self._record(index)
        if self.field == "text":
            if not isinstance(doc.get("text"), str):
                raise InputError(self.path, f"line {index + 1}: `text` must be a string like the first record's")
            ids = list(self._tokenizer.encode(doc["text"]).ids)
        else:
            raw = doc.get("input_ids")
            if not isinstance(raw, list) or not all(isinstance(t, int) and not isinstance(t, bool) for t in raw):
                raise InputError(self.path, f"line {index + 1}: `input_ids` must be a list of integers")
            ids = raw
        if not 2 <= len(ids) <= MAX_SEQUENCE:
            raise InputError(self.path, f"line {index + 1}: a sample needs 2 to {MAX_SEQUENCE} tokens")
        if not all(0 <= t < vocab_size for t in ids):
            raise InputError(self.path, f"line {index + 1}: token id outside the vocabulary (size {vocab_size})")
        return ids

    def batch(self, indices: list[int], vocab_size: int) -> list[tuple[int, list[int]]]:
        return [(i, self.input_ids(i, vocab_size)) for i in indices]
