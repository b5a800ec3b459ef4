"""Tiny end-to-end runs of the real experiments through the ``repro`` command line and report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from repro.aggregate import load_runs
from repro.cli import main

TINY_T5 = ["d_model=32", "d_ff=64", "num_layers=1", "num_heads=2", "warmup_steps=1"]
TINY_STEPS = ["max_steps=4", "log_every=2", "eval_every=4", "checkpoint_every=2"]
FAST = ["--workers", "1", "--threads", "1", "--no-progress", "--no-tensorboard"]


def _finals(out: Path) -> dict[str, dict[str, Any]]:
    runs = load_runs(out)
    assert runs and all(r.status == "finished" for r in runs), [(r.run_dir, r.status) for r in runs]
    return {f"{r.config}/{r.seed}": r.final for r in runs}


def test_ntl_arith_end_to_end(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("NTL_CACHE_DIR", str(tmp_path / "cache"))  # generated data stays in tmp
    sets = [*TINY_T5, *TINY_STEPS, "train_size=32", "eval_size=4", "max_new_tokens=8"]
    sets.append("categories=arithmetic__add_or_sub")
    out = tmp_path / "runs"
    argv = ["run", "ntl-arith", "--config", "ntl-was", "--set", *sets, "--out", str(out), *FAST]
    assert main(argv) == 0
    (final,) = _finals(out).values()
    assert final["step"] == 4 and 0.0 <= float(final["eval/interpolate/accuracy"]) <= 1.0
    assert "eval/extrapolate/arithmetic__add_or_sub_big/accuracy" in final
    config = json.loads((out / "ntl-arith/ntl-was/seed-0/config.json").read_text())
    assert config["loss"] == "ntl-was" and config["categories"] == ["arithmetic__add_or_sub"]
    assert main(["report", str(out), "-o", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "**interpolate** (mean ± std over seeds)" in text and "| ntl-was | 1 |" in text
    assert (tmp_path / "rep" / "ntl-arith_losses.png").exists()


def test_ntl_regression_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    argv = ["run", "ntl-regression", "--config", "ce", "--config", "regression-head"]
    assert main([*argv, "--set", *TINY_T5, *TINY_STEPS, "--out", str(out), *FAST]) == 0
    finals = _finals(out)
    assert set(finals) == {"ce/0", "regression-head/0"}
    assert all(f["step"] == 4 for f in finals.values())
    assert main(["report", str(out), "-o", str(tmp_path / "rep")]) == 0
    assert "| regression-head | 1 |" in (tmp_path / "rep" / "report.md").read_text()


def test_qa2c_cartpole_end_to_end_grouped(tmp_path: Path) -> None:
    out = tmp_path / "runs"
    argv = ["run", "qa2c-cartpole", "--config", "HA2Q", "--seeds", "0-1", "--group-seeds"]
    sets = ["--set", "total_steps=300", "checkpoint_every=100"]
    assert main([*argv, *sets, "--out", str(out), *FAST]) == 0
    finals = _finals(out)
    assert set(finals) == {"HA2Q/0", "HA2Q/1"}
    summary = json.loads((out / "qa2c-cartpole/HA2Q/seed-1/summary.json").read_text())
    assert summary["params"] == 66 and 280 <= summary["last_step"] <= 300
    assert main(["report", str(out), "-o", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "| HA2Q | 2 | – | 0/2 |" in text and "| 66 |" in text
    assert (tmp_path / "rep" / "qa2c-cartpole_rewards.png").exists()


@pytest.mark.parametrize(
    ("experiment", "bad", "message"),
    [
        ("qa2c-cartpole", "total_steps=-5", "total_steps must be a positive int, got -5"),
        ("qa2c-cartpole", "total_steps=0", "total_steps must be a positive int, got 0"),
        ("qa2c-cartpole", "checkpoint_every=-3", "checkpoint_every must be a positive int"),
        ("qa2c-cartpole", "dtype=float16", "dtype: expected one of"),
        ("ntl-arith", "max_steps=0", "max_steps must be a positive int, got 0"),
        (
            "ntl-regression",
            "checkpoint_every=7",
            "checkpoint_every must be a multiple of log_every",
        ),
    ],
)
def test_real_experiments_declare_their_checks(
    experiment: str, bad: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 16.6: invalid values wrote a run folder first; the experiments' declared checks run
    before any folder exists."""
    assert main(["run", experiment, "--set", bad, "--out", str(tmp_path / "out")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def test_real_experiments_declare_score_progress_and_params() -> None:
    from repro.registry import count_params, load_experiment, progress_total

    cartpole = load_experiment("qa2c-cartpole")
    p = cartpole.protocol
    assert (p.score, p.score_per, p.solve_threshold, p.max_score) == (
        "charts/episodic_return",
        "episode",
        475.0,
        500.0,
    )
    assert count_params(p, cartpole.configs["HA2Q"]) == 66  # the paper's count
    assert progress_total(p, cartpole.configs["HA2Q"]) == cartpole.configs["HA2Q"].total_steps
    for name in ("ntl-arith", "ntl-regression"):
        exp = load_experiment(name)
        config = next(iter(exp.configs.values()))
        assert exp.protocol.progress_unit == "optimiser step"
        assert progress_total(exp.protocol, config) == config.max_steps
