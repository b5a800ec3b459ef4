"""A tiny sweep through Ray: a single-node Ray started on this machine, shared by the module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from repro.cli import main
from repro.storage import read_metrics, run_state
from repro.sweep import start_local_ray

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    start_local_ray(2)
    yield
    ray.shutdown()


def test_ray_sweep_matches_local_and_records_failures(
    local_ray: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "toy", "--seeds", "0-1", "--set", "total_steps=6", "--no-progress"]
    assert main([*argv, "--backend", "ray", "--workers", "2", "--out", str(tmp_path / "ray")]) == 0
    assert "4 finished, 0 skipped, 0 failed" in capsys.readouterr().out
    assert main([*argv, "--workers", "1", "--out", str(tmp_path / "local")]) == 0
    for config in ("small", "fast-lr"):
        for seed in (0, 1):
            rel = Path("toy", config, f"seed-{seed}", "metrics.jsonl")
            ray_rows = list(read_metrics(tmp_path / "ray" / rel))
            assert [r["step"] for r in ray_rows] == list(range(1, 7))
            assert ray_rows == list(read_metrics(tmp_path / "local" / rel))
    # a failing run inside a Ray task is recorded as failed; the other runs finish
    bad = ["run", "toy", "--set", "fail_at_step=25", "--backend", "ray", "--no-progress"]
    assert main([*bad, "--out", str(tmp_path / "bad")]) == 1
    assert "1 finished, 0 skipped, 1 failed" in capsys.readouterr().out
    assert run_state(tmp_path / "bad" / "toy" / "small" / "seed-0").status == "failed"


def test_killed_driver_takes_the_local_ray_it_started_along(tmp_path: Path) -> None:
    """Issue 16.5: after the driver was killed, Ray's agents stayed alive for over a minute."""
    import psutil

    from tests.repro.test_processes import _driver, _gone, _rows, _wait_for

    argv = ["run", "toy", "--config", "small", "--set", "sleep_s=0.2", "--backend", "ray"]
    proc = _driver([*argv, "--workers", "1", "--no-progress", "--out", str(tmp_path)])
    metrics = tmp_path / "toy" / "small" / "seed-0" / "metrics.jsonl"
    _wait_for(lambda: _rows(metrics) >= 2, "the Ray task to log 2 rows")
    started = psutil.Process(proc.pid).children(recursive=True)
    names = {p.name() for p in started}
    assert {"gcs_server", "raylet"} <= names, names
    proc.kill()
    proc.wait()
    # Left alone, Ray's agents outlive a killed driver by over a minute; the reaper ends them
    # within seconds. 45 s separates the two on a loaded machine.
    _wait_for(lambda: all(_gone(p.pid) for p in started), "Ray's processes to end", 45.0)
