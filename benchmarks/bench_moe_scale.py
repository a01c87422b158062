"""hash / verify / merge / replay / detect on a Qwen3.5-397B-A17B-shaped checkpoint, from 10^3 to 10^5 tensors.

The checkpoint (benchmarks/moe397b.py) has the release's names, layer pattern and sharding with every size divided by
32; the tensor count is set by the routed experts per layer (2, 50, 512: about 1.3k, 9.4k and 93k tensors). For each
scale, each measurement runs in its own interpreter (peak RSS = that child's VmHWM; time = the call only, imports
excluded) on a warm page cache, next to the baselines of the same run:

  sha256sum   coreutils sha256sum of parent A's shard bytes (one process, one core)
  hash        attest.hash_model(A, "sha256")
  verify      attest verify A (a signed `convert` statement, its parent an allow-listed tiny root)
  merge       attest merge of linear A 1.0 : B 0.75 (bf16), mergekit's fused layout  vs  mergekit-yaml of the recipe
  replay      attest replay of that recipe against attest's output
  detect      attest detect of attest's output against A and B

Per-tensor overhead = (seconds - sha256sum seconds of the bytes the step reads) / tensors: what the step costs beyond
hashing its input once. Between scales, the marginal wall/CPU per added tensor (bytes included: an upper bound on
the per-tensor overhead that fixed costs cannot hide) and the peak-RSS growth per added tensor are printed. The
load average is printed with every row: the machine may be shared. merge and replay also report the peak RSS when
their first tensor is computed (rss_at_compute_mb: parents opened and planned), apart from the largest tensor's
working memory, which grows with the expert count here (a layer's fused experts are one tensor).

With --baseline-repo DIR (a checkout or `git archive` of main: DIR/attest is its package), each step also runs with
that package, just before this checkout's, in the same run and on the same files (rows `step@base`): an A/B of time
and peak RSS under the same load.

Generated checkpoints are kept under --dir and reused by later runs (delete a scale's folder to regenerate it).

Usage: python benchmarks/bench_moe_scale.py [--experts 2 50 512] [--dir /tmp/attest-moe] [--mergekit-max 50]
       [--steps hash verify merge replay detect] [--baseline-repo /tmp/attest-main]
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

RECIPE = (
    "merge_method: linear\ndtype: bfloat16\nmodels:\n  - model: {a}\n    parameters: {{weight: 1.0}}\n"
    "  - model: {b}\n    parameters: {{weight: 0.75}}\n"
)
STEPS = ["hash", "verify", "merge", "replay", "detect"]


def peak_rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _child(step: str, root: Path) -> dict[str, object]:
    a, b, merged = root / "parent_a", root / "parent_b", root / "attest_merge"
    if step == "generate":
        import moe397b

        experts = int(root.name.lstrip("e"))
        _, _, n = moe397b.generate(root, experts)
        (root / "linear.yml").write_text(RECIPE.format(a=a, b=b))
        _prepare_verify(root, a)
        return {"tensors": n}
    recipe_text = (root / "linear.yml").read_text()
    extra: dict[str, object] = {}
    if step in ("merge", "replay"):
        _note_rss_at_compute(extra)
    t0, c0 = time.perf_counter(), _cpu()
    if step == "hash":
        from attest.identity import hash_model

        manifest = hash_model(a, "sha256")
        extra["manifest_bytes_per_tensor"] = _entry_bytes(manifest.tensors)
    elif step == "verify":
        from attest.policy import verify_model
        from attest.verify import build_trust

        report = verify_model(a, build_trust(root / "policy.yaml", (root / "bench.key.pub",)))
        assert report.verified, report.problems
    elif step == "merge":
        from attest.merge import parse_recipe, run_merge

        out = root / os.environ.get("BENCH_MERGE_OUT", "attest_merge")
        run_merge(parse_recipe(recipe_text), {str(a): a, str(b): b}, out)  # mergekit's (fused) layout
    elif step == "replay":
        from attest.merge import parse_recipe
        from attest.replay import replay

        r = replay(parse_recipe(recipe_text), {str(a): a, str(b): b}, merged)
        extra["verdict"] = str(r.verdict)
    elif step == "detect":
        from attest.forensics import detect

        d = detect(merged, [a, b])
        extra.update(
            verdict=d.verdict, alpha=d.coefficients[0].value, coverage=d.coverage.fraction if d.coverage else None
        )
    else:
        raise SystemExit(f"unknown step {step}")
    return {"seconds": time.perf_counter() - t0, "cpu": _cpu() - c0, "rss_mb": peak_rss_mb(), **extra}


def _note_rss_at_compute(extra: dict[str, object]) -> None:
    """Record the peak RSS when the first tensor is about to be computed (parents opened, merge planned) in
    extra["rss_at_compute_mb"]: what the step holds per tensor, apart from the largest tensor's working memory
    (which grows with the expert count here: the fused experts of a layer are one tensor)."""
    import attest.merge.engine as merge_engine
    import attest.replay.engine as replay_engine

    real = merge_engine.compute_tensors

    def noting(*args: Any, **kwargs: Any) -> Any:
        extra.setdefault("rss_at_compute_mb", peak_rss_mb())
        return real(*args, **kwargs)

    merge_engine.compute_tensors = noting  # type: ignore[assignment]
    replay_engine.compute_tensors = noting  # type: ignore[attr-defined]


def _entry_bytes(tensors: Any) -> int:
    """Bytes one manifest tensor entry holds on its own: for columns (TensorEntries), their bytes per entry plus the
    name string; for a list of TensorEntry, sys.getsizeof of the object, its field dict and the values it does not
    share with other entries (name, shape, hex digests; dtype and file name strings are shared)."""
    entry = tensors[len(tensors) // 2]
    if hasattr(tensors, "held_bytes"):
        return tensors.held_bytes() // len(tensors) + sys.getsizeof(entry.name)
    d = vars(entry)
    own = [entry, d, d["name"], d["shape"], *d["shape"], d["nbytes"], d["data_root"], d["digest"]]
    return sum(sys.getsizeof(x) for x in own)


def _run_child(step: str, root: Path, baseline: Path | None = None) -> dict[str, object]:
    """One step in a fresh interpreter, with this checkout's attest package or (`baseline`) that checkout's; the
    baseline's merge is written beside ours (replay and detect read ours)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(baseline if baseline is not None else Path(__file__).resolve().parent.parent)
    if baseline is not None:
        env["BENCH_MERGE_OUT"] = "attest_merge_baseline"
    out = subprocess.run(
        [sys.executable, __file__, "--child", step, "--dir", str(root)],
        capture_output=True,
        text=True,
        check=False,
        env=env,
    )
    if out.returncode:
        raise SystemExit(f"{step} failed:\n{out.stderr[-3000:]}")
    result: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _timed(cmd: list[str]) -> dict[str, object]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    if status:
        raise SystemExit(f"{cmd[0]} failed: {proc.stderr.read().decode()[-3000:] if proc.stderr else ''}")
    cpu = usage.ru_utime + usage.ru_stime
    return {"seconds": time.perf_counter() - t0, "cpu": cpu, "rss_mb": usage.ru_maxrss / 1024}


