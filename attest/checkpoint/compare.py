"""Comparing two folders' weights through the layout-canonical view, where the stored comparison cannot tell.

Identity manifests compare stored tensors: fused and per-expert experts differ there by name although the weights
are the same, and a changed fused tensor does not say which expert changed. This re-reads only the tensors that
need it: those stored in another layout on either side, and routed-expert tensors the manifests call changed.
"""

from __future__ import annotations

import os

from attest.checkpoint.canonical import FUSED, CanonicalView, expert_of
from attest.checkpoint.reader import Checkpoint
from attest.identity.diff import ManifestDiff


def needs_canonical(d: ManifestDiff) -> bool:
    """Whether routed experts are involved in the stored differences."""
    names = [*d.changed_tensors, *d.missing_tensors, *d.added_tensors]
    return any(FUSED.match(n) or expert_of(n) for n in names)


def canonical_diff(expected: str | os.PathLike[str], actual: str | os.PathLike[str], d: ManifestDiff) -> ManifestDiff:
    """`d` with the canonical comparison of two model folders filled in."""
    with Checkpoint(expected, with_config=False) as a, Checkpoint(actual, with_config=False) as b:
        va, vb = CanonicalView(a), CanonicalView(b)
        stored_changed = set(d.changed_tensors)
        changed = sorted(set(va.where) ^ set(vb.where))
        for name in va.where.keys() & vb.where.keys():
            sa, sb = va.stored_of[name], vb.stored_of[name]
            if sa == name and sb == name and name not in stored_changed:
                continue  # the same stored tensor on both sides, equal by its identity digest
            if va.raw_digest(name) != vb.raw_digest(name):
                changed.append(name)
            va.release(name)
            vb.release(name)
        changed.sort()
        notes = list(d.notes)
        for label, v in ((str(expected), va), (str(actual), vb)):
            if v.fused:
                notes.append(
                    f"{label} stores routed experts fused ({len(v.relayouts)} tensors); compared per expert through "
                    "the layout-canonical view (SPEC.md §1.10)"
                )
            notes.extend(f"{label}: {n}" for n in v.notes)
        if not changed and not d.same_weights:
            notes.append(
                "identical weights in different layouts: the weights roots differ because the stored tensors do"
            )
        experts = sorted({k.expert_name for n in changed if (k := expert_of(n)) is not None})
        return d.model_copy(
            update={
                "canonical_same_weights": not changed,
                "canonical_changed_tensors": changed,
                "changed_experts": experts,
                "notes": notes,
            }
        )
