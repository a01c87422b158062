"""The `attest` entry point: lazy command loading (cheap `--help`) and the error boundary for a missing `[ml]` extra."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from attest.cli import COMMANDS, DISTRIBUTION, load_command

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "numpy", "pydantic", "rich", "rich.progress", "cryptography", "safetensors", "attest.identity")


def _python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, env={"PYTHONPATH": str(REPO)}
    )


def test_import_cli_and_help_load_nothing_heavy() -> None:
    code = (
        "import sys\nfrom attest.cli import main\n"
        "try:\n    main(['--help'])\nexcept SystemExit as e:\n    assert e.code == 0, e.code\n"
        f"print('loaded:', ','.join(m for m in {HEAVY!r} if m in sys.modules))"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert "Commands:" in done.stdout
    assert done.stdout.splitlines()[-1] == "loaded: "  # none of the heavy modules was imported


def test_command_table_matches_the_modules() -> None:
    import importlib

    modules = {module for module, _ in COMMANDS.values()}
    defined = {c.name: module for module in modules for c in importlib.import_module(f"attest.cli.{module}").COMMANDS}
    assert defined == {name: module for name, (module, _) in COMMANDS.items()}
    for name in COMMANDS:
        assert load_command(name).name == name


def test_unknown_command_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    from tests.support.cli import run_attest

    code, _, err = run_attest(["frobnicate"])
    assert code == 2 and "No such command" in err


@pytest.mark.parametrize(("missing", "commands"), [("numpy", ["detect"]), ("torch", ["replay"])])
def test_missing_ml_extra_exits_2_and_names_the_extra(
    missing: str, commands: list[str], tiny_models: dict[str, Path], tmp_path: Path
) -> None:
    """A plain install (no torch/numpy): detect and replay say what to install instead of an internal error.
    (replay computes with torch alone: it runs without numpy.)"""
    folder = tiny_models["ft_a"]
    config = tmp_path / "merge.yml"
    config.write_text(
        f"merge_method: linear\nmodels:\n  - model: {folder}\n    parameters: {{weight: 0.5}}\n"
        f"  - model: {tiny_models['ft_b']}\n    parameters: {{weight: 0.5}}\ndtype: bfloat16\n"
    )
    for args in (
        ["detect", str(folder), "--candidate", str(tiny_models["base"])],
        ["replay", str(config), str(folder)],
    ):
        if args[0] not in commands:
            continue
        code = (
            f"import sys\nsys.modules[{missing!r}] = None  # what `import {missing}` meets without the extra\n"
            f"from attest.cli import main\nmain({args!r})"
        )
        done = _python(code)
        assert done.returncode == 2, (args, done.stderr)
        assert f"pip install '{DISTRIBUTION}[ml]'" in done.stderr, done.stderr
        assert "internal error" not in done.stderr and "Traceback" not in done.stderr


def test_a_missing_module_of_our_own_is_still_an_internal_error() -> None:
    code = (
        "import sys\nfrom attest.cli import main, cli\nimport click\n"
        "@cli.command('boom')\ndef boom():\n    import attest_no_such_module  # noqa\n"
        "main(['boom'])"
    )
    done = _python(code)
    assert done.returncode == 3 and "internal error: ModuleNotFoundError" in done.stderr, done.stderr


def test_detect_needs_no_torch(tiny_models: dict[str, Path]) -> None:
    """detect reads tensors as numpy arrays: with torch unimportable it still runs (replay does not, above)."""
    args = ["detect", str(tiny_models["ft_a"]), "--candidate", str(tiny_models["base"])]
    code = f"import sys\nsys.modules['torch'] = None\nfrom attest.cli import main\nmain({args!r})"
    done = _python(code)
    assert done.returncode == 0, done.stderr
    assert "verdict:" in done.stdout


@pytest.mark.parametrize(("argv", "code"), [(["--version"], 0), (["no-such-command"], 2)])
def test_console_entry_freezes_the_heap_before_exit(
    monkeypatch: pytest.MonkeyPatch, argv: list[str], code: int
) -> None:
    """The console script leaves with the heap frozen (the interpreter's shutdown then skips its collections over it:
    ~0.45 s of every detect), whatever the exit code; `main`, which tests and library callers use, does not."""
    import gc

    from attest import cli

    monkeypatch.setattr(sys, "argv", ["attest", *argv])
    gc.unfreeze()
    try:
        with pytest.raises(SystemExit) as main_exit:
            cli.main()
        assert main_exit.value.code == code and gc.get_freeze_count() == 0
        with pytest.raises(SystemExit) as entry_exit:
            cli.entry()
        assert entry_exit.value.code == code
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()


def test_python_dash_m_attest_is_the_console_entry() -> None:
    done = subprocess.run(
        [sys.executable, "-c", "import gc, runpy, sys\nsys.argv = ['attest', '--version']\n"
         "try:\n    runpy.run_module('attest', run_name='__main__')\nexcept SystemExit as e:\n"
         "    print('exit', e.code, 'frozen', gc.get_freeze_count() > 0)"],
        capture_output=True, text=True, cwd=REPO, env={"PYTHONPATH": str(REPO)},
    )  # fmt: skip
    assert done.stdout.splitlines()[-1] == "exit 0 frozen True", done.stderr
