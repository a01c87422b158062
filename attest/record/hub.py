"""Hugging Face Hub names: a Hub repo id given for a local parent (`DIR@org/name`), and `hf://org/name[@rev]`
addresses resolved to a snapshot folder of the local Hugging Face cache (offline: nothing is ever downloaded)."""

from __future__ import annotations

import re
from pathlib import Path

from attest.errors import InputError

HF_SCHEME = "hf://"
# A Hub repo id: `org/name` (huggingface_hub's rules: letters, digits, '-', '_', '.'; no '--' or '..').
_REPO_ID = re.compile(r"^(?!.*(--|\.\.))[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")

_REVISION = re.compile(r"^(?!.*\.\.)[A-Za-z0-9._/-]{1,255}$")


def is_repo_id(text: str) -> bool:
    return bool(_REPO_ID.match(text)) and not text.endswith((".", "-"))


def split_hub_id(spec: str) -> tuple[str, str | None]:
    """`DIR@org/name` -> (DIR, 'org/name'); anything else (a path, an hf:// address) -> (spec, None). A spec that is
    an existing path is a path even if it contains '@'."""
    if spec.startswith(HF_SCHEME) or Path(spec).exists():
        return spec, None
    where, sep, repo = spec.rpartition("@")
    if sep and where and is_repo_id(repo):
        return where, repo
    return spec, None


def resolve_hf(address: str) -> Path:
    """`hf://org/name[@revision]` -> that snapshot folder in the local Hugging Face cache (HF_HUB_CACHE / HF_HOME),
    offline. A revision is a commit hash or a ref the cache knows (default `main`)."""
    rest = address.removeprefix(HF_SCHEME)
    repo, _, revision = rest.partition("@")
    if not is_repo_id(repo) or (revision and not _REVISION.match(revision)):
        raise InputError(address, "not an hf://org/name[@revision] address")
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import LocalEntryNotFoundError
    except ModuleNotFoundError as exc:
        raise ModuleNotFoundError(str(exc), name="huggingface_hub") from None
    try:
        folder = snapshot_download(repo, revision=revision or None, local_files_only=True)
    except LocalEntryNotFoundError:
        raise InputError(
            address, "not in the local Hugging Face cache (attest never downloads: fetch it with `hf download`)"
        ) from None
    except (ValueError, OSError) as exc:
        raise InputError(address, f"cannot resolve in the local Hugging Face cache: {exc}") from None
    return Path(folder)


def model_path(spec: str) -> Path:
    """A model folder argument: a path, or an hf:// address of the local cache."""
    return resolve_hf(spec) if spec.startswith(HF_SCHEME) else Path(spec)
