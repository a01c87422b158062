"""`attest merge` / `attest replay` against `mergekit-yaml` on a generated Qwen2-shaped bf16 model, same run.

Generates (once, kept in --dir) a base and two fine-tune-like parents (base + small bf16 noise; default size about
425M parameters = about 860 MB each), then runs every job in its own subprocess, timing the whole command (start-up
and imports included, as a user sees it) and reading that child's peak RSS from wait4():

  mergekit-linear   mergekit-yaml linear.yml            attest-linear   attest merge linear.yml
  attest-replay     attest replay linear.yml <mergekit's linear output>  (must say "reproduced")
  mergekit-ties     mergekit-yaml ties.yml              attest-ties     attest merge ties.yml (mergekit tie order)
  attest-ties-stable  attest merge ties.yml --tie-order stable

Usage: python benchmarks/bench_merge.py [--scale full|medium|small] [--dir /tmp/attest-bench-merge] [--jobs a,b,...]
Outputs go to --dir/out and are deleted after each job; the page cache is warm for every job (the parents are read
once before timing). Ratios are attest / mergekit from this same run.
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

import torch

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from attest.merge.writer import OutputTensor, ShardedWriter  # noqa: E402

SCALES = {
    # hidden, intermediate, layers, vocab: about 425M parameters
    "full": (1024, 2816, 24, 57344),
    "medium": (768, 2048, 12, 32000),
    "small": (256, 704, 4, 8192),
}
JOBS = ["mergekit-linear", "attest-linear", "attest-replay", "mergekit-ties", "attest-ties", "attest-ties-stable"]
BIN = Path(sys.executable).parent


def layout(hidden: int, inter: int, layers: int, vocab: int) -> list[tuple[str, tuple[int, ...]]]:
    shapes: list[tuple[str, tuple[int, ...]]] = [("model.embed_tokens.weight", (vocab, hidden))]
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes += [
            (p + "input_layernorm.weight", (hidden,)),
            (p + "post_attention_layernorm.weight", (hidden,)),
            (p + "self_attn.q_proj.weight", (hidden, hidden)),
            (p + "self_attn.q_proj.bias", (hidden,)),
            (p + "self_attn.k_proj.weight", (hidden, hidden)),
            (p + "self_attn.k_proj.bias", (hidden,)),
            (p + "self_attn.v_proj.weight", (hidden, hidden)),
            (p + "self_attn.v_proj.bias", (hidden,)),
            (p + "self_attn.o_proj.weight", (hidden, hidden)),
            (p + "mlp.gate_proj.weight", (inter, hidden)),
            (p + "mlp.up_proj.weight", (inter, hidden)),
            (p + "mlp.down_proj.weight", (hidden, inter)),
        ]
    return [*shapes, ("model.norm.weight", (hidden,)), ("lm_head.weight", (vocab, hidden))]


def generate(folder: Path, scale: str) -> dict[str, Path]:
    hidden, inter, layers, vocab = SCALES[scale]
    root = folder / scale
    names = {"base": root / "base", "ft_a": root / "ft_a", "ft_b": root / "ft_b"}
    if all((p / "model.safetensors").is_file() for p in names.values()):
        return names
    shapes = layout(hidden, inter, layers, vocab)
    config = {
        "architectures": ["Qwen2ForCausalLM"],
        "model_type": "qwen2",
        "hidden_size": hidden,
        "intermediate_size": inter,
        "num_hidden_layers": layers,
        "num_attention_heads": hidden // 64,
        "num_key_value_heads": hidden // 64,
        "vocab_size": vocab,
        "max_position_embeddings": 4096,
        "rms_norm_eps": 1e-6,
        "tie_word_embeddings": False,
        "torch_dtype": "bfloat16",
    }
    for key, path in names.items():
        path.mkdir(parents=True, exist_ok=True)
        (path / "config.json").write_text(json.dumps(config, indent=2))
        writer = ShardedWriter(path, [OutputTensor(n, torch.bfloat16, s) for n, s in shapes])
        for i, (name, shape) in enumerate(shapes):
            g = torch.Generator().manual_seed(i)
            t = torch.randn(shape, generator=g) * 0.02
            if key != "base":
                gk = torch.Generator().manual_seed(i * 7919 + (1 if key == "ft_a" else 2))
                t += torch.randn(shape, generator=gk) * 0.002
            writer.write(name, t.to(torch.bfloat16))
        writer.finish()
    return names


def recipes(models: dict[str, Path]) -> dict[str, str]:
    return {
        "linear": (
            f"merge_method: linear\nmodels:\n  - model: {models['ft_a']}\n    parameters: {{weight: 1.0}}\n"
            f"  - model: {models['ft_b']}\n    parameters: {{weight: 0.75}}\ndtype: bfloat16\n"
        ),
        "ties": (
            f"merge_method: ties\nbase_model: {models['base']}\nmodels:\n  - model: {models['ft_a']}\n"
            f"    parameters: {{weight: 1.0, density: 0.5}}\n  - model: {models['ft_b']}\n"
            f"    parameters: {{weight: 0.75, density: 0.5}}\ndtype: bfloat16\n"
        ),
    }


# A small go-between process: a child forked straight from this (large) benchmark process would report this
# process's resident high-water mark as its own (Linux carries it across exec), so each job is started by a fresh,
# small interpreter that reports its only child's peak RSS and CPU time.
_REPORTER = (
    "import json, resource, subprocess, sys\n"
    "rc = subprocess.run(sys.argv[2:], stdout=subprocess.DEVNULL).returncode\n"
    "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
    "open(sys.argv[1], 'w').write(json.dumps([u.ru_maxrss, u.ru_utime + u.ru_stime, rc]))\n"
)


def run(cmd: list[str]) -> tuple[float, int, int, float]:
    """(wall seconds, peak RSS bytes, exit code, CPU seconds) of one job. CPU time (user + system) is reported beside
    wall time because it is far less sensitive to other load on a shared machine."""
    import tempfile

    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        start = time.perf_counter()
        proc = subprocess.run([sys.executable, "-S", "-c", _REPORTER, out.name, *cmd], stderr=subprocess.PIPE)
        wall = time.perf_counter() - start
        maxrss_kb, cpu, rc = json.loads(Path(out.name).read_text())
    if rc:
        err = proc.stderr.decode(errors="replace")
        print(f"  {' '.join(cmd[:3])} ... exited {rc}: {err.strip().splitlines()[-1:]}")
    return wall, maxrss_kb * 1024, rc, cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--scale", choices=sorted(SCALES), default="full")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/attest-bench-merge"))
    ap.add_argument("--jobs", default=",".join(JOBS))
    args = ap.parse_args()
    models = generate(args.dir, args.scale)
    params = sum(torch.Size(s).numel() for _, s in layout(*SCALES[args.scale]))
    cfg_dir = args.dir / "configs"
    cfg_dir.mkdir(parents=True, exist_ok=True)
    cfgs = {}
    for name, text in recipes(models).items():
        cfgs[name] = cfg_dir / f"{name}.yml"
        cfgs[name].write_text(text)
    for p in models.values():  # warm the page cache for every job alike
        (p / "model.safetensors").read_bytes()
    out = args.dir / "out"
    keep = args.dir / args.scale / "mergekit-linear-output"  # replayed by attest-replay; remade by this run
    shutil.rmtree(keep, ignore_errors=True)
    attest = [sys.executable, "-m", "attest"]
    mk = [str(BIN / "mergekit-yaml")]
    commands = {
        "mergekit-linear": [*mk, str(cfgs["linear"]), str(out), "--allow-crimes", "--quiet", "--no-copy-tokenizer"],
        "attest-linear": [*attest, "merge", str(cfgs["linear"]), str(out)],
        "attest-replay": [*attest, "replay", str(cfgs["linear"]), str(keep)],
        "mergekit-ties": [*mk, str(cfgs["ties"]), str(out), "--allow-crimes", "--quiet", "--no-copy-tokenizer"],
        "attest-ties": [*attest, "merge", str(cfgs["ties"]), str(out)],
        "attest-ties-stable": [*attest, "merge", str(cfgs["ties"]), str(out), "--tie-order", "stable"],
    }
    results: dict[str, tuple[float, int, int, float]] = {}
    print(
        f"model: {params / 1e6:.0f}M parameters bf16 ({args.scale}), torch threads {torch.get_num_threads()}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    for job in [j for j in args.jobs.split(",") if j]:
        if job == "attest-replay" and not keep.exists():
            run(commands["mergekit-linear"])
            shutil.move(str(out), keep)
        shutil.rmtree(out, ignore_errors=True)
        results[job] = run(commands[job])
        if job == "mergekit-linear" and out.exists():
            shutil.move(str(out), keep)
        shutil.rmtree(out, ignore_errors=True)
        wall, rss, rc, cpu = results[job]
        print(f"{job:20s} {wall:8.2f} s wall  {cpu:8.2f} s CPU  {rss / 1e9:6.2f} GB peak RSS  exit {rc}")
    pairs = [
        ("attest-linear", "mergekit-linear"),
        ("attest-replay", "mergekit-linear"),
        ("attest-ties", "mergekit-ties"),
        ("attest-ties-stable", "mergekit-ties"),
    ]
    for ours, theirs in pairs:
        if ours in results and theirs in results:
            print(
                f"{ours} / {theirs}: wall {results[ours][0] / results[theirs][0]:.2f}x, "
                f"CPU {results[ours][3] / results[theirs][3]:.2f}x, "
                f"peak RSS {results[ours][1] / results[theirs][1]:.2f}x"
            )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
