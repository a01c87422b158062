"""The unit cache (attest.unit_cache): replay and detect under --ray keep finished work units, so a rerun after a
failure redoes only what did not finish; a changed input, a corrupt entry or --no-cache recomputes; results are the
same with and without it; verify never reads it."""

from __future__ import annotations

import importlib.metadata
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from attest.executor import ClusterError, InProcess
from attest.forensics import detect
from attest.lineage.locator import Locator
from attest.unit_cache import CachingExecutor, UnitCache
from tests.distributed.faults import executor_killing
from tests.support.cli import run_attest

pytestmark = pytest.mark.usefixtures("ray_cluster", "small_units")


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Copies made by the test are new: let the cache trust their timestamps anyway, and give each test its own
    cache folder."""
    monkeypatch.setattr("attest.unit_cache.RACY_NS", 0)
    monkeypatch.setenv("ATTEST_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "units-v1"


def _chain_copy(signed_chain: dict[str, Path], tmp_path: Path) -> dict[str, Path]:
    out = {}
    for name in ("merged", "ft_a", "ft_b", "base"):
        shutil.copytree(signed_chain[name], tmp_path / name)
        out[name] = tmp_path / name
    return out


def _detect_units() -> dict[Any, Any]:
    from attest.forensics.units import DETECT_CODEC, detect_group

    return {detect_group: DETECT_CODEC}


def _replay_units() -> dict[Any, Any]:
    from attest.replay.units import REPLAY_CODEC, replay_group

    return {replay_group: REPLAY_CODEC}


def _detect(c: dict[str, Path], cache: UnitCache) -> Any:
    executor = CachingExecutor(InProcess(), cache, _detect_units())
    return detect(c["merged"], [c["ft_a"], c["ft_b"]], c["base"], executor=executor)


def _entries(root: Path) -> list[Path]:
    return sorted(root.rglob("*.json")) if root.exists() else []


def test_detect_reuses_every_unit_and_the_report_is_the_same(
    signed_chain: dict[str, Path], tmp_path: Path, fresh: Path
) -> None:

    c = _chain_copy(signed_chain, tmp_path)
    plain = detect(c["merged"], [c["ft_a"], c["ft_b"]], c["base"])
    first, second = UnitCache(), UnitCache()
    one = _detect(c, first)
    two = _detect(c, second)
    assert one == plain and two == plain  # floats, arrays, digests and notes round-trip exactly
    assert first.hits == 0 and first.computed > 1
    assert (second.hits, second.computed) == (first.computed, 0)
    for entry in _entries(fresh):
        assert entry.stat().st_mode & 0o777 == 0o600


def test_a_changed_input_file_recomputes_the_units_that_read_it(
    signed_chain: dict[str, Path], tmp_path: Path, fresh: Path
) -> None:
    """A file no unit reads (config.json) changes nothing; rewriting a candidate's shard (even with the same bytes:
    the key is the file's state) recomputes every unit that reads it: here all of them, each fit reads every folder's
    one shard."""
    c = _chain_copy(signed_chain, tmp_path)
    first = UnitCache()
    plain = _detect(c, first)
    (c["ft_b"] / "config.json").write_text((c["ft_b"] / "config.json").read_text())
    second = UnitCache()
    assert _detect(c, second) == plain
    assert (second.hits, second.computed) == (first.computed, 0)
    shard = next(iter(sorted(c["ft_b"].glob("*.safetensors"))))
    shard.write_bytes(shard.read_bytes())
    third = UnitCache()
    assert _detect(c, third) == plain
    assert (third.hits, third.computed) == (0, first.computed)


def test_a_corrupt_or_foreign_entry_is_recomputed_not_trusted(
    signed_chain: dict[str, Path], tmp_path: Path, fresh: Path
) -> None:

    c = _chain_copy(signed_chain, tmp_path)
    first = UnitCache()
    plain = _detect(c, first)
    entries = _entries(fresh)
    entries[0].write_text("{not json")
    moved = json.loads(entries[1].read_text())
    moved["key"] = "0" * 64  # an entry filed under a key that is not its own
    entries[1].write_text(json.dumps(moved))
    bad = json.loads(entries[2].read_text())
    bad["result"] = {"evidence": [{"name": 3}], "digests": []}  # malformed result: a miss, not an error
    entries[2].write_text(json.dumps(bad))
    second = UnitCache()
    again = _detect(c, second)
    assert again == plain
    assert second.computed == 3 and second.hits == first.computed - 3


def test_replay_rerun_after_a_failed_run_redoes_only_what_failed(
    signed_chain: dict[str, Path], tmp_path: Path, fresh: Path
) -> None:
    """The worker replaying one tensor dies on every try (as on a node that is gone): the run fails (exit 2, no
    verdict), the units that finished are cached, and the rerun runs only the rest, with the report of one process."""
    from attest.merge import load_recipe
    from attest.replay import replay

    c = _chain_copy(signed_chain, tmp_path)
    recipe = load_recipe(signed_chain["root"] / "merge.yml")
    parents = Locator(()).recipe_models(recipe.referenced_models())
    plain = replay(recipe, parents, c["merged"])
    assert plain.verdict == "reproduced"
    victim = plain.tensors[-1].name
    log = tmp_path / "ran.log"
    first = UnitCache()
    with executor_killing(repr(victim), log) as ex, pytest.raises(ClusterError):
        replay(recipe, parents, c["merged"], executor=CachingExecutor(ex, first, _replay_units()))
    assert first.computed > 0 and first.hits == 0
    log.unlink(missing_ok=True)
    second = UnitCache()
    with executor_killing("no-such-tensor", log) as ex:
        again = replay(recipe, parents, c["merged"], executor=CachingExecutor(ex, second, _replay_units()))
    assert again == plain
    assert second.hits == first.computed  # nothing that finished ran again
    assert second.computed == len(log.read_text().splitlines()) > 0


def test_cli_detect_reuses_units_and_no_cache_recomputes(
    signed_chain: dict[str, Path], tmp_path: Path, fresh: Path
) -> None:
    c = _chain_copy(signed_chain, tmp_path)
    args = ["detect", c["merged"], "--candidate", c["ft_a"], "--candidate", c["ft_b"], "--base", c["base"], "--json"]
    code, out, err = run_attest([*args, "--ray", "auto"])
    assert code == 0 and "unit cache" not in err
    code2, out2, err2 = run_attest([*args, "--ray", "auto"])
    assert code2 == 0 and json.loads(out2) == json.loads(out)
    assert "work units taken from the unit cache" in err2
    code3, out3, err3 = run_attest([*args, "--ray", "auto", "--no-cache"])
    assert code3 == 0 and json.loads(out3) == json.loads(out) and "unit cache" not in err3


def test_verify_never_reads_the_unit_cache(
    signed_chain: dict[str, Path], fresh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A verifier must not base its verdict on local state: verify --replay --ray passes without ever making a unit
    cache, while replay --ray with the same inputs makes and fills one."""
    c = signed_chain
    code, _, _ = run_attest(["replay", c["root"] / "merge.yml", c["merged"], "--json", "--ray", "auto"])
    assert code == 0 and _entries(fresh)

    def refuse(*args: object) -> None:
        raise AssertionError("verify opened the unit cache")

    monkeypatch.setattr(UnitCache, "__init__", refuse)
    code, out, err = run_attest(["verify", c["merged"], "--policy", c["policy"], "--replay", "--json", "--ray", "auto"])
    assert code == 0 and json.loads(out)["verified"] is True, err


def test_the_key_names_the_compute_libraries_without_importing_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    """A cached detect unit depends on numpy and numba (not torch, which detect no longer imports): their installed
    versions are in the key, read from the package metadata, so keying costs no torch import (1.5-3.5 s)."""
    import time

    import attest.unit_cache as uc
    from tests.support.fresh_process import loads_torch

    shard = tmp_path / "x.bin"
    shard.write_bytes(b"x")
    monkeypatch.setattr(uc, "RACY_NS", 0)
    cache = UnitCache(tmp_path / "cache")
    now = time.time_ns() + 1
    before = cache.key(_detect_units, [1], [str(shard)], now)
    real = importlib.metadata.version
    monkeypatch.setattr(uc.importlib.metadata, "version", lambda n: "0.0" if n == "numba" else real(n))
    uc._library_versions.cache_clear()  # read once per process: this one now has another numba
    request.addfinalizer(uc._library_versions.cache_clear)
    assert before is not None and cache.key(_detect_units, [1], [str(shard)], now) not in (None, before)
    code = (
        "from pathlib import Path\nfrom attest.unit_cache import UnitCache\n"
        f"UnitCache(Path({str(tmp_path)!r})).key(print, [1], [], 0)"
    )
    assert loads_torch(code) == ("", False)
