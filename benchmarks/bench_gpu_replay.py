"""Replay of mixture-of-experts merges on CUDA against the CPU result: ulp distance per tensor, and time.

Two parts, because the GPU machine has no mergekit and no network:

  prepare DIR   (here, with the test dependencies) builds the tiny real MoE families of the test suite (Qwen3.5-MoE,
                Qwen3-MoE, Mixtral: random init + real AdamW steps) and merges each with real mergekit 0.1.5 on the
                CPU (linear 1.0 : 0.75, TIES, SLERP), into DIR with a manifest.
  run DIR       (on the GPU machine) replays every merge of the manifest with attest on the CPU and on CUDA against
                mergekit's CPU output; then generates the Qwen3.5-397B-A17B-shaped checkpoint (benchmarks/moe397b.py,
                --experts routed experts per layer), merges it with attest on the CPU (mergekit's fused layout) and
                replays that on the CPU and on CUDA. Each replay is timed (CUDA initialised before the clock starts).

For each replay: the verdict at the device's default tolerance (0 ulp on the CPU, 1 on CUDA), the tensors exact /
within tolerance / mismatched, the elements that differ and the largest distance in ulps of the storage dtype, with the
tensors that differ most. The distance is to mergekit's (or attest's) CPU output, i.e. to the CPU result.

Usage: python benchmarks/bench_gpu_replay.py prepare .gpu
       python benchmarks/bench_gpu_replay.py run .gpu [--experts 50 512] [--scale-dir /tmp/attest-gpu-moe] [--json F]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench_moe_scale import RECIPE as LINEAR_RECIPE  # benchmarks/ is on the path from here

ROOT_MARK = "@ROOT@"
SCALE_RECIPES = {
    "linear": LINEAR_RECIPE,
    "ties": "merge_method: ties\ndtype: bfloat16\nbase_model: {a}\nmodels:\n  - model: {b}\n"
    "    parameters: {{weight: 1.0, density: 0.5}}\n",
}


def prepare(root: Path) -> None:
    from tests.support.merge_recipes import MOE_METHODS, moe_recipe
    from tests.support.mergekit_peer import run_mergekit
    from tests.support.moe_builders import MOE_ARCHS, moe_family

    root = root.resolve()
    merges = []
    for arch in MOE_ARCHS:
        family = moe_family(arch, root / "models")
        for method in MOE_METHODS:
            text = moe_recipe(method, family)
            out = root / "merges" / f"{arch}-{method}"
            if not (out / "config.json").is_file():
                run_mergekit(text, out)
            merges.append({"arch": arch, "method": method, "recipe": text.replace(str(root), ROOT_MARK)})
            print(f"prepared {arch} {method}", flush=True)
    manifest = {"merges": merges, "made_with": _versions()}
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))


def _versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for name in ("torch", "transformers", "safetensors", "mergekit"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def _summary(report: Any, seconds: float) -> dict[str, Any]:
    tensors = [r for r in report.tensors if r.dtype is not None]
    differing = [r for r in tensors if r.differing_elements]
    worst = sorted(differing, key=lambda r: (-(r.max_ulps or 0), -r.differing_elements))[:5]
    elements = sum(math.prod(r.shape or []) for r in tensors)
    return {
        "device": report.device,
        "verdict": report.verdict.value,
        "seconds": round(seconds, 3),
        "tensors": len(tensors),
        "elements": elements,
        "exact": report.counts.exact,
        "within_tolerance": report.counts.within_tolerance,
        "mismatch": report.counts.mismatch,
        "tensors_differing": len(differing),
        "elements_differing": sum(r.differing_elements for r in differing),
        "max_ulps": max((r.max_ulps or 0 for r in differing), default=0),
        "worst": [{"name": r.name, "ulps": r.max_ulps, "elements": r.differing_elements} for r in worst],
        "non_tensor_rows": [{"name": r.name, "status": r.status.value} for r in report.tensors if r.dtype is None],
        "notes": report.notes,
    }


def _replays(recipe_text: str, candidate: Path, devices: list[str]) -> list[dict[str, Any]]:
    import torch

    from attest.merge import parse_recipe
    from attest.replay import replay

    recipe = parse_recipe(recipe_text)
    parents = {ref: ref for ref in recipe.referenced_models()}
    rows = []
    for device in devices:
        if device == "cuda":
            torch.zeros(1, device="cuda")
            torch.cuda.synchronize()
        t = time.perf_counter()
        report = replay(recipe, parents, candidate, device=device)
        rows.append(_summary(report, time.perf_counter() - t))
    return rows


def run(root: Path, experts: list[int], scale_dir: Path) -> dict[str, Any]:
    import torch

    root = root.resolve()
    devices = ["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"]
    manifest = json.loads((root / "manifest.json").read_text())
    result: dict[str, Any] = {
        "machine": {
            **_versions(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "cpus": os.cpu_count(),
        },
        "merges_made_with": manifest["made_with"],
        "mergekit_merges": [],
    }
    for m in manifest["merges"]:
        text = m["recipe"].replace(ROOT_MARK, str(root))
        rows = _replays(text, root / "merges" / f"{m['arch']}-{m['method']}", devices)
        result["mergekit_merges"].append({"arch": m["arch"], "method": m["method"], "replays": rows})
        for r in rows:
            _print_row(f"{m['arch']:12} {m['method']:7}", r)
    if "cuda" in devices:
        result["cuda_sort_ties"] = _cuda_sort_ties()
    first = next(m for m in manifest["merges"] if m["method"] == "ties")
    result["cli"] = _cli(root, first, scale_dir, devices[-1])
    result["moe397b"] = [_scale(e, scale_dir, devices) for e in experts]
    return result


def _cuda_sort_ties() -> list[dict[str, Any]]:
    """Which equal magnitudes torch's default sort keeps at a TIES cutoff (density 0.5) on CUDA, against the CPU's
    sort (mergekit's order on the CPU) and the lower-index-first order (attest's `stable`): differing mask elements."""
    import torch

    rows = []
    for n in (1000, 4096, 65_536, 1 << 20, 1 << 22):
        x = (torch.randn(n, generator=torch.Generator().manual_seed(n)) * 0.01).to(torch.bfloat16)
        k = n // 2
        masks = {}
        for name, dev, stable in (("cpu", "cpu", False), ("cuda", "cuda", False), ("stable", "cpu", True)):
            order = torch.sort(x.to(dev).abs().float(), descending=True, stable=stable).indices[:k].cpu()
            masks[name] = torch.zeros(n, dtype=torch.bool)
            masks[name][order] = True
        row: dict[str, Any] = {"n": n}
        for a, b in (("cuda", "cpu"), ("cuda", "stable"), ("cpu", "stable")):
            row[f"{a}_vs_{b}"] = int((masks[a] != masks[b]).sum())
        rows.append(row)
        print(f"ties at a bf16 cutoff, n={n}: {row}", flush=True)
    return rows


def _cli(root: Path, merge: dict[str, str], scale_dir: Path, device: str) -> dict[str, Any]:
    """`attest replay --device D --json` on one merge: the command a user runs, exit code and verdict."""
    scale_dir.mkdir(parents=True, exist_ok=True)
    recipe = scale_dir / f"{merge['arch']}-{merge['method']}.yml"
    recipe.write_text(merge["recipe"].replace(ROOT_MARK, str(root)))
    candidate = root / "merges" / f"{merge['arch']}-{merge['method']}"
    entry = "import sys; from attest.cli import main; sys.argv[0] = 'attest'; main()"
    argv = [sys.executable, "-c", entry, "replay", str(recipe), str(candidate), "--device", device, "--json"]
    t = time.perf_counter()
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t
    try:
        verdict = json.loads(done.stdout)["verdict"]
    except (ValueError, KeyError):
        verdict = None
    print(f"cli: attest replay --device {device}: exit {done.returncode}, {verdict}, {seconds:.2f} s", flush=True)
    return {
        "argv": ["attest", *argv[3:]],
        "exit": done.returncode,
        "verdict": verdict,
        "seconds": round(seconds, 2),
        "stderr": done.stderr[-2000:],
    }


def _scale(experts: int, scale_dir: Path, devices: list[str]) -> dict[str, Any]:
    """The 397B-shaped parents, each recipe of SCALE_RECIPES merged by attest on the CPU and replayed per device."""
    from moe397b import generate

    from attest.merge import parse_recipe, run_merge

    t = time.perf_counter()
    a, b, count = generate(scale_dir / f"e{experts}", experts)
    made = time.perf_counter() - t
    result: dict[str, Any] = {"experts": experts, "parent_tensors": count, "generate_s": round(made, 2)}
    for method, template in SCALE_RECIPES.items():
        text = template.format(a=a, b=b)
        out = scale_dir / f"e{experts}" / f"merged-{method}"
        t = time.perf_counter()
        if not (out / "config.json").is_file():
            recipe = parse_recipe(text)
            run_merge(recipe, {ref: ref for ref in recipe.referenced_models()}, out)
        merged = time.perf_counter() - t
        rows = _replays(text, out, devices)
        for r in rows:
            _print_row(f"moe397b e{experts} {method:7}", r)
        result[method] = {"merge_cpu_s": round(merged, 2), "replays": rows}
    return result


def _print_row(label: str, r: dict[str, Any]) -> None:
    print(
        f"{label} {r['device']:5} {r['verdict']:28} {r['seconds']:7.2f} s  tensors {r['tensors']} "
        f"differing {r['tensors_differing']} elements {r['elements_differing']} max {r['max_ulps']} ulp",
        flush=True,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("action", choices=["prepare", "run"])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--experts", type=int, nargs="*", default=[50], help="routed experts per layer, 397B-shaped runs")
    ap.add_argument("--scale-dir", type=Path, default=Path("/tmp/attest-gpu-moe"))
    ap.add_argument("--json", type=Path, help="write the results here")
    args = ap.parse_args()
    if args.action == "prepare":
        prepare(args.dir)
        return
    result = run(args.dir, args.experts, args.scale_dir)
    text = json.dumps(result, indent=1)
    if args.json:
        args.json.write_text(text)
    else:
        print(text)


if __name__ == "__main__":
    main()
