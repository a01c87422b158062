"""`attest verify` against `attest hash` on the same folder: verification must cost little more than hashing.

Generates the single-file bf16 checkpoint of bench_hash.py (default 2 GB), records a signed `convert` statement for
it (its parent a tiny checkpoint, allow-listed as a trusted root), warms the page cache, then times, each in its own
subprocess and best of --repeat: hash_model(folder) and verify_model(folder) with the builder's key. Prints the ratio
(target <= 1.05) and each run's peak RSS.

Usage: python benchmarks/bench_verify.py [--size-gb 2] [--repeat 3] [--dir /tmp/attest-bench]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_hash import generate, peak_rss_mb, warm


def _child(kind: str, folder: Path, key_pub: Path, policy: Path) -> None:
    from attest.identity import hash_model
    from attest.policy import verify_model
    from attest.verify import build_trust

    t = time.perf_counter()
    if kind == "hash":
        hash_model(folder, "sha256")
    else:
        report = verify_model(folder, build_trust(policy, (key_pub,)))
        assert report.verified, report.problems
    print(json.dumps({"seconds": time.perf_counter() - t, "rss_mb": peak_rss_mb()}))


def _prepare(root: Path, size_gb: float) -> tuple[Path, Path, Path]:
    from attest.identity import hash_model
    from attest.record import Signing, record_step, resolve_model
    from attest.signing import generate_key, load_private_key

    model = root / f"verify-{size_gb:g}gb"
    if not (model / "model.safetensors").is_file():
        model.mkdir(parents=True, exist_ok=True)
        generate(model, size_gb)
    parent = root / "verify-parent"
    if not (parent / "model.safetensors").is_file():
        parent.mkdir(parents=True, exist_ok=True)
        generate(parent, 0.001)
    key = root / "verify-bench.key"
    if not key.is_file():
        generate_key(key)
    record_step(
        "convert",
        model,
        [("parent", resolve_model(parent))],
        Signing([load_private_key(key)]),
        external={"benchmark": True},
        internal={},
        allow_unchanged=True,
    )
    policy = root / "verify-policy.yaml"
    policy.write_text(f"version: 1\ntrusted_roots:\n  - name: parent\n    digest: {hash_model(parent).model_root}\n")
    return model, key.with_name(key.name + ".pub"), policy


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--size-gb", type=float, default=2.0)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/attest-bench"))
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        kind, folder, pub, policy = args.child
        _child(kind, Path(folder), Path(pub), Path(policy))
        return
    model, pub, policy = _prepare(args.dir, args.size_gb)
    warm(model / "model.safetensors")
    best: dict[str, dict[str, float]] = {}
    for _ in range(args.repeat):
        for kind in ("hash", "verify"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", kind, str(model), str(pub), str(policy)],
                check=True,
                capture_output=True,
                text=True,
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            if kind not in best or r["seconds"] < best[kind]["seconds"]:
                best[kind] = r
    size = (model / "model.safetensors").stat().st_size
    for kind, r in best.items():
        print(f"{kind:7s} {r['seconds']:7.3f} s  {size / r['seconds'] / 1e9:6.2f} GB/s  peak RSS {r['rss_mb']:6.0f} MB")
    print(f"verify / hash = {best['verify']['seconds'] / best['hash']['seconds']:.3f}  (target <= 1.05)")


if __name__ == "__main__":
    main()
