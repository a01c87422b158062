"""The forensics scenario battery: detect's verdicts and coefficients on real tiny checkpoints, scored against truth.

Per family (a random-init tiny Qwen2 or Llama base and three real AdamW fine-tunes of it: candidates ft_a, ft_b
and a distillation teacher; tests/support/battery.py): real mergekit 0.1.5 merges (linear, slerp with a layer
gradient, task arithmetic, TIES, DARE, passthrough), merges followed by real SFT or KL distillation (1-50 steps at
lr 1e-5, 1e-4, 1e-3), plain fine-tunes of a candidate, sibling fine-tunes and distillations of the base, independent
models, function-preserving permutations and one-element outliers. Each model is fitted against (ft_a, ft_b) with
the base, and the linear/slerp merges and the null cases also without it.

Prints and writes (--out, JSON): the confusion matrix of expected against found verdicts, the coefficient error of
merges found, the false-merge rate on fine-tunes/siblings/distillations, the outlier flips, and the null
distribution of the merge share.

Usage: python benchmarks/battery_forensics.py [--families 4] [--first-family 0] [--dir /tmp/attest-battery]
       [--out battery.json]

Families are numbered from --first-family (each index fixes its seeds and architecture): the critical values of the
verdict rules were calibrated on families 8-15 and are scored on families 0-7 (BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

VERDICTS = ("pure_merge", "merge_plus_training", "derived_not_merge", "undetermined", "not_derived")
NULL_KINDS = ("finetune", "sibling", "distill")


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Confusion matrix, coefficient errors, false-merge rate, outlier flips, null quantiles of the merge share."""
    import numpy as np

    by_case = {(r["family"], r["case"]): r for r in rows}
    for r in rows:
        if r["kind"] == "outlier":
            r["expect"] = by_case[(r["family"], r["source"])]["verdict"]
    scored = [r for r in rows if r["kind"] != "permuted"]
    confusion: dict[str, Counter[str]] = {v: Counter() for v in VERDICTS}
    for r in scored:
        confusion[r["expect"]][r["verdict"]] += 1
    merges = [r for r in rows if r["kind"] in ("merge", "merge_train")]
    found = [r for r in merges if r["verdict"] in ("pure_merge", "merge_plus_training")]
    errs: dict[str, list[float]] = {"no_training": [], "training": []}
    for r in found:
        if r["coef_error"] is not None:
            errs["training" if r["kind"] == "merge_train" and r["expect"] != "pure_merge" else "no_training"].append(
                r["coef_error"]
            )
    # Shares (each candidate's coefficient over the candidates' sum): invariant to training along the merged delta.
    share_errs = [
        r["share_error"]
        for r in found
        if r.get("share_error") is not None and r["kind"] == "merge_train" and r["expect"] != "pure_merge"
    ]
    nulls = [r for r in rows if r["kind"] in NULL_KINDS]
    false_merge = [r for r in nulls if r["verdict"] in ("pure_merge", "merge_plus_training")]
    shares: dict[str, list[float]] = {"base": [], "no_base": []}
    for r in nulls:
        if r["merge_share"] is not None:
            shares["base" if r["with_base"] else "no_base"].append(r["merge_share"])
    missed = [r for r in merges if r["verdict"] not in ("pure_merge", "merge_plus_training")]
    by_training: dict[str, list[int]] = {}
    for r in merges:
        if r["kind"] == "merge_train":
            key = f"{r['meta']['train']} {r['meta']['steps']} steps @ {r['meta']['lr']:g}"
            hit = r["verdict"] in ("pure_merge", "merge_plus_training")
            by_training.setdefault(key, [0, 0])[0] += int(hit)
            by_training[key][1] += 1
    outliers = [r for r in rows if r["kind"] == "outlier"]
    permuted = [r for r in rows if r["kind"] == "permuted"]

    def q(xs: list[float], low: bool = False) -> dict[str, float | None]:
        """The tail a critical value sits in: the upper one (max, p99, p95), or with low=True the lower one."""
        keys, probs = (("min", "p1", "p5"), (0.0, 0.01, 0.05)) if low else (("max", "p99", "p95"), (1.0, 0.99, 0.95))
        if not xs:
            return {"n": 0, **dict.fromkeys(keys), "median": None}
        a = np.array(xs)
        tail = {k: float(np.quantile(a, p)) for k, p in zip(keys, probs, strict=True)}
        return {"n": len(xs), **tail, "median": float(np.median(a))}

    # The midpoint test's null (SPEC.md §6.5): no-base fits of fine-tunes/distillations/siblings nearest the mean.
    near_mean = [
        r for r in nulls if not r["with_base"] and (r.get("mean_nearest") or 0) >= 0.5 and r.get("midpoint_ratio")
    ]

    # The second-parent test's null: fits of null models derived from (nearest) a candidate, the other's weight.
    def other_weight(r: dict[str, Any]) -> float:
        return abs(r["coefficients"][1] if r["derived_from"].endswith("ft_a") else r["coefficients"][0])

    from_candidate = [r for r in nulls if (r.get("derived_from") or "base")[-4:] in ("ft_a", "ft_b")]
    return {
        "cases": len(rows),
        "confusion": {k: dict(v) for k, v in confusion.items()},
        "accuracy": sum(r["verdict"] == r["expect"] for r in scored) / max(len(scored), 1),
        "merges": len(merges),
        "merges_found": len(found),
        "merges_missed": [(r["family"], r["case"], r["verdict"], r["merge_share"]) for r in missed],
        "merges_cleared": sum(r["verdict"] in ("derived_not_merge", "not_derived") for r in missed),
        "merges_undetermined": sum(r["verdict"] == "undetermined" for r in missed),
        "detection_by_training": {k: f"{h}/{n}" for k, (h, n) in sorted(by_training.items())},
        "coef_error_no_training": q(errs["no_training"]),
        "coef_error_training": q(errs["training"]),
        "coef_within_0.005_no_training": sum(e <= 0.005 for e in errs["no_training"]),
        "coef_within_0.05_training": sum(e <= 0.05 for e in errs["training"]),
        "share_error_training": q(share_errs),
        "shares_within_0.05_training": sum(e <= 0.05 for e in share_errs),
        "null_cases": len(nulls),
        "false_merges": len(false_merge),
        "false_merge_rate": len(false_merge) / max(len(nulls), 1),
        "false_merge_cases": [(r["family"], r["case"], r["verdict"]) for r in false_merge],
        "null_merge_share": {k: q(v) for k, v in shares.items()},
        "null_undetermined": dict(Counter(r["kind"] for r in nulls if r["verdict"] == "undetermined")),
        "null_midpoint_ratio": q([r["midpoint_ratio"] for r in near_mean], low=True),
        "null_second_parent_weight": q([other_weight(r) for r in from_candidate]),
        "outliers": len(outliers),
        "outlier_flips": [
            (r["family"], r["case"], r["expect"], r["verdict"]) for r in outliers if r["verdict"] != r["expect"]
        ],
        "permuted": [(r["family"], r["case"], r["expect"], r["verdict"]) for r in permuted],
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--families", type=int, default=4)
    ap.add_argument(
        "--first-family", type=int, default=0, help="index of the first family (seeds follow it): held-out families"
    )
    ap.add_argument("--dir", type=Path, default=Path("/tmp/attest-battery"))
    ap.add_argument("--out", type=Path, default=Path("battery_forensics.json"))
    ap.add_argument("--keep", action="store_true", help="keep the generated checkpoints")
    args = ap.parse_args()

    import logging

    import torch
    import transformers

    from attest.forensics import detect
    from tests.support.battery import family, family_cases, run_case

    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)
    rows: list[dict[str, Any]] = []
    t0 = time.time()
    build_s = detect_s = 0.0
    for f in range(args.first_family, args.first_family + args.families):
        root = args.dir / f"family{f}"
        shutil.rmtree(root, ignore_errors=True)
        tb = time.time()
        fam = family(root, seed=100 + f, arch="qwen2" if f % 2 == 0 else "llama")
        cases = family_cases(fam, fseed=1000 * (f + 1))
        build_s += time.time() - tb
        td = time.time()
        for c in cases:
            row = run_case(c, fam, detect)
            row["family"] = f
            rows.append(row)
        detect_s += time.time() - td
        print(f"family {f}: {len(cases)} cases, {time.time() - t0:.0f} s", flush=True)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    summary = summarize(rows)
    summary["seconds"] = {"total": time.time() - t0, "build": build_s, "detect": detect_s}
    summary["machine"] = {"cpus": os.cpu_count(), "loadavg": Path("/proc/loadavg").read_text().split()[:3]}
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps({"summary": summary, "rows": rows}, indent=1))
    tmp.replace(args.out)
    for k, v in summary.items():
        print(f"{k}: {json.dumps(v)}")


if __name__ == "__main__":
    main()
