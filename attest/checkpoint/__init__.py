"""Reading a model folder's tensors (for the merge, replay and forensics wings), stored or layout-canonical: as numpy
arrays without torch (`TensorTable.array`), or as torch tensors (`TensorTable.flat`, attest.checkpoint.torch_dtypes)."""

from attest.checkpoint.reader import ARRAY_DTYPES, Checkpoint, TensorTable, torch_dtype

__all__ = ["ARRAY_DTYPES", "Checkpoint", "TensorTable", "torch_dtype"]
