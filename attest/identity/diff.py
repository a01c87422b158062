"""Compare two identity manifests and name every tensor and file that differs."""

from __future__ import annotations

from pydantic import BaseModel

from attest.identity.manifest import IdentityManifest


class ManifestDiff(BaseModel):
    same_weights: bool
    same_model: bool
    changed_tensors: list[str]
    missing_tensors: list[str]  # in expected, not in actual
    added_tensors: list[str]
    changed_files: list[str]
    missing_files: list[str]
    added_files: list[str]

    @property
    def identical(self) -> bool:
        return self.same_model and self.same_weights

    def lines(self) -> list[str]:
        out: list[str] = []
        for label, names in (
            ("tensor changed", self.changed_tensors),
            ("tensor missing", self.missing_tensors),
            ("tensor added", self.added_tensors),
            ("file changed", self.changed_files),
            ("file missing", self.missing_files),
            ("file added", self.added_files),
        ):
            out.extend(f"{label}: {n}" for n in names)
        return out


def diff_manifests(expected: IdentityManifest, actual: IdentityManifest) -> ManifestDiff:
    if expected.algorithm != actual.algorithm:
        raise ValueError(f"cannot compare a {expected.algorithm} manifest with a {actual.algorithm} one")
    et = {t.name: t.digest for t in expected.tensors}
    at = {t.name: t.digest for t in actual.tensors}
    ef = {f.path: f.digest for f in expected.files}
    af = {f.path: f.digest for f in actual.files}
    return ManifestDiff(
        same_weights=expected.weights_root == actual.weights_root,
        same_model=expected.model_root == actual.model_root,
        changed_tensors=sorted(n for n in et.keys() & at.keys() if et[n] != at[n]),
        missing_tensors=sorted(et.keys() - at.keys()),
        added_tensors=sorted(at.keys() - et.keys()),
        changed_files=sorted(n for n in ef.keys() & af.keys() if ef[n] != af[n]),
        missing_files=sorted(ef.keys() - af.keys()),
        added_files=sorted(af.keys() - ef.keys()),
    )