def _shards(folder: Path) -> list[str]:
    return sorted(str(p) for p in folder.glob("*.safetensors"))


def _warm(*folders: Path) -> None:
    for f in folders:
        for p in f.glob("*.safetensors"):
            with open(p, "rb") as fh:
                while fh.read(1 << 24):
                    pass


def _prepare_verify(root: Path, a: Path) -> None:
    import moe397b

    from attest.identity import hash_model
    from attest.record import Signing, record_step, resolve_model
    from attest.signing import generate_key, load_private_key

    if (root / "policy.yaml").is_file():
        return
    parent = root / "tiny_parent"
    tensors, cfg = moe397b.layout(1)
    moe397b.write_model(parent, tensors[:4], cfg, 3)
    key = root / "bench.key"
    generate_key(key)
    record_step(
        "convert",
        a,
        [("parent", resolve_model(parent))],
        Signing([load_private_key(key)]),
        external={"benchmark": True},
        internal={},
        allow_unchanged=True,
    )
    (root / "policy.yaml").write_text(
        f"version: 1\ntrusted_roots:\n  - name: parent\n    digest: {hash_model(parent).model_root}\n"
    )


def scale(
    root: Path, experts: int, mergekit_max: int, steps: list[str], baseline: Path | None = None
) -> dict[str, object]:
    root.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    n = int(_run_child("generate", root)["tensors"])  # type: ignore[call-overload]
    a, b = root / "parent_a", root / "parent_b"
    nbytes = sum(Path(p).stat().st_size for p in _shards(a))
    print(
        f"# experts/layer {experts}: {n} tensors, {len(_shards(a))} shards, {nbytes / 1e6:.1f} MB per model "
        f"(generated in {time.perf_counter() - t0:.1f} s)",
        flush=True,
    )
    rows: dict[str, dict[str, object]] = {}
    merged = root / "attest_merge"
    for old in (merged, root / "attest_merge_baseline"):
        if old.exists():
            import shutil

            shutil.rmtree(old)
    _warm(a, b)
    rows["sha256sum"] = {**_timed(["sha256sum", *_shards(a)]), "load": load()}
    for step in steps:
        if baseline is not None:  # the same step with the baseline's package, just before ours
            rows[f"{step}@base"] = {**_run_child(step, root, baseline), "load": load()}
        rows[step] = {**_run_child(step, root), "load": load()}
        if step == "merge":
            _warm(merged)
    if experts <= mergekit_max and "merge" in steps:
        out = root / "mergekit_merge"
        if out.exists():
            import shutil

            shutil.rmtree(out)
        exe = str(Path(sys.executable).with_name("mergekit-yaml"))
        rows["mergekit"] = {
            **_timed([exe, str(root / "linear.yml"), str(out), "--no-copy-tokenizer", "--no-cuda", "--lazy-unpickle"]),
            "load": load(),
        }
    sha = float(rows["sha256sum"]["seconds"])  # type: ignore[arg-type]
    sha_cpu = float(rows["sha256sum"]["cpu"])  # type: ignore[arg-type]
    reads = {"hash": 1, "verify": 1, "merge": 2, "replay": 3, "detect": 3, "mergekit": 2}
    skip = ("seconds", "cpu", "rss_mb", "load", "per_tensor_ms", "per_tensor_cpu_ms")
    for step, r in rows.items():
        r_s, r_c = float(r["seconds"]), float(r["cpu"])  # type: ignore[arg-type]
        pt = " " * 44
        k = reads.get(step.split("@")[0])
        if k is not None:
            r["per_tensor_ms"] = (r_s - k * sha) / n * 1e3
            r["per_tensor_cpu_ms"] = (r_c - k * sha_cpu) / n * 1e3
            pt = f"{r['per_tensor_ms']:7.3f} ms wall {r['per_tensor_cpu_ms']:7.3f} ms cpu /tensor"
        extra = {k: v for k, v in r.items() if k not in skip}
        print(
            f"{step:10s} {r_s:8.2f} s (x{r_s / sha:6.2f})  cpu {r_c:7.2f} s (x{r_c / sha_cpu:6.2f})  {pt}  "
            f"peak RSS {float(r['rss_mb']):6.0f} MiB  load {r['load']}  {extra if extra else ''}",  # type: ignore[arg-type]
            flush=True,
        )
    return {"experts": experts, "tensors": n, "bytes": nbytes, "shards": len(_shards(a)), "rows": rows}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experts", type=int, nargs="*", default=[2, 50, 512])
    ap.add_argument("--dir", type=Path, default=Path("/tmp/attest-moe"))
    ap.add_argument("--mergekit-max", type=int, default=50, help="run mergekit only up to this many experts/layer")
    ap.add_argument("--steps", nargs="*", choices=STEPS, default=STEPS)
    ap.add_argument(
        "--baseline-repo",
        type=Path,
        help="also run each step with the attest package under this folder (e.g. `git archive main attest`), same run",
    )
    ap.add_argument("--child", choices=[*STEPS, "generate"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.dir)))
        return
    print(f"cpus: {os.cpu_count()}  python {sys.version.split()[0]}  load {load()}")
    if args.baseline_repo is not None and not (args.baseline_repo / "attest" / "__init__.py").is_file():
        raise SystemExit(f"--baseline-repo {args.baseline_repo}: no attest package there")
    results = [scale(args.dir / f"e{e}", e, args.mergekit_max, args.steps, args.baseline_repo) for e in args.experts]
    for lo, hi in itertools.pairwise(results):
        _growth(lo, hi)
    if len(results) > 2:
        _growth(results[0], results[-1])
    print(json.dumps(results))


