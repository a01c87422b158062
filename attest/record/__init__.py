"""Recording steps: after the fact (record_step), from a training script (recording / RecordingSession) and from HF
Trainer (attest.record.hf.AttestCallback, which imports transformers)."""

from attest.lineage.locator import model_uri
from attest.record.recorder import RecordResult, Signing, internal_parameters, record_step
from attest.record.refs import ModelRef, resolve_model
from attest.record.session import RecordingSession, load_keys, recording

__all__ = [
    "ModelRef",
    "RecordResult",
    "RecordingSession",
    "Signing",
    "internal_parameters",
    "load_keys",
    "model_uri",
    "record_step",
    "recording",
    "resolve_model",
]
