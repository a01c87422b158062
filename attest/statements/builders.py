"""Builders for the parts of a provenance statement: subject, model/dataset/code dependencies, environment.

They turn what a recorder knows (manifests, paths, parameters) into the exact fields SPEC.md section 2 describes, so
the merge, fine-tune and distill recorders cannot drift apart.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import platform
import subprocess
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from attest import __version__
from attest.errors import InputError
from attest.identity import IdentityManifest
from attest.identity.manifest import IDENTITY_FORMAT
from attest.statements.models import (
    BUILD_TYPES,
    DEFAULT_BUILDER_ID,
    SLSA_PROVENANCE_V1,
    STATEMENT_TYPE,
    BuildDefinition,
    Builder,
    BuildMetadata,
    Provenance,
    ProvenanceStatement,
    ResourceDescriptor,
    RunDetails,
    StepKind,
    Subject,
)

VERSIONED_PACKAGES = ("torch", "transformers", "mergekit", "safetensors", "accelerate", "peft")


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def new_invocation_id() -> str:
    return f"urn:uuid:{uuid.uuid4()}"


def model_subject(name: str, manifest: IdentityManifest) -> Subject:
    """The output model: digest sha256 = model root; the weights and files roots ride in annotations."""
    if manifest.algorithm != "sha256":
        raise InputError(name, f"a signed subject needs a sha256 identity, not {manifest.algorithm}")
    return Subject(
        name=name,
        digest={"sha256": manifest.model_root},
        annotations={
            "identity": IDENTITY_FORMAT,
            "weights_root": manifest.weights_root,
            "files_root": manifest.files_root,
        },
    )


def model_dependency(
    name: str, uri: str, model_root: str, weights_root: str, role: str, statement: str | None = None
) -> ResourceDescriptor:
    """A parent checkpoint, named by its hashed model root. `statement` is the sha256 of the payload of the parent's
    own statement about that root, when its folder carries one."""
    annotations: dict[str, Any] = {"role": role, "identity": IDENTITY_FORMAT, "weights_root": weights_root}
    if statement is not None:
        annotations["statement"] = statement
    return ResourceDescriptor(name=name, uri=uri, digest={"sha256": model_root}, annotations=annotations)


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
    except OSError as exc:
        raise InputError(path, f"cannot read: {exc.strerror or exc}") from None
    return h.hexdigest()


def dataset_dependency(path: Path) -> ResourceDescriptor:
    """A dataset file, named by the sha256 of its bytes."""
    if not path.exists():
        raise InputError(path, "no such dataset file")
    if not path.is_file():
        raise InputError(path, "a dataset must be a file (name each file of a dataset folder)")
    return ResourceDescriptor(
        name=path.name,
        uri=path.resolve().as_uri(),
        digest={"sha256": sha256_file(path)},
        annotations={"role": "dataset", "size": path.stat().st_size},
    )


def _git(path: Path, *args: str) -> str:
    try:
        out = subprocess.run(["git", "-C", str(path), *args], capture_output=True, text=True, timeout=60, check=True)
    except FileNotFoundError:
        raise InputError(path, "git is not installed") from None
    except subprocess.CalledProcessError as exc:
        detail = exc.stderr.strip().splitlines()[0] if exc.stderr and exc.stderr.strip() else ""
        raise InputError(path, f"not a git work tree ({detail})") from None
    except subprocess.TimeoutExpired:
        raise InputError(path, "git timed out") from None
    return out.stdout.strip()


def code_dependency(path: Path) -> ResourceDescriptor:
    """The training code: its git commit and whether the work tree had uncommitted changes (`dirty`)."""
    if not path.is_dir():
        raise InputError(path, "no such code folder")
    commit = _git(path, "rev-parse", "HEAD")
    dirty = bool(_git(path, "status", "--porcelain", "--untracked-files=no"))
    remote = ""
    try:
        remote = _git(path, "config", "--get", "remote.origin.url")
    except InputError:
        remote = ""
    uri = f"git+{remote}@{commit}" if remote else path.resolve().as_uri()
    return ResourceDescriptor(
        name=path.resolve().name, uri=uri, digest={"gitCommit": commit}, annotations={"role": "code", "dirty": dirty}
    )


def package_versions() -> dict[str, str]:
    """Versions of the packages that can change a step's numbers (read from metadata: nothing is imported)."""
    out = {
        "python": platform.python_version(),
        "attest": __version__,
    }  # the package's version (distribution attest-weights)
    for name in VERSIONED_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def checkpoint_byproduct(name: str, manifest: IdentityManifest, step: int | None) -> ResourceDescriptor:
    """An intermediate checkpoint of a training run, so a recorded segment can later be replayed and checked."""
    annotations: dict[str, Any] = {"role": "checkpoint", "weights_root": manifest.weights_root}
    if step is not None:
        annotations["step"] = step
    return ResourceDescriptor(name=name, digest={"sha256": manifest.model_root}, annotations=annotations)


def provenance_statement(
    kind: StepKind,
    subject: Subject,
    *,
    external: dict[str, Any],
    internal: dict[str, Any],
    dependencies: list[ResourceDescriptor],
    started_on: str,
    finished_on: str,
    invocation_id: str | None = None,
    builder_id: str = DEFAULT_BUILDER_ID,
    byproducts: list[ResourceDescriptor] | None = None,
) -> ProvenanceStatement:
    """Assemble the statement; the builder version is attest's own."""
    return ProvenanceStatement(
        type_=STATEMENT_TYPE,
        subject=[subject],
        predicateType=SLSA_PROVENANCE_V1,
        predicate=Provenance(
            buildDefinition=BuildDefinition(
                buildType=BUILD_TYPES[kind],
                externalParameters=external,
                internalParameters=internal,
                resolvedDependencies=dependencies,
            ),
            runDetails=RunDetails(
                builder=Builder(id=builder_id, version={"attest": __version__}),
                metadata=BuildMetadata(
                    invocationId=invocation_id or new_invocation_id(), startedOn=started_on, finishedOn=finished_on
                ),
                byproducts=byproducts or None,
            ),
        ),
    )
