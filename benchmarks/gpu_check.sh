#!/usr/bin/env bash
# The GPU checks, as one command on a lent GPU machine (the device tool; CI never runs this).
#
# That machine has PyTorch with CUDA but no network, no mergekit and not all of attest's dependencies. Prepare here:
#   python benchmarks/bench_gpu_replay.py prepare .gpu        # real tiny MoE families + real mergekit merges
#   pip download --no-deps --only-binary=:all: --python-version 3.12 ... -d .whl  pydantic pydantic_core
#       annotated-types typing-inspection typing_extensions blake3 rfc8785 cryptography cffi pycparser
#       transformers regex click rich   (the versions of requirements.lock; .whl and .gpu are git-ignored)
# then run it there with .whl and .gpu carried:  bash benchmarks/gpu_check.sh  (results land in $OUT).
set -uo pipefail
OUT=${OUT:-/tmp/attest-gpu-out}
mkdir -p "$OUT"
PY=${PY:-python3}
if [ -d .whl ]; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
fi
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1
nvidia-smi -L || true
$PY -c "import torch, transformers; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU', 'transformers', transformers.__version__)"
$PY -m pytest -q -p no:cacheprovider tests/merge/test_merge_engine.py -k cuda 2>&1 | tee "$OUT/pytest_cuda.log" | tail -5
$PY benchmarks/bench_gpu_replay.py run .gpu --experts ${EXPERTS:-50 512} --json "$OUT/gpu_replay.json" 2>&1 \
    | grep -v -e 'Writing model shards' -e 'Loading weights' | tee "$OUT/gpu_replay.log"
