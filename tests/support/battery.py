"""The forensics scenario battery's cases (benchmarks/battery_forensics.py; a slice runs in tests/forensics).

Every case is a real checkpoint: tiny transformers models with random init, real AdamW fine-tunes and KL
distillations, real mergekit 0.1.5 merges. Each case carries its truth: the verdict detect must give and, for
merges, the recipe's coefficients in detect's participant order (candidates ft_a, ft_b, then the base).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from tests.support.builders import distill, finetune, make_tiny_model
from tests.support.mergekit_peer import run_mergekit
from tests.support.permute import permute_model

PARENT_STEPS, PARENT_LR = 40, 2e-3


@dataclass
class Family:
    root: Path
    base: Path
    ft_a: Path
    ft_b: Path
    teacher: Path


@dataclass
class Case:
    name: str
    kind: str  # merge, merge_train, finetune, sibling, distill, independent, permuted, outlier
    model: Path
    expect: str  # the verdict a correct detect gives
    coefs: list[float] | None = None  # recipe coefficients (ft_a, ft_b, base) for dense merges
    with_base: bool = True
    source: str | None = None  # outlier / permuted: the case this one was made from
    meta: dict[str, Any] = field(default_factory=dict)


def family(root: Path, seed: int, arch: str = "qwen2") -> Family:
    """A base and three real fine-tunes of it (two candidates and a distillation teacher)."""
    root.mkdir(parents=True, exist_ok=True)
    base = make_tiny_model(root / "base", seed=seed, arch=arch)
    ft = [finetune(base, root / n, seed=seed * 10 + i, steps=PARENT_STEPS, lr=PARENT_LR)
          for i, n in enumerate(("ft_a", "ft_b", "teacher"), 1)]  # fmt: skip
    return Family(root, base, ft[0], ft[1], ft[2])


def _dir(root: Path, name: str) -> Path:
    return root / re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _bf16(x: float) -> float:
    return float(torch.tensor(x, dtype=torch.bfloat16).float())


def mergekit_merge(fam: Family, method: str, out: Path, **p: Any) -> tuple[Path, list[float] | None]:
    """One mergekit 0.1.5 merge of ft_a and ft_b; returns the folder and the dense recipe (ft_a, ft_b, base) if any."""
    a, b, base = fam.ft_a, fam.ft_b, fam.base
    coefs: list[float] | None
    if method == "linear":
        wa, wb = p["weights"]
        cfg = (f"merge_method: linear\nmodels:\n  - model: {a}\n    parameters: {{weight: {wa}}}\n"
               f"  - model: {b}\n    parameters: {{weight: {wb}}}\ndtype: bfloat16\n")  # fmt: skip
        coefs = [wa / (wa + wb), wb / (wa + wb), 0.0]
    elif method == "slerp":
        t = p["t"]
        cfg = (f"merge_method: slerp\nbase_model: {a}\nmodels:\n  - model: {a}\n  - model: {b}\n"
               f"parameters: {{t: {t}}}\ndtype: bfloat16\n")  # fmt: skip
        coefs = None  # slerp's coefficients depend on each tensor's angle: scored by the hint's t (run_case)
    elif method in ("task_arithmetic", "ties", "dare_linear"):
        (wa, wb), d = p["weights"], p.get("density", 0.5)
        dens = f", density: {d}" if method != "task_arithmetic" else ""
        cfg = (f"merge_method: {method}\nbase_model: {base}\nmodels:\n"
               f"  - model: {a}\n    parameters: {{weight: {wa}{dens}}}\n"
               f"  - model: {b}\n    parameters: {{weight: {wb}{dens}}}\ndtype: bfloat16\n")  # fmt: skip
        coefs = [_bf16(wa), _bf16(wb), 1 - _bf16(wa) - _bf16(wb)] if method == "task_arithmetic" else None
    elif method == "passthrough":
        cfg = (f"merge_method: passthrough\nslices:\n  - sources: [{{model: {a}, layer_range: [1, 2]}}]\n"
               f"  - sources: [{{model: {b}, layer_range: [0, 1]}}]\ndtype: bfloat16\n")  # fmt: skip
        coefs = None
    else:
        raise ValueError(method)
    return run_mergekit(cfg, out, seed=42 if "dare" in method else None), coefs


def train_after(src: Path, fam: Family, out: Path, how: str, steps: int, lr: float, seed: int) -> Path:
    """Post-merge training: SFT on tokens, or KL distillation toward the family's teacher."""
    if how == "sft":
        return finetune(src, out, seed=seed, steps=steps, lr=lr)
    return distill(src, fam.teacher, out, seed=seed, steps=steps, lr=lr)


def same_weights(a: Path, b: Path) -> bool:
    ta, tb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return ta.keys() == tb.keys() and all(torch.equal(ta[k], tb[k]) for k in ta)


