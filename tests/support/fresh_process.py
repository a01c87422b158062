"""Code run in a fresh interpreter, for what only a new process shows (which modules an import or a command loads)."""

from __future__ import annotations

import subprocess
import sys


def loads_torch(code: str) -> tuple[str, bool]:
    """Run `code` in a fresh interpreter: (what it printed, stripped; whether torch was imported by the end)."""
    probe = f"{code}\nimport sys as _sys\nprint('\\ntorch-loaded', 'torch' in _sys.modules)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    printed, _, flag = out.rpartition("\ntorch-loaded ")
    return printed.strip(), flag.strip() == "True"
