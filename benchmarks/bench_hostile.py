"""Hostile inputs that used to cost minutes or gigabytes, each against a baseline measured in the same run.

* tensors: a folder of 3 shards holding 262,143 zero-size tensors (one under the per-folder cap of SPEC.md 1.6)
  is hashed; baseline: parsing the same three headers with json.loads (the floor of reading them at all). The
  review's folder (3 shards x 600,000 zero-size tensors) is refused; its time and peak RSS are printed too.
* dag: `verify --json` on a model on top of a 24-level lattice of trusted statements (2 models a level, each naming
  both models below as parents: 2^24 paths); baseline: the same with 1 level. Prints the JSON size and time.

Each measurement runs in its own interpreter (peak RSS = VmHWM). Usage: python benchmarks/bench_hostile.py [--dir D]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import struct
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_hash import peak_rss_mb


def _zero_size_shard(path: Path, first: int, count: int) -> None:
    body = ",".join(
        f'"t{i:07d}":{{"dtype":"F32","shape":[0],"data_offsets":[0,0]}}' for i in range(first, first + count)
    )
    raw = ("{" + body + "}").encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw)


def _tensor_folder(root: Path, per_shard: int) -> Path:
    folder = root / f"zero-size-{per_shard}"
    if not folder.is_dir():
        folder.mkdir(parents=True)
        for i in range(3):
            _zero_size_shard(folder / f"model-{i}.safetensors", i * per_shard, per_shard)
    return folder


def _dag(root: Path, levels: int) -> tuple[Path, Path]:
    """The folder and its policy (see module docstring); every statement really signed with an Ed25519 key."""
    from attest.identity import hash_model
    from attest.lineage.store import write_bundle
    from attest.signing import generate_key, load_private_key, sign_envelope
    from attest.statements.builders import model_dependency, provenance_statement
    from attest.statements.models import Subject
    from attest.statements.parse import statement_bytes

    folder = root / f"dag-{levels}"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text("{}")
    _zero_size_shard(folder / "model.safetensors", 0, 1)
    key = root / "dag.key"
    if not key.is_file():
        generate_key(key)
    signer = load_private_key(key)

    def digest(level: int, i: int) -> str:
        return hashlib.sha256(f"dag-{level}-{i}".encode()).hexdigest()

    def statement(subject: str, below: list[str]) -> bytes:
        deps = [model_dependency(f"m-{d[:8]}", f"file:///nonexistent/{d[:8]}", d, "00" * 32, "parent") for d in below]
        return statement_bytes(
            provenance_statement(
                "finetune",
                Subject(name="m", digest={"sha256": subject}, annotations={"weights_root": "00" * 32}),
                external={},
                internal={},
                dependencies=deps,
                started_on="2026-12-02T00:00:00Z",
                finished_on="2026-12-02T00:00:01Z",
            )
        )

    top = hash_model(folder).model_root
    envs = [sign_envelope(statement(top, [digest(levels, 0), digest(levels, 1)]), [signer])]
    for level in range(1, levels + 1):
        for i in (0, 1):
            below = [digest(level - 1, 0), digest(level - 1, 1)]
            envs.append(sign_envelope(statement(digest(level, i), below), [signer]))
    write_bundle(folder, envs)
    policy = root / f"dag-{levels}.yaml"
    policy.write_text(
        f"version: 1\nkeys:\n  - name: lab\n    public_key: {key}.pub\ntrusted_roots:\n"
        + "".join(f"  - name: bottom-{i}\n    digest: sha256:{digest(0, i)}\n" for i in (0, 1))
    )
    return folder, policy


def _child(kind: str, folder: Path, policy: Path | None) -> None:
    t = time.perf_counter()
    out: dict[str, object] = {}
    if kind == "hash":
        from attest.identity import hash_model

        out["tensors"] = len(hash_model(folder).tensors)
    elif kind == "refuse":
        from attest.errors import InputError
        from attest.identity import hash_model

        try:
            hash_model(folder)
            out["refused"] = False
        except InputError as exc:
            out["refused"] = str(exc)[-80:]
    elif kind == "json":
        for f in sorted(folder.glob("*.safetensors")):
            data = f.read_bytes()
            (n,) = struct.unpack("<Q", data[:8])
            json.loads(data[8 : 8 + n])
    else:
        import contextlib
        import io

        from attest.cli.output import print_json
        from attest.policy import verify_model
        from attest.verify import build_trust

        report = verify_model(folder, build_trust(policy))
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            print_json(report)
        out["verified"], out["json_bytes"] = report.verified, len(buf.getvalue())
    print(json.dumps({"seconds": time.perf_counter() - t, "rss_mb": peak_rss_mb(), **out}))


def _run(kind: str, folder: Path, policy: Path | None = None) -> dict[str, object]:
    cmd = [sys.executable, __file__, "--child", kind, str(folder), str(policy or "")]
    done = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dir", type=Path, default=Path("/tmp/attest-bench-hostile"))
    parser.add_argument("--child", nargs=3)
    args = parser.parse_args()
    if args.child:
        kind, folder, policy = args.child
        _child(kind, Path(folder), Path(policy) if policy else None)
        return
    root: Path = args.dir
    root.mkdir(parents=True, exist_ok=True)
    at_cap = _tensor_folder(root, 87_381)  # 262,143 tensors
    review = _tensor_folder(root, 600_000)
    floor, hashed, refused = _run("json", at_cap), _run("hash", at_cap), _run("refuse", review)
    print(f"json.loads of the 3 headers at the cap: {floor['seconds']:.2f} s, peak RSS {floor['rss_mb']:.0f} MB")
    print(
        f"hash at the cap ({hashed['tensors']} tensors): {hashed['seconds']:.2f} s "
        f"({float(hashed['seconds']) / float(floor['seconds']):.1f} x json.loads), peak RSS {hashed['rss_mb']:.0f} MB"
    )
    print(f"review folder (3 x 600,000): refused in {refused['seconds']:.2f} s, peak RSS {refused['rss_mb']:.0f} MB")
    small, deep = _dag(root, 1), _dag(root, 24)
    base, dag = _run("verify", *small), _run("verify", *deep)
    for name, r in (("1 level (baseline)", base), ("24 levels", dag)):
        print(
            f"verify --json, {name}: verified={r['verified']}, {r['json_bytes']} bytes, "
            f"{r['seconds']:.2f} s, peak RSS {r['rss_mb']:.0f} MB"
        )
    print(f"24 levels / 1 level: {int(dag['json_bytes']) / int(base['json_bytes']):.1f} x the bytes (models: 51/5)")


if __name__ == "__main__":
    main()
