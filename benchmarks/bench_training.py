"""Verifiable training: `attest train` (the baseline) against `attest verify --replay-training N` for N = 1, 2, all.

Builds a tiny Qwen2 (bf16, random init; --hidden, --layers) and a JSON-lines token file, then, each in its own
subprocess so that peak RSS is per run:

  train     attest.record.training: S segments of K steps, checkpoints (weights + optimizer + RNG) every K steps
  verify-N  attest.policy.verify_with_policy with replay_training=N: chain checks (every checkpoint and batch re-hashed)
            plus N segments re-executed and compared bit for bit

Expected: verify time ~ N/S of the training time plus hashing of all checkpoints.
Usage: python benchmarks/bench_training.py [--segments 4] [--every 4] [--hidden 256] [--layers 4] [--dir DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _build(root: Path, hidden: int, layers: int, records: int) -> tuple[Path, Path, Path]:
    sys.path.insert(0, str(REPO))
    import torch
    from transformers import AutoModelForCausalLM

    from attest.signing.keys import generate_private_key, write_key_pair
    from tests.support.builders import tiny_config, token_batches

    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(tiny_config("qwen2", hidden, layers)).to(torch.bfloat16)
    model.save_pretrained(root / "base", safe_serialization=True)
    data = root / "data.jsonl"
    with data.open("w") as fh:
        for batch in token_batches(5, records // 4, batch=4, seq=64):
            for row in batch.tolist():
                fh.write(json.dumps({"input_ids": row}) + "\n")
    write_key_pair(root / "k.key", generate_private_key())
    policy = root / "policy.yaml"
    from attest.identity import hash_model

    digest = hash_model(root / "base").model_root
    policy.write_text(
        f"version: 1\nkeys: [{{name: p, public_key: {root / 'k.key.pub'}}}]\n"
        f"trusted_roots: [{{name: base, digest: {digest}}}]\n"
    )
    return root / "base", data, policy


def _child(kind: str, cfg: dict[str, object]) -> None:
    sys.path.insert(0, str(REPO))
    root = Path(str(cfg["root"]))
    import transformers  # imports are a fixed cost of either side: leave them out of the timing
    from transformers import AutoModelForCausalLM  # noqa: F401

    transformers.utils.logging.disable_progress_bar()
    start_mb = _status_mb("VmRSS")
    t0 = time.perf_counter()
    if kind == "train":
        from attest.record.recorder import Signing
        from attest.record.training import TrainJob, train
        from attest.signing.keys import load_private_key

        steps = int(str(cfg["segments"])) * int(str(cfg["every"]))
        job = TrainJob(
            "causal_lm", root / "base", root / "data.jsonl", root / "out", root / "ckpt", steps, 8, 1e-3, 1,
            int(str(cfg["every"])),
        )  # fmt: skip
        train(job, Signing([load_private_key(root / "k.key")]))
        extra: dict[str, object] = {}
    else:
        from attest.policy import verify_with_policy
        from attest.trust.trust_set import build_trust
        from attest.verify.engine import VerifyOptions

        n = int(kind.split("-")[1])
        options = VerifyOptions(
            replay_training=n, checkpoints_dirs=(root / "ckpt",), training_data=(root / "data.jsonl",)
        )
        report = verify_with_policy(root / "out", build_trust(root / "policy.yaml"), options).report
        extra = {"verified": report.verified}
    wall = time.perf_counter() - t0
    print(json.dumps({"kind": kind, "wall_s": wall, "peak_rss_mb": _status_mb("VmHWM"), "start_mb": start_mb, **extra}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--segments", type=int, default=4)
    ap.add_argument("--every", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--dir", type=Path, default=Path("/tmp/attest-bench-training"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--cfg", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(args.child, json.loads(args.cfg))
        return
    _build(args.dir, args.hidden, args.layers, records=8 * args.segments * args.every)
    cfg = json.dumps({"root": str(args.dir), "segments": args.segments, "every": args.every})
    params = (args.dir / "base" / "model.safetensors").stat().st_size // 2
    shape = f"{args.segments} segments x {args.every} steps, batch 8 x 64 tokens"
    print(f"qwen2 hidden {args.hidden}, {args.layers} layers (~{params / 1e6:.1f}M params), {shape}")
    print(f"load before: {os.getloadavg()[0]:.2f}")
    rows = {}
    for kind in ("train", "verify-1", "verify-2", f"verify-{args.segments}"):
        out = subprocess.run(
            [sys.executable, __file__, "--child", kind, "--cfg", cfg], check=True, capture_output=True, text=True
        )
        rows[kind] = json.loads(out.stdout.strip().splitlines()[-1])
    base = float(rows["train"]["wall_s"])
    for kind, row in rows.items():
        print(
            f"{kind:9s} {row['wall_s']:7.2f} s  {float(row['wall_s']) / base:5.2f}x train  "
            f"peak RSS {row['peak_rss_mb']:6.0f} MB (after imports {row['start_mb']:.0f} MB)  "
            f"{'' if 'verified' not in row else 'verified' if row['verified'] else 'NOT VERIFIED'}"
        )
    print(f"load after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
