"""Progress (issue 16.13): one bar per experiment in its declared unit, an ETA from the rate
since that experiment's first progress, and warnings that do not break the bars."""

from __future__ import annotations

import dataclasses
import warnings
from pathlib import Path

import pytest

from repro.registry import ExperimentSpec
from repro.runner import Batch, RunResult
from repro.sweep import Eta, _Progress, plan_sweep


def _batches(tmp_path: Path) -> list[Batch]:
    plan = plan_sweep("toy", ["small"], ["total_steps=10"], [0, 1], tmp_path)
    other = ExperimentSpec("other", "tests.repro.toy_experiments", "ToyConfig")
    slow = [
        Batch(
            other,
            tuple(dataclasses.replace(t, run_dir=tmp_path / f"o{i}", total=1000) for t in b.tasks),
        )
        for i, b in enumerate(plan.batches)
    ]
    return [*plan.batches, *slow]


def test_one_bar_per_experiment_in_its_own_unit(tmp_path: Path) -> None:
    batches = _batches(tmp_path)
    bar = _Progress(batches, {"toy": "SGD step", "other": "env step"}, enabled=True)
    try:
        assert set(bar.bars) == {"toy", "other"}
        assert bar.bars["toy"].total == 20 and "/20.0 SGD step [" in str(bar.bars["toy"])
        assert bar.bars["other"].total == 2000 and "/2.00k env step [" in str(bar.bars["other"])
        toy_dir = Path(batches[0].tasks[0].run_dir)
        bar.on_row(toy_dir, 4)
        bar.on_row(toy_dir, 12)  # past the run's end: capped at its 10 steps
        bar.on_row(tmp_path / "o0", 300)
        assert bar.bars["toy"].n == 10 and bar.bars["other"].n == 300
        assert "ETA ?" in str(bar.bars["other"])  # one point: no rate yet
        bar.on_row(tmp_path / "o1", 100)
        assert "ETA ?" not in str(bar.bars["other"])
        bar.done([RunResult("toy", "small", 0, str(toy_dir), "finished")])
        assert bar.done_runs == {"toy": 1, "other": 0}
    finally:
        bar.close()


def _simulated_eta_errors(start_delay: float) -> list[float]:
    """Ratio ETA / true remaining time, sampled once 10 % of the work is done and after.

    Four runs of 1000 steps on two workers; runs go at 10 and 5 steps/s (so the rate changes
    when the slow pair starts), and the experiment's first row comes ``start_delay`` s after
    its bar appeared (its runs waited behind another experiment's)."""
    speeds = [10.0, 10.0, 5.0, 5.0]
    t, dt = 0.0, 1.0
    done = [0.0] * 4
    eta = Eta(4000.0)
    samples: list[tuple[float, float | None]] = []
    while sum(done) < 4000:
        t += dt
        if t > start_delay:
            active = [i for i in range(4) if done[i] < 1000][:2]
            for i in active:
                done[i] = min(1000.0, done[i] + speeds[i] * dt)
            eta.update(sum(done), t)
        if sum(done) >= 400:
            samples.append((t, eta.remaining_s()))
    end = t
    return [est / (end - at) for at, est in samples if est is not None and end - at > 10]


@pytest.mark.parametrize("start_delay", [0.0, 600.0, 36_000.0])
def test_eta_is_within_2x_after_the_first_10_percent(start_delay: float) -> None:
    ratios = _simulated_eta_errors(start_delay)
    assert ratios and all(0.5 <= r <= 2.0 for r in ratios), (min(ratios), max(ratios))


def test_warnings_go_through_the_bar(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = warnings.showwarning
    bar = _Progress(_batches(tmp_path), {"toy": "SGD step"}, enabled=True)
    try:
        assert warnings.showwarning != before
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            warnings.showwarning = bar._warn  # catch_warnings restores the original on exit
            warnings.warn("a warning during the sweep", UserWarning, stacklevel=1)
    finally:
        bar.close()
    assert warnings.showwarning is before
    err = capsys.readouterr().err
    assert "UserWarning: a warning during the sweep" in err


def test_worker_output_outside_runs_reaches_the_driver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A warning a worker prints while it imports the experiment is printed by the driver
    (above the bars), not written by the worker straight through them."""
    from repro.cli import main

    monkeypatch.setenv("REPRO_TOY_IMPORT_WARNING", "1")
    argv = ["run", "toy", "--seeds", "0-1", "--set", "total_steps=3", "--workers", "2"]
    assert main([*argv, "--no-tensorboard", "--out", str(tmp_path)]) == 0
    err = capsys.readouterr().err
    assert err.count("UserWarning: toy: a warning at import") == 2  # one per worker
