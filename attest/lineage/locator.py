"""The one place where a model reference becomes a local folder, and where each folder is hashed once per run.

References attest understands (SPEC.md 2.3, README):
- a path;
- `hf://org/name[@rev]`: that snapshot of the local Hugging Face cache (HF_HUB_CACHE / HF_HOME; offline, nothing is
  ever downloaded);
- `DIR@org/name` on the command line: a local folder published on the Hub as org/name (recorded as `hf://org/name`,
  a dataset as `hf://datasets/org/name`);
- a recorded dependency (name + uri): its last name component under the --parents-dir folders, then its `file://`
  URI or bare path; a folder counts only when it re-hashes to the recorded digest (`Locator.find`);
- a model reference in a mergekit recipe: as written, or, when --parents-dir folders are given, only under them
  (`Locator.recipe_models`).

A `Locator` carries the --parents-dir folders and the identity of every folder hashed so far, so one run
(`attest verify` with replay and rules, `attest card` over its parents) reads each folder's bytes once.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path, PurePosixPath
from typing import TypeVar
from urllib.parse import unquote, urlparse

from attest.errors import AttestError, InputError
from attest.executor import ClusterError, Executor
from attest.identity import IdentityManifest, hash_model
from attest.identity.hashing import ModelRoots, ProgressAdvance, ProgressStart, hash_roots

HF_SCHEME = "hf://"
HF_DATASETS = "hf://datasets/"
# A Hub repo id: `org/name` (huggingface_hub's rules: letters, digits, '-', '_', '.'; no '--' or '..').
_REPO_ID = re.compile(r"^(?!.*(--|\.\.))[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_REVISION = re.compile(r"^(?!.*\.\.)[A-Za-z0-9._/-]{1,255}$")
_HF_CACHE = re.compile(r"^models--(?P<org>[^/]+?)--(?P<name>[^/]+)$")


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
    try:  # lazy: huggingface_hub is part of the [ml] extra, needed only for hf:// addresses
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


def model_uri(path: Path) -> str:
    """`hf://org/name@revision` for a Hugging Face cache snapshot folder, else the folder's file:// URI."""
    real = path.resolve()
    parts = real.parts
    for i in range(len(parts) - 3, -1, -1):
        m = _HF_CACHE.match(parts[i])
        if m and parts[i + 1] == "snapshots":
            return f"hf://{m['org']}/{m['name']}@{parts[i + 2]}"
    return real.as_uri()


def hub_model_uri(repo: str) -> str:
    """The URI a statement records for a local folder published on the Hub as `repo`."""
    return f"{HF_SCHEME}{repo}"


def hub_dataset_uri(repo: str) -> str:
    return f"{HF_DATASETS}{repo}"


def hub_model_id(uri: str | None) -> str | None:
    """`hf://org/name[@rev]` -> 'org/name' (what a card's base_model shows); None for any other URI."""
    if uri and uri.startswith(HF_SCHEME):
        return uri.removeprefix(HF_SCHEME).split("@", 1)[0]
    return None


def hub_dataset_id(uri: str | None) -> str | None:
    """`hf://datasets/org/name[@rev]` -> 'org/name' (what a card's datasets: lists); None for any other URI."""
    if uri and uri.startswith(HF_DATASETS):
        return uri.removeprefix(HF_DATASETS).split("@", 1)[0]
    return None


def uri_path(uri: str | None) -> Path | None:
    """The local path a recorded URI names: a `file://` URI or a bare path; None for any other scheme."""
    if not uri:
        return None
    parsed = urlparse(uri)
    if parsed.scheme == "file":
        return Path(unquote(parsed.path))
    if parsed.scheme == "":
        return Path(uri)
    return None


_Key = tuple[Path, tuple[str, ...], bool]
_Hashed = TypeVar("_Hashed", IdentityManifest, ModelRoots)


