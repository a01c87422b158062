"""`attest --help` start-up time: the lazy command table against what the CLI imported before (every command
module), and against a bare interpreter, in the same run. Each measurement is a fresh process; wall-clock times,
interleaved rounds, median and best; peak RSS (ru_maxrss of the child).

    python benchmarks/bench_cli_startup.py [--rounds 30]
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
EAGER = (
    "import attest.identity, attest.cli.identity, attest.cli.verify, attest.cli.merge, attest.cli.model_signing, "
    "attest.cli.record, attest.cli.detect, attest.cli.publish"
)
CASES = {
    "python -c pass (interpreter floor)": [sys.executable, "-c", "pass"],
    "attest --help (lazy, this code)": [sys.executable, "-m", "attest", "--help"],
    "import every command module (the eager CLI before)": [sys.executable, "-c", EAGER],
}


def _run(cmd: list[str]) -> tuple[float, int]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t0 = time.perf_counter()
    with subprocess.Popen(cmd, stdout=subprocess.DEVNULL, env=env) as p:
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
    elapsed = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{cmd} exited {p.returncode}")
    return elapsed, usage.ru_maxrss // 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=30)
    rounds = ap.parse_args().rounds
    times: dict[str, list[float]] = {k: [] for k in CASES}
    rss: dict[str, int] = {}
    for cmd in CASES.values():  # warm the page cache and .pyc files
        _run(cmd)
    for _ in range(rounds):
        for name, cmd in CASES.items():
            t, r = _run(cmd)
            times[name].append(t)
            rss[name] = max(rss.get(name, 0), r)
    floor = statistics.median(times["python -c pass (interpreter floor)"])
    print(f"load average {os.getloadavg()[0]:.2f}; {rounds} rounds; {resource.getpagesize()} B pages")
    print("| command | median s | best s | median − floor s | peak RSS |")
    print("| --- | --- | --- | --- | --- |")
    for name, ts in times.items():
        med = statistics.median(ts)
        print(f"| {name} | {med:.3f} | {min(ts):.3f} | {med - floor:.3f} | {rss[name]} MB |")
    lazy = statistics.median(times["attest --help (lazy, this code)"])
    eager = statistics.median(times["import every command module (the eager CLI before)"])
    print(f"eager / lazy: {eager / lazy:.1f}x")


if __name__ == "__main__":
    main()
