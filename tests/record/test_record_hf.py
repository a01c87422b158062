"""A real 5-step Hugging Face Trainer run on a tiny model with AttestCallback yields a valid signed finetune
statement (with the saved checkpoint's roots)."""

from __future__ import annotations

from pathlib import Path

import pytest

from attest.identity import hash_model
from attest.signing import generate_key, load_public_key
from tests.support.builders import token_batches
from tests.support.record_helpers import verify_chain


def test_trainer_run_is_recorded(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    import torch

    from attest.record.hf import AttestCallback

    key = tmp_path / "builder.key"
    generate_key(key)
    rows = [{"input_ids": ids, "labels": ids} for batch in token_batches(11, 5, batch=2, seq=16) for ids in batch]
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_models["base"], dtype=torch.float32)
    out = tmp_path / "final"
    callback = AttestCallback(out, parents=[tiny_models["base"]], key=key, params={"dataset": "synthetic-11"})
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=5,
        per_device_train_batch_size=2,
        learning_rate=1e-3,
        save_strategy="steps",
        save_steps=5,
        logging_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=5,
        disable_tqdm=True,
    )
    trainer = transformers.Trainer(model=model, args=args, train_dataset=rows, callbacks=[callback])
    trainer.train()

    assert callback.result is not None
    (verified,) = verify_chain(out, [load_public_key(tmp_path / "builder.key.pub")])
    st = verified.statement
    assert st.step_kind() == "finetune"
    assert st.subject[0].digest == {"sha256": hash_model(out).model_root}
    (base,) = st.dependencies("base")
    assert base.digest == {"sha256": hash_model(tiny_models["base"]).model_root}
    hyper = st.predicate.buildDefinition.externalParameters["hyperparameters"]
    assert hyper["learning_rate"] == 1e-3 and hyper["max_steps"] == 5 and hyper["dataset"] == "synthetic-11"
    internal = st.predicate.buildDefinition.internalParameters or {}
    assert internal["seed"] == 5 and internal["global_step"] == 5 and internal["device"] == "cpu"
    (ckpt,) = st.predicate.runDetails.byproducts or []
    assert ckpt.name == "checkpoint-5" and ckpt.annotations and ckpt.annotations["step"] == 5
    assert ckpt.digest == {"sha256": hash_model(tmp_path / "run" / "checkpoint-5").model_root}


def test_trainer_run_records_a_transcript_whose_chain_verifies(tmp_path: Path) -> None:
    """A real Trainer run (linear schedule, clipping, the Trainer's own AdamW and data order) with AttestCallback in
    transcript mode: checkpoint 0 is the base byte for byte, every step's lines are committed, a SPEC 8.2 checkpoint
    every 2 steps and at the end (5 steps: 0, 2, 4, 5), the output is the last one; the verifier's chain checks pass
    and replay needs the pinned runner (fails closed without it)."""
    transformers = pytest.importorskip("transformers")
    import torch

    from attest.lineage.store import load_bundle
    from attest.policy import verify_with_policy
    from attest.record.hf import AttestCallback
    from attest.signing.keys import generate_private_key, write_key_pair
    from attest.statements.parse import parse_provenance
    from attest.training.chain import check_files, check_statement
    from attest.training.transcript import EXTERNAL_RUNNER, transcript_of
    from attest.trust.trust_set import build_trust
    from attest.verify.engine import VerifyOptions
    from tests.support.builders import make_tiny_model
    from tests.support.training_helpers import training_problems, verify, write_data, write_policy

    key = generate_private_key()
    pub = write_key_pair(tmp_path / "k", key)
    base = make_tiny_model(tmp_path / "base", seed=0)
    data = write_data(tmp_path / "data.jsonl", records=12)
    runner = Path(__file__).resolve().parents[2] / "examples" / "own_loop" / "trainer_runner.py"
    out, ckpt = tmp_path / "final", tmp_path / "ckpt"
    callback = AttestCallback(
        out, parents=[base], key=key, data=data, checkpoints=ckpt, checkpoint_every=2, runner=runner
    )
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "run"),
        max_steps=5,
        per_device_train_batch_size=4,
        learning_rate=1e-3,
        save_strategy="no",
        logging_strategy="no",
        report_to=[],
        use_cpu=True,
        seed=5,
        disable_tqdm=True,
    )
    model = transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    trainer = transformers.Trainer(
        model=model,
        args=args,
        train_dataset=callback.train_dataset,
        data_collator=callback.data_collator,
        callbacks=[callback],
    )
    trainer.train()

    st = parse_provenance(load_bundle(out)[0].payload_bytes)
    t, hyper = transcript_of(st)
    assert t.runner == EXTERNAL_RUNNER and [c.step for c in t.checkpoints] == [0, 2, 4, 5]
    assert [len(b.indices) for b in t.batches] == [4, 4, 4, 4, 4]  # 12 lines: step 4 starts the second epoch
    assert sorted(i for b in t.batches[:3] for i in b.indices) == list(range(12))
    assert hyper.model_dump()["lr_scheduler_type"] == "linear" and hyper.steps == 5
    assert t.checkpoints[0].weights_root == hash_model(base).weights_root
    assert t.checkpoints[-1].weights_root == hash_model(out).weights_root
    assert check_statement(st, t, hyper, hash_model(out).weights_root) == []
    chain = check_files(t, [ckpt], [data], out.name, None, out)
    assert chain.problems == []
    report = verify(out, write_policy(tmp_path / "p.yaml", pub, [base]), ckpt, data)
    assert not report.verified
    problems = training_problems(report)
    assert not any("chain broken" in p for p in problems)
    assert any("cannot replay: " in p and "name that file with --runner" in p for p in problems)
    options = VerifyOptions(replay_training=3, checkpoints_dirs=(ckpt,), training_data=(data,), runners=(runner,))
    report = verify_with_policy(out, build_trust(tmp_path / "p.yaml"), options).report
    assert report.verified, "\n".join(p.message for p in report.problems)
    assert "\n".join(report.notes).count(": reproduced") == 3
