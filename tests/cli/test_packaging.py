"""The install line in README.md is true: the distribution name, its extras, and the command it installs."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from attest.cli import DISTRIBUTION, ML_MODULES

REPO = Path(__file__).resolve().parents[2]


def _project() -> dict[str, object]:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]  # type: ignore[no-any-return]


def test_distribution_name_is_not_the_unrelated_pypi_attest() -> None:
    project = _project()
    assert project["name"] == DISTRIBUTION == "attest-weights"
    assert project["scripts"] == {"attest": "attest.cli:entry"}  # the command keeps its name


def test_every_extra_the_readme_installs_is_declared() -> None:
    readme = (REPO / "README.md").read_text()
    installs = re.findall(r"pip install \"?([A-Za-z0-9_.-]+)(?:\[([a-z,]+)\])?", readme)
    assert installs and all(name == DISTRIBUTION for name, _ in installs), installs
    extras = set(_project()["optional-dependencies"])  # type: ignore[arg-type]
    named = {e for _, group in installs for e in group.split(",") if e}
    assert named and named <= extras, named - extras
    assert "ray" in named  # the README installs the ray extra that --ray needs


def test_ml_extra_provides_the_modules_the_cli_asks_for() -> None:
    ml = " ".join(_project()["optional-dependencies"]["ml"])  # type: ignore[index]
    for module in ML_MODULES:
        assert module in ml, module


def test_ray_extra_pins_ray_exactly_as_the_lock_does() -> None:
    """CI installs from requirements.lock: the `ray` extra pins the version locked there, and the tests get it."""
    extras = _project()["optional-dependencies"]
    assert extras["ray"] == ["ray==2.60.0"]  # type: ignore[index]
    assert "ray==2.60.0" in (REPO / "requirements.lock").read_text().splitlines()
    assert any("ray" in dep for dep in extras["test"])  # type: ignore[index]