def with_outlier(src: Path, out: Path, seed: int, value: float = 8.0) -> tuple[Path, str]:
    """A copy of src with one element of one large weight matrix set to `value`."""
    shutil.copytree(src, out, ignore=shutil.ignore_patterns(".attest"))
    f = out / "model.safetensors"
    t = load_file(f)
    g = torch.Generator().manual_seed(seed)
    names = sorted(n for n, x in t.items() if x.dim() == 2)
    name = names[int(torch.randint(len(names), (1,), generator=g))]
    x = t[name].clone()
    x.view(-1)[int(torch.randint(x.numel(), (1,), generator=g))] = value
    t[name] = x
    save_file(t, f, metadata={"format": "pt"})
    return out, name


def permuted(src: Path, out: Path, seed: int) -> Path:
    """A function-preserving permutation (tests/support/permute.py): the residual stream, each layer's MLP units,
    its KV groups (with the query heads that read them) and the query heads inside each group. The logits are
    unchanged up to float rounding."""
    permute_model(src, out, seed)
    return out


MERGES: list[tuple[str, dict[str, Any]]] = [
    ("linear", {"weights": (1.0, 0.75)}),
    ("linear", {"weights": (1.0, 1.0)}),
    ("linear", {"weights": (0.3, 0.7)}),
    ("linear", {"weights": (0.85, 0.15)}),
    ("slerp", {"t": 0.3}),
    ("slerp", {"t": 0.6}),
    ("slerp", {"t": [0.0, 0.5, 1.0]}),
    ("task_arithmetic", {"weights": (0.7, 0.5)}),
    ("task_arithmetic", {"weights": (0.6, 0.3)}),
    ("task_arithmetic", {"weights": (1.0, 0.4)}),
    ("ties", {"weights": (0.6, 0.4)}),
    ("dare_linear", {"weights": (0.6, 0.4)}),
    ("passthrough", {}),
]
TRAINED = [
    ("linear", {"weights": (1.0, 0.75)}),
    ("task_arithmetic", {"weights": (0.7, 0.5)}),
    ("linear", {"weights": (1.0, 1.0)}),  # an even merge sits at the candidates' mean: without a base, a sibling's spot
    ("ties", {"weights": (0.6, 0.4)}),  # sparsified: the recipe differs per element (fitted with the base only)
    ("dare_linear", {"weights": (0.6, 0.4)}),
    ("passthrough", {}),  # layers copied then trained: no bit-identical layer is left (depth up-scaling + training)
]
TRAINING = [(how, steps, lr) for how in ("sft", "kl") for steps in (1, 5, 15, 50) for lr in (1e-5, 1e-4, 1e-3)]
NULL_GRID = [(steps, lr) for steps in (5, 20, 50) for lr in (1e-4, 1e-3)]


def _tag(method: str, p: dict[str, Any]) -> str:
    """A merge's case name: `linear_(1.0,0.75)`, `passthrough`."""
    return f"{method}_" + "_".join(str(v).replace(" ", "") for v in p.values()) if p else method