class Locator:
    """Finds model folders (see module docstring) and hashes each one once (sha256, never from the cache). Only the
    roots are kept per folder (a manifest grows with the tensor count): `manifest` hashes and hands the whole
    identity to its one caller, `roots` and `root_of` answer from what was hashed."""

    def __init__(self, parents_dirs: Iterable[Path] = (), executor: Executor | None = None) -> None:
        """executor: where folders are hashed (attest.executor; None: in this process)."""
        self.parents_dirs = list(parents_dirs)
        self.executor = executor
        self._roots: dict[_Key, tuple[str, str] | AttestError] = {}

    def manifest(
        self,
        folder: str | os.PathLike[str],
        *,
        ignore: Iterable[str] = (),
        require_weights: bool = True,
        on_total: ProgressStart | None = None,
        on_bytes: ProgressAdvance | None = None,
    ) -> IdentityManifest:
        """Hash the folder now and remember its roots; an error is remembered too."""
        key = (Path(folder).resolve(), tuple(ignore), require_weights)
        return self._remembered(
            key,
            lambda: hash_model(
                folder,
                "sha256",
                use_cache=False,
                ignore=list(key[1]),
                require_weights=require_weights,
                on_total=on_total,
                on_bytes=on_bytes,
                executor=self.executor,
            ),
        )

    def identity(
        self,
        folder: str | os.PathLike[str],
        *,
        ignore: Iterable[str] = (),
        require_weights: bool = True,
        on_total: ProgressStart | None = None,
        on_bytes: ProgressAdvance | None = None,
    ) -> ModelRoots:
        """Hash the folder now for its roots only (no manifest: memory does not grow with its tensor count) and
        remember them; an error is remembered too."""
        key = (Path(folder).resolve(), tuple(ignore), require_weights)
        return self._remembered(
            key,
            lambda: hash_roots(
                folder,
                "sha256",
                ignore=list(key[1]),
                require_weights=require_weights,
                on_total=on_total,
                on_bytes=on_bytes,
                executor=self.executor,
            ),
        )

    def _remembered(self, key: _Key, hashed: Callable[[], _Hashed]) -> _Hashed:
        """Run `hashed` and remember the roots it gives under `key`, or the error it raises."""
        try:
            result = hashed()
        except ClusterError:  # the cluster failed, not the folder: nothing to remember
            raise
        except AttestError as exc:
            self._roots[key] = exc
            raise
        self._roots[key] = (result.model_root, result.weights_root)
        return result

    def roots(self, folder: str | os.PathLike[str]) -> tuple[str, str]:
        """(model root, weights root) of a folder, hashed on first use; a folder that could not be hashed raises
        the same error again."""
        key = (Path(folder).resolve(), (), True)
        if key not in self._roots:
            try:
                self.identity(folder)
            except ClusterError:
                raise
            except AttestError:
                pass  # remembered: raised again below
        found = self._roots[key]
        if isinstance(found, AttestError):
            raise found
        return found

    def root_of(self, folder: Path) -> str | None:
        """Model root of a local folder; None when it is not a readable model folder."""
        try:
            return self.roots(folder)[0]
        except ClusterError:  # no answer from the cluster is not "not a model folder"
            raise
        except AttestError:
            return None

    def candidates(self, name: str | None, uri: str | None, extra_dirs: Iterable[Path] = ()) -> list[Path]:
        """Where a recorded dependency may be, in order: its name's last component under the given folders, then
        under the --parents-dir folders, then the path its URI names."""
        leaf = PurePosixPath(name).name if name else ""
        out: list[Path] = []
        if leaf not in ("", ".", ".."):
            out += [d / leaf for d in [*extra_dirs, *self.parents_dirs]]
        at = uri_path(uri)
        if at is not None:
            out.append(at)
        return list(dict.fromkeys(out))

    def find(self, digest: str, name: str | None, uri: str | None, extra_dirs: Iterable[Path] = ()) -> Path | None:
        """The first candidate folder (see candidates) whose model root is `digest`."""
        for c in self.candidates(name, uri, extra_dirs):
            if c.is_dir() and self.root_of(c) == digest:
                return c
        return None

    def recipe_models(self, refs: Iterable[str]) -> dict[str, Path]:
        """Each model reference of a recipe as a folder. Without --parents-dir: the path as written. With it: only
        under those folders, as a folder of that name, of its last component, or `org--name`; references that are
        absolute or have `..` parts are refused there (they would leave the folders the user pointed at)."""
        found: dict[str, Path] = {}
        for ref in refs:
            if not self.parents_dirs:
                candidates = [Path(ref)]
            else:
                parts = PurePosixPath(ref).parts
                if not parts or PurePosixPath(ref).is_absolute() or Path(ref).is_absolute() or ".." in parts:
                    raise InputError(
                        None,
                        f"model {ref!r}: with --parents-dir, a model reference must be a relative name without '..' "
                        "(it is looked up only under the --parents-dir folders)",
                    )
                candidates = []
                for d in self.parents_dirs:
                    candidates += [d / ref, d / PurePosixPath(ref).name, d / ref.replace("/", "--")]
            hit = next((c for c in candidates if c.is_dir()), None)
            if hit is None:
                where = f"looked in {', '.join(str(d) for d in self.parents_dirs)}" if self.parents_dirs else ""
                raise InputError(None, f"cannot find a folder for model {ref!r} ({where or 'no such folder'})")
            found[ref] = hit
        return found