def _growth(lo: dict[str, Any], hi: dict[str, Any]) -> None:
    """Marginal cost of the added tensors between two scales (wall and CPU per added tensor, bytes included: an upper
    bound on the per-tensor overhead that no fixed cost such as imports can hide) and peak-RSS growth."""
    dt = int(hi["tensors"]) - int(lo["tensors"])
    print(f"# from {lo['tensors']} to {hi['tensors']} tensors: marginal cost per added tensor, peak RSS growth")
    for step, row in hi["rows"].items():
        if step in lo["rows"]:
            old = lo["rows"][step]
            wall = (float(row["seconds"]) - float(old["seconds"])) / dt * 1e3
            cpu = (float(row["cpu"]) - float(old["cpu"])) / dt * 1e3
            grow = float(row["rss_mb"]) - float(old["rss_mb"])
            at_compute = ""
            if "rss_at_compute_mb" in row and "rss_at_compute_mb" in old:
                meta = float(row["rss_at_compute_mb"]) - float(old["rss_at_compute_mb"])
                at_compute = f"; before the first tensor {meta:+7.1f} MiB ({meta * 2**20 / dt:6.0f} B/added tensor)"
            print(
                f"  {step:10s} {wall:7.3f} ms wall {cpu:7.3f} ms cpu /added tensor   peak RSS {grow:+7.1f} MiB "
                f"({grow * 2**20 / dt:6.0f} B/added tensor){at_compute}"
            )


if __name__ == "__main__":
    main()
