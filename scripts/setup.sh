#!/usr/bin/env bash
# Create .venv with the pinned dependencies (requirements.lock) and attest itself. Idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.attest-lock-$(sha256sum requirements.lock pyproject.toml | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/python -m pip install -q --disable-pip-version-check -r requirements.lock
  # the distribution is attest-weights; drop an older `attest` (ours before the rename, or the unrelated PyPI one,
  # which would shadow the import package)
  .venv/bin/python -m pip uninstall -q -y attest >/dev/null 2>&1 || true
  .venv/bin/python -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
  rm -f .venv/.attest-lock-*
  touch "$stamp"
fi
