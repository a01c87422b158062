"""One local Ray cluster (2 CPUs) for the whole session; every test here skips, saying why, if Ray cannot start."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[object]:
    ray = pytest.importorskip("ray", reason="ray is not installed (attest-weights[ray])")
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    except Exception as exc:  # any failure to start is a reason to skip, named
        pytest.skip(f"a local Ray cluster cannot start on this machine: {type(exc).__name__}: {exc}")
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture
def small_units(monkeypatch: pytest.MonkeyPatch) -> None:
    """Cut the tiny test models into many work units (64 KiB each), as a 5 GB shard is cut into several."""
    monkeypatch.setenv("ATTEST_UNIT_BYTES", str(64 * 1024))
