"""Faults on a real local Ray cluster: a killed worker is retried and changes nothing; a unit that cannot be run
fails the whole run (exit 2, no root); what finished is cached, so a rerun redoes only what failed."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from attest.errors import EXIT_USAGE
from attest.executor import ClusterError
from attest.identity import hash_model
from tests.distributed.faults import executor_killing, executor_killing_once

pytestmark = pytest.mark.usefixtures("ray_cluster", "small_units")


def test_a_killed_worker_is_retried_and_the_root_is_unchanged(minilm_dir: Path, tmp_path: Path) -> None:
    marker = tmp_path / "killed"
    with executor_killing_once(marker) as ex:
        manifest = hash_model(minilm_dir, executor=ex)
    assert marker.exists()  # a worker really died mid-run
    assert manifest == hash_model(minilm_dir)


def test_a_killed_worker_during_detect_changes_nothing(signed_chain: dict[str, Path], tmp_path: Path) -> None:
    from attest.forensics import detect

    c = signed_chain
    marker = tmp_path / "killed"
    with executor_killing_once(marker) as ex:
        report = detect(c["merged"], [c["ft_a"], c["ft_b"]], c["base"], executor=ex)
    assert marker.exists()
    assert report == detect(c["merged"], [c["ft_a"], c["ft_b"]], c["base"])


def test_a_unit_that_keeps_dying_fails_the_run_and_a_rerun_redoes_only_it(
    signed_chain: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The worker reading one shard dies on every try (as on a node that is gone): ClusterError (exit 2), nothing
    printed as a root; what finished was cached, and the rerun reads only what did not (the failed unit and those
    cancelled with it)."""
    monkeypatch.setattr("attest.identity.cache.RACY_NS", 0)  # the copy below is fresh: cache it anyway
    folder = tmp_path / "model"
    shutil.copytree(signed_chain["merged"], folder)
    shard = next(p.name for p in folder.glob("*.safetensors"))
    log = tmp_path / "ran.log"
    with executor_killing(shard, log) as ex, pytest.raises(ClusterError) as failed:
        hash_model(folder, use_cache=True, executor=ex)
    assert failed.value.exit_code == EXIT_USAGE
    assert shard in str(failed.value) and "no result was combined" in str(failed.value)
    # what reached the driver (and so the cache): a unit can finish on its worker, write the log, and still be
    # cancelled before its result arrives (a flake in CI when the log was taken for what finished)
    finished = ex.combined
    assert finished and all(shard not in line for line in finished)
    assert set(finished) <= set(log.read_text().splitlines())

    log.unlink()
    with executor_killing("no-such-file", log) as ex:
        manifest = hash_model(folder, use_cache=True, executor=ex)
    assert manifest == hash_model(folder)
    rerun = log.read_text().splitlines()
    assert any(shard in line for line in rerun)
    assert not set(rerun) & set(finished)  # nothing that finished was read again
