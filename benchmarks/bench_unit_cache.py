"""The unit cache (SPEC §9) on the 397B-shaped checkpoint: `attest replay --ray local` and `attest detect --ray local`
with an empty cache (cold), again (warm: every unit from the cache), and with --no-cache (the baseline), each in a
fresh process, with wall time; the JSON outputs are checked equal.

Run: `python benchmarks/bench_unit_cache.py --dir /tmp/attest-moe/e50` (a folder written by bench_moe_scale.py:
parent_a, parent_b, attest_merge, linear.yml).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _run(args: list[str], cache: Path) -> tuple[float, str, str]:
    env = {**os.environ, "ATTEST_CACHE_DIR": str(cache), "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled"}
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "attest", *args], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode not in (0, 1):
        raise SystemExit(f"{args[0]} failed ({proc.returncode}): {proc.stderr[-2000:]}")
    return wall, proc.stdout, proc.stderr


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir", type=Path, default=Path("/tmp/attest-moe/e50"))
    a = ap.parse_args()
    d = a.dir
    n = sum(
        len(json.loads(p.read_bytes()[8 : 8 + int.from_bytes(p.read_bytes()[:8], "little")])) - 1
        for p in (d / "attest_merge").glob("*.safetensors")
    )
    commands = {
        "replay": ["replay", str(d / "linear.yml"), str(d / "attest_merge"), "--json", "--ray", "local"],
        "detect": [
            "detect",
            str(d / "attest_merge"),
            "--candidate",
            str(d / "parent_a"),
            "--candidate",
            str(d / "parent_b"),
            "--json",
            "--ray",
            "local",
        ],
    }
    print(f"{d}: {n} tensors in the merge; load before {os.getloadavg()[0]:.2f}")
    for name, args in commands.items():
        cache = Path(tempfile.mkdtemp(prefix="attest-unit-cache-"))
        try:
            base_t, base_out, _ = _run([*args, "--no-cache"], cache)
            cold_t, cold_out, _ = _run(args, cache)
            warm_t, warm_out, warm_err = _run(args, cache)
        finally:
            shutil.rmtree(cache, ignore_errors=True)
        assert json.loads(cold_out) == json.loads(base_out) == json.loads(warm_out), f"{name}: outputs differ"
        note = next((line for line in warm_err.splitlines() if "unit cache" in line), "(no cache note)")
        print(
            f"{name:7s} --no-cache {base_t:7.2f} s  cold {cold_t:7.2f} s ({cold_t / base_t:.2f}x)  "
            f"warm {warm_t:7.2f} s ({warm_t / base_t:.2f}x)  [{note}]"
        )
    print(f"load after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
