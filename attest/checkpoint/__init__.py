"""Reading a model folder's tensors (for the merge, replay and forensics wings), stored or layout-canonical."""

from attest.checkpoint.reader import SAFETENSORS_TAGS, TORCH_DTYPES, Checkpoint, TensorTable, torch_dtype

__all__ = ["SAFETENSORS_TAGS", "TORCH_DTYPES", "Checkpoint", "TensorTable", "torch_dtype"]
