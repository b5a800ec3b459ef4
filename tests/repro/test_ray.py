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
