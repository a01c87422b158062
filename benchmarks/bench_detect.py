"""`attest detect` against plain hashing of the same bytes: wall time, throughput and peak RSS.

Generates a bf16 base, two fine-tune-like candidates (base + small noise) and a 4/7 : 3/7 linear merge of them,
each a single safetensors file of about --size-mb, in --dir (reused by later runs of the same size). Then, each in
its own subprocess so that peak RSS is per run, with the page cache warm:

  hash     attest.hash_model over the four folders, one after the other (sha256)
  detect   attest.forensics.detect(merge, [cand_a, cand_b], base): the whole forensic pass over the same bytes,
           timed as the first call in its process (loading the compiled sweeps included) and again warm

`--no-base` drops the base: detect fits the merge on the two candidates alone and hashing covers those three folders
(the configuration of issue #13's measurement). `--cold` evicts the files from the page cache (posix_fadvise
DONTNEED: clean pages, no privileges needed) before every timed call, so both read from the disk: detect should then
be I/O-bound, as hashing is.

`--cli` times whole commands instead (what a user waits for): one `attest detect` process against one `attest hash
--no-cache` process per folder over the same bytes, interleaved round by round. `--baseline TREE` adds another
checkout (e.g. `git worktree add /tmp/base main`) to the same rounds, run with PYTHONPATH=TREE: on a machine whose
speed drifts, only a change measured against its baseline in the same rounds means anything.

Usage: python benchmarks/bench_detect.py [--size-mb 256] [--repeat 2] [--dir /tmp/attest-bench-detect] [--cold]
       [--no-base] [--cli [--baseline TREE]]
Memory bound to compare with: largest tensor x the inputs (mapped pages) plus float64 chunk buffers.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

MB = 1_000_000
HIDDEN = 1024


def _build(root: Path, size_mb: int) -> dict[str, Path]:
    """Write base, cand_a, cand_b and merge (bf16) unless already there."""
    import torch
    from safetensors.torch import save_file

    names = ["base", "cand_a", "cand_b", "merge"]
    folders = {n: root / f"{n}-{size_mb}mb" for n in names}
    if all((f / "model.safetensors").is_file() for f in folders.values()):
        return folders
    rows = max(1, (size_mb * MB) // (HIDDEN * 2) // 8)  # 8 tensors of equal size
    g = torch.Generator().manual_seed(0)
    tensors: dict[str, dict[str, torch.Tensor]] = {n: {} for n in names}
    for i in range(8):
        name = f"model.layers.{i // 2}.mlp.proj{i % 2}.weight"
        b = (torch.randn(rows, HIDDEN, generator=g) * 0.02).to(torch.bfloat16)
        a = (b.float() + torch.randn(rows, HIDDEN, generator=g) * 2e-3).to(torch.bfloat16)
        c = (b.float() + torch.randn(rows, HIDDEN, generator=g) * 2e-3).to(torch.bfloat16)
        m = ((a.float() * 1.0 + c.float() * 0.75) / 1.75).to(torch.bfloat16)
        for n, t in zip(names, (b, a, c, m), strict=True):
            tensors[n][name] = t
    for n, f in folders.items():
        f.mkdir(parents=True, exist_ok=True)
        save_file(tensors[n], f / "model.safetensors")
    return folders


def _evict(folders: dict[str, str]) -> None:
    """Drop the models' pages from the page cache (clean file pages: the next read comes from the disk)."""
    for f in folders.values():
        fd = os.open(Path(f) / "model.safetensors", os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _child(kind: str, folders: dict[str, str], cold: bool) -> None:
    """Run one measurement in this process and print a JSON line."""
    from attest import hash_model
    from attest.forensics import detect

    start_mb = _status_mb("VmRSS")
    if cold:
        _evict(folders)
    if kind == "hash":
        t0 = time.perf_counter()
        for f in folders.values():
            hash_model(f, "sha256")
        wall = time.perf_counter() - t0
        extra: dict[str, object] = {}
    else:
        args = (folders["merge"], [folders["cand_a"], folders["cand_b"]], folders.get("base"))
        t0 = time.perf_counter()
        report = detect(*args)
        wall = time.perf_counter() - t0
        if cold:
            _evict(folders)
        t0 = time.perf_counter()
        detect(*args)  # again in the same process: the compiled sweeps are loaded (once per process, ~0.5 s)
        warm = time.perf_counter() - t0
        extra = {"verdict": report.verdict, "coefficient": report.coefficients[0].value, "warm_wall_s": warm}
    nbytes = sum((Path(f) / "model.safetensors").stat().st_size for f in folders.values())
    rss_mb = _status_mb("VmHWM")  # not ru_maxrss: Linux carries that across execve from the parent
    row = {"kind": kind, "wall_s": wall, "bytes": nbytes, "peak_rss_mb": rss_mb, "start_rss_mb": start_mb, **extra}
    print(json.dumps(row))


def _status_mb(field: str) -> float:
    """VmRSS (now: after imports, the interpreter's own share) or VmHWM (peak of this process image)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size-mb", type=int, default=256, help="bytes of each of the four models")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/attest-bench-detect"))
    ap.add_argument("--cold", action="store_true", help="read every timed call's bytes from the disk")
    ap.add_argument("--no-base", action="store_true", help="the merge against its two candidates, without the base")
    ap.add_argument(
        "--cli", action="store_true", help="whole commands: `attest detect` against `attest hash --no-cache` per folder"
    )
    ap.add_argument(
        "--baseline",
        type=Path,
        help="with --cli: another checkout (a git worktree of main) timed the same way in the same rounds",
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--folders", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child, json.loads(args.folders), args.cold)
        return
    folders = {k: str(v) for k, v in _build(args.dir, args.size_mb).items() if not (args.no_base and k == "base")}
    for f in folders.values():  # warm the page cache
        with open(Path(f) / "model.safetensors", "rb") as fh:
            while fh.read(64 << 20):
                pass
    largest = (args.size_mb * MB) // 8
    print(
        f"{len(folders)} models x {args.size_mb} MB, largest tensor {largest / MB:.0f} MB; "
        f"bound ~{len(folders) * largest / MB:.0f} MB; "
        f"page cache {'cold' if args.cold else 'warm'}"
    )
    if args.cli:
        _whole_commands(folders, args.repeat, args.cold, args.baseline)
        return
    best: dict[str, dict[str, object]] = {}
    for kind in ("hash", "detect"):
        for _ in range(args.repeat):
            out = subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    kind,
                    "--folders",
                    json.dumps(folders),
                    *(["--cold"] if args.cold else []),
                ],
                check=True,
                capture_output=True,
                text=True,
                env={**os.environ, "PYTHONWARNINGS": "ignore"},
            )
            row = json.loads(out.stdout.strip().splitlines()[-1])
            if kind not in best or float(row["wall_s"]) < float(best[kind]["wall_s"]):  # type: ignore[arg-type]
                best[kind] = row
    for kind, row in best.items():
        gbps = float(row["bytes"]) / float(row["wall_s"]) / 1e9  # type: ignore[arg-type]
        extra = {k: v for k, v in row.items() if k in ("verdict", "coefficient", "warm_wall_s")}
        print(
            f"{kind:7s} {row['wall_s']:7.2f} s  {gbps:6.2f} GB/s  peak RSS {row['peak_rss_mb']:7.0f} MB "
            f"(after imports {row['start_rss_mb']:.0f} MB)  "
            f"{extra if extra else ''}"
        )
    hash_s = float(best["hash"]["wall_s"])  # type: ignore[arg-type]
    first, warm = float(best["detect"]["wall_s"]), float(best["detect"]["warm_wall_s"])  # type: ignore[arg-type]
    print(f"detect / hash wall time: {first / hash_s:.2f}x (first detect in its process), {warm / hash_s:.2f}x (warm)")


def _whole_commands(folders: dict[str, str], repeat: int, cold: bool, baseline: Path | None) -> None:
    """What a user runs: one `attest detect` process against one `attest hash --no-cache` process per folder (the
    same bytes), interleaved, each timed from start to exit (interpreter, imports and numba's start-up included).
    `baseline`: another checkout (say a `git worktree` of main) run the same way in the same rounds, with this
    interpreter from that tree's root, so that a change is measured against the code before it on the same machine
    at the same time (`python -m attest`: each tree's own entry point)."""
    given = [f for k, f in folders.items() if k not in ("merge", "base")]
    detect_args = ["detect", folders["merge"], *(a for f in given for a in ("--candidate", f))]
    if "base" in folders:
        detect_args += ["--base", folders["base"]]
    # `python -m attest` run from the tree's root imports that tree's package (the current directory comes first)
    trees = {"this tree": Path(__file__).resolve().parents[1]}
    if baseline is not None:
        trees = {"baseline": baseline.resolve(), **trees}
    envs = {name: {**os.environ, "PYTHONPATH": str(root)} for name, root in trees.items()}

    def run(tree: str, args: list[str]) -> None:
        cmd = [sys.executable, "-m", "attest", *args]
        subprocess.run(cmd, check=True, capture_output=True, env=envs[tree], cwd=trees[tree])

    if baseline is not None:
        for tree in trees:  # compile (or load) each tree's cached sweeps outside the timing
            run(tree, detect_args)
    times: dict[tuple[str, str], list[float]] = {(t, k): [] for t in trees for k in ("hash", "detect")}
    for _ in range(repeat):
        for tree in trees:
            cmds = {"hash": [["hash", "--no-cache", f] for f in folders.values()], "detect": [detect_args]}
            for kind, runs in cmds.items():
                if cold:
                    _evict(folders)
                t0 = time.perf_counter()
                for cmd in runs:
                    run(tree, cmd)
                times[(tree, kind)].append(time.perf_counter() - t0)
    for tree in trees:
        hashes, detects = times[(tree, "hash")], times[(tree, "detect")]
        for kind, ts in (("hash", hashes), ("detect", detects)):
            print(
                f"{tree:9s} {kind:7s} whole commands: best {min(ts):.2f} s, median {statistics.median(ts):.2f} s, "
                f"all {', '.join(f'{t:.2f}' for t in ts)}"
            )
        ratios = [d / h for d, h in zip(detects, hashes, strict=True)]
        print(
            f"{tree:9s} detect / hash, whole commands: best {min(detects) / min(hashes):.2f}x, median of rounds "
            f"{statistics.median(ratios):.2f}x, per round {', '.join(f'{r:.2f}x' for r in ratios)}"
        )


if __name__ == "__main__":
    main()