def family_cases(fam: Family, fseed: int, quick: bool = False) -> list[Case]:
    """Every case of one family (a handful with quick=True)."""
    root = fam.root
    out: list[Case] = []
    add = out.append
    merges = MERGES if not quick else [MERGES[0], MERGES[7]]
    made: dict[str, tuple[Path, list[float] | None]] = {}
    for method, p in merges:
        tag = _tag(method, p)
        folder, coefs = mergekit_merge(fam, method, _dir(root, f"m_{tag}"), **p)
        made[tag] = (folder, coefs)
        meta = {"method": method, **{k: str(v) for k, v in p.items()}}
        add(Case(tag, "merge", folder, "pure_merge", coefs, with_base=True, meta=meta))
        if method in ("linear", "slerp"):
            add(Case(tag + "/nobase", "merge", folder, "pure_merge", coefs[:2] if coefs else None, False, meta=meta))
    training = TRAINING if not quick else [("kl", 15, 1e-3), ("sft", 5, 1e-4)]
    for method, p in TRAINED if not quick else TRAINED[:1]:
        tag = _tag(method, p)
        src, coefs = made.get(tag) or mergekit_merge(fam, method, _dir(root, f"m_{tag}"), **p)
        for how, steps, lr in training:
            name = f"{tag}+{how}{steps}@{lr:g}"
            folder = train_after(src, fam, _dir(root, name), how, steps, lr, seed=fseed + steps)
            expect = "pure_merge" if same_weights(folder, src) else "merge_plus_training"
            meta = {"method": method, "train": how, "steps": steps, "lr": lr}
            add(Case(name, "merge_train", folder, expect, coefs, True, meta=meta))
            if method in ("linear", "passthrough"):
                add(Case(name + "/nobase", "merge_train", folder, expect, coefs[:2] if coefs else None, False,
                         meta=meta))  # fmt: skip
    grid = NULL_GRID if not quick else [(20, 1e-3)]
    for i, (steps, lr) in enumerate(grid):
        meta = {"steps": steps, "lr": lr}
        child = finetune(fam.ft_a, root / f"child{steps}_{lr:g}", seed=fseed + 500 + i, steps=steps, lr=lr)
        add(Case(f"child_a{steps}@{lr:g}", "finetune", child, "derived_not_merge", meta=meta))
        add(Case(f"child_a{steps}@{lr:g}/nobase", "finetune", child, "derived_not_merge", with_base=False, meta=meta))
        sib = finetune(fam.base, root / f"sib{steps}_{lr:g}", seed=fseed + 600 + i, steps=steps, lr=lr)
        add(Case(f"sibling{steps}@{lr:g}", "sibling", sib, "derived_not_merge", meta=meta))
        add(Case(f"sibling{steps}@{lr:g}/nobase", "sibling", sib, "derived_not_merge", with_base=False, meta=meta))
        kd = distill(fam.base, fam.ft_a, root / f"kd{steps}_{lr:g}", seed=fseed + 700 + i, steps=steps, lr=lr)
        add(Case(f"distill_base_from_a{steps}@{lr:g}", "distill", kd, "derived_not_merge", meta=meta))
        kd2 = distill(fam.ft_a, fam.teacher, root / f"kda{steps}_{lr:g}", seed=fseed + 800 + i, steps=steps, lr=lr)
        add(Case(f"distill_a{steps}@{lr:g}", "distill", kd2, "derived_not_merge", meta=meta))
    if not quick:
        ind = make_tiny_model(root / "independent", seed=fseed + 999)
        add(Case("independent", "independent", ind, "not_derived"))
        add(Case("independent/nobase", "independent", ind, "not_derived", with_base=False))
        ind_t = finetune(ind, root / "independent_ft", seed=fseed + 998, steps=20, lr=1e-3)
        add(Case("independent_ft", "independent", ind_t, "not_derived"))
    # Outliers: one element set to 8.0; the verdict must be that of the unmodified case.
    sources = [c for c in out if c.kind in ("merge", "merge_train", "finetune", "sibling") and c.with_base]
    picks = sources if quick else [c for c in sources if c.name in _OUTLIER_SOURCES]
    for j, c in enumerate(picks[:6] if not quick else picks[:2]):
        folder, tensor = with_outlier(c.model, root / f"outlier_{j}", seed=fseed + j)
        add(Case(c.name + "+outlier", "outlier", folder, "", c.coefs, True, source=c.name, meta={"tensor": tensor}))
    if not quick:
        for j, c in enumerate(c for c in out if c.name in _PERMUTED_SOURCES):
            folder = permuted(c.model, root / f"permuted_{j}", seed=fseed + j)
            add(Case(c.name + "+permuted", "permuted", folder, c.expect, c.coefs, True, source=c.name))
    return out


_OUTLIER_SOURCES = {
    "task_arithmetic_(0.7,0.5)",
    "linear_(1.0,0.75)",
    "linear_(1.0,0.75)+kl15@0.001",
    "linear_(1.0,0.75)+sft5@0.0001",
    "sibling20@0.001",
    "child_a5@0.0001",
}
_PERMUTED_SOURCES = {"linear_(1.0,0.75)", "task_arithmetic_(0.7,0.5)", "linear_(1.0,0.75)+kl15@0.001"}


def run_case(case: Case, fam: Family, detect: Callable[..., Any]) -> dict[str, Any]:
    """Detect on one case; the row the battery scores."""
    r = detect(case.model, [fam.ft_a, fam.ft_b], fam.base if case.with_base else None)
    coefs = [c.value for c in r.coefficients]
    err = None
    if case.coefs is not None:  # the recipe is estimated whatever the verdict; the battery scores found merges
        err = max(abs(a - b) for a, b in zip(coefs, case.coefs, strict=False))
    if case.meta.get("method") == "slerp" and case.meta.get("t", "[").replace(".", "", 1).isdigit():
        hint = next((h.evidence for h in r.hints if h.method == "slerp"), None)
        found = re.search(r"median t = ([0-9.]+)", hint or "")
        err = abs(float(found.group(1)) - float(case.meta["t"])) if found else None  # the hint needs 2 endpoints
    shares = [s.value for s in r.shares]
    share_err = None
    if case.coefs is not None and shares and sum(case.coefs[:2]) != 0:
        truth = [c / sum(case.coefs[:2]) for c in case.coefs[:2]]
        share_err = max(abs(a - b) for a, b in zip(shares, truth, strict=True))
    mt = r.merge_test
    return {
        "case": case.name,
        "kind": case.kind,
        "with_base": case.with_base,
        "expect": case.expect,
        "verdict": r.verdict,
        "coefficients": coefs,
        "truth": case.coefs,
        "coef_error": err,
        "shares": shares,
        "share_error": share_err,
        "merge_share": mt.merge_share if mt else None,
        "training_share": mt.training_share if mt else None,
        "mean_nearest": mt.mean_nearest if mt else None,
        "midpoint_ratio": mt.midpoint_ratio if mt else None,
        "derived_from": r.derived_from,
        "unexplained_fraction": r.residual.unexplained_fraction if r.residual else None,
        "source": case.source,
        "meta": case.meta,
        "reason": r.reason,
    }
