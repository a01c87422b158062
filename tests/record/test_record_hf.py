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
