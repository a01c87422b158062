"""Compare two identity manifests and name every tensor and file that differs."""

from __future__ import annotations

from pydantic import BaseModel, Field

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
    canonical_same_weights: bool | None = Field(
        default=None,
        description="same weights through the layout-canonical view (SPEC.md §1.10); null when not compared",
    )
    canonical_changed_tensors: list[str] = Field(
        default_factory=list, description="canonical tensors that differ, or exist on one side only"
    )
    changed_experts: list[str] = Field(default_factory=list, description="routed experts whose weights differ")
    notes: list[str] = Field(default_factory=list)

    @property
    def identical(self) -> bool:
        """Same model, or the same weights stored in another layout with every other file the same."""
        if self.same_model and self.same_weights:
            return True
        files_same = not (self.changed_files or self.missing_files or self.added_files)
        return bool(self.canonical_same_weights) and files_same

    def lines(self) -> list[str]:
        out: list[str] = []
        stored = self.canonical_same_weights is None  # else the stored-layout lists are read through the view
        for label, names in (
            ("tensor changed", self.changed_tensors if stored else self.canonical_changed_tensors),
            ("tensor missing", self.missing_tensors if stored else []),
            ("tensor added", self.added_tensors if stored else []),
            ("expert changed", self.changed_experts),
            ("file changed", self.changed_files),
            ("file missing", self.missing_files),
            ("file added", self.added_files),
        ):
            out.extend(f"{label}: {n}" for n in names)
        return [*out, *(f"note: {n}" for n in self.notes)]


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
