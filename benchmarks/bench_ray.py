"""attest on Ray: 1 vs 2 workers, Ray's per-task overhead, and per-node disk bandwidth for the 800 GB projection.

On one generated checkpoint with the 397B release's tensor names and layout (benchmarks/moe397b.py, experts cut to
--experts so the tensor count is ~10^4), in one run:

* hash: today's single-process path (the baseline), the same work as units in this process (InProcess), and on a
  local Ray cluster of 1 and of 2 worker CPUs; roots checked equal every time;
* detect (parent A against parent B): single process, and Ray with 1 and 2 worker CPUs; reports checked equal;
* Ray's per-task overhead: no-op units (N tasks) on the 2-CPU cluster, and the hash run's extra time per task over
  InProcess;
* disk read bandwidth of the folder's device with O_DIRECT (the page cache neither helps nor is disturbed).

* with --baseline-repo PATH: the single-process hash of this tree against the attest in PATH (e.g. the main checkout
  before this work), each in fresh interpreters, interleaved, best of --rounds: the path without --ray must not slow.

Run: `python benchmarks/bench_ray.py [--experts 48] [--tasks 2000] [--baseline-repo ../main]`; prints a JSON summary
(BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import moe397b

from attest.cluster import RayExecutor
from attest.executor import InProcess, WorkUnit
from attest.identity import hash_model


def noop(x: int) -> int:
    return x


class Counting(InProcess):
    """InProcess that counts the units it runs."""

    units = 0

    def map(self, label: str, fn: Any, units: Any, on_done: Any = None) -> Any:
        self.units += len(units)
        return super().map(label, fn, units, on_done)


def timed(fn: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def direct_read_bandwidth(files: list[Path], limit: int = 1 << 30) -> tuple[float, int]:
    """(GB/s, bytes) reading the files with O_DIRECT in 8 MiB blocks (up to `limit` bytes)."""
    block = 8 << 20
    buf = mmap.mmap(-1, block)  # page-aligned, as O_DIRECT needs
    done, t0 = 0, time.perf_counter()
    for shard in files:
        fd = os.open(shard, os.O_RDONLY | os.O_DIRECT)
        try:
            while done < limit:
                n = os.readv(fd, [buf])
                done += n
                if n < block:
                    break
        finally:
            os.close(fd)
        if done >= limit:
            break
    return done / (time.perf_counter() - t0) / 1e9, done


HASH_ONCE = (
    "import sys, time; from attest.identity import hash_model; t = time.perf_counter(); hash_model(sys.argv[1]); "
    "print(time.perf_counter() - t)"
)


def single_process_ab(folder: Path, baseline: Path, rounds: int) -> dict[str, float]:
    """Best-of-rounds seconds of hash_model(folder) with this tree's attest and with the baseline's."""
    here = Path(__file__).resolve().parent.parent
    best = {"this": float("inf"), "baseline": float("inf")}
    for _ in range(rounds):
        for label, repo in (("this", here), ("baseline", baseline)):
            env = {**os.environ, "PYTHONPATH": str(repo)}
            run = subprocess.run(
                [sys.executable, "-c", HASH_ONCE, str(folder)], env=env, capture_output=True, text=True
            )
            best[label] = min(best[label], float(run.stdout.strip()))
    return {"hash_single_this_s": best["this"], "hash_single_baseline_s": best["baseline"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--experts", type=int, default=48)
    ap.add_argument("--tasks", type=int, default=2000)
    ap.add_argument("--root", type=Path, default=Path("/tmp/attest-bench-ray"))
    ap.add_argument("--baseline-repo", type=Path)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only-ab", action="store_true", help="only the --baseline-repo comparison (and the disk probe)")
    ap.add_argument("--disk-probe", type=Path, nargs="*", help="files to read with O_DIRECT (default: the shards)")
    args = ap.parse_args()
    root = args.root / f"e{args.experts}"
    a, b, n_tensors = moe397b.generate(root, args.experts)
    nbytes = sum(p.stat().st_size for p in a.glob("*.safetensors"))
    out: dict[str, Any] = {"tensors": n_tensors, "bytes": nbytes, "shards": len(list(a.glob("*.safetensors")))}
    out["load_before"] = os.getloadavg()

    hash_model(a)  # warm the page cache and imports
    if args.baseline_repo is not None:
        out |= single_process_ab(a, args.baseline_repo.resolve(), args.rounds)
        out["single_this_vs_baseline"] = out["hash_single_this_s"] / out["hash_single_baseline_s"]
        if args.only_ab:
            out["disk_direct_GBps"], out["disk_probe_bytes"] = direct_read_bandwidth(args.disk_probe or [])
            print(json.dumps(out, indent=1))
            return
    out["hash_single_s"], ref = timed(lambda: hash_model(a))
    counting = Counting()
    out["hash_inprocess_units_s"], m = timed(lambda: hash_model(a, executor=counting))
    assert m == ref
    out["hash_units"] = counting.units

    from attest.forensics import detect  # torch

    out["detect_single_s"], dref = timed(lambda: detect(a, [b]))
    import ray

    for cpus in (1, 2):
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, configure_logging=False)
        with RayExecutor("auto") as ex:
            hash_model(a, executor=ex)  # start the workers
            out[f"hash_ray{cpus}_s"], m = timed(lambda ex=ex: hash_model(a, executor=ex))
            assert m == ref
            out[f"detect_ray{cpus}_s"], d = timed(lambda ex=ex: detect(a, [b], executor=ex))
            assert d == dref
            if cpus == 2:
                units = [WorkUnit(i, (), 0, 0, 0) for i in range(args.tasks)]
                ex.map("noop", noop, units)
                t, _ = timed(lambda ex=ex, units=units: ex.map("noop", noop, units))
                out["noop_task_ms"] = 1000 * t / args.tasks
        ray.shutdown()
    out["ray_overhead_per_hash_task_ms"] = (
        1000 * (out["hash_ray1_s"] - out["hash_inprocess_units_s"]) / out["hash_units"]
    )
    out["hash_ratio_2_vs_1"] = out["hash_ray1_s"] / out["hash_ray2_s"]
    out["detect_ratio_2_vs_1"] = out["detect_ray1_s"] / out["detect_ray2_s"]
    out["hash_ray2_vs_single"] = out["hash_single_s"] / out["hash_ray2_s"]
    out["detect_ray2_vs_single"] = out["detect_single_s"] / out["detect_ray2_s"]
    out["hash_single_GBps"] = nbytes / out["hash_single_s"] / 1e9
    probe = args.disk_probe or sorted([*a.glob("*.safetensors"), *b.glob("*.safetensors")])
    out["disk_direct_GBps"], out["disk_probe_bytes"] = direct_read_bandwidth(probe)
    out["load_after"] = os.getloadavg()
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
