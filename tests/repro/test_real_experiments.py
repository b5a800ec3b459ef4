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
        ("qa2c-cartpole", "a2c.n_envs=0", "a2c.n_envs must be a positive int, got 0"),
        ("qa2c-cartpole", "a2c.gamma=1.5", "gamma: expected in [0, 1], got 1.5"),
        ("qa2c-cartpole", "agent.actor_readout=z", "actor_readout: applies to a pure quantum"),
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


_QA2C_TINY = ["total_steps=96", "checkpoint_every=32", "engine=torch"]


def test_qa2c_nested_config_round_trips_through_config_json(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Nested ``--set`` keys land in config.json's nested objects; the same command finds the
    finished run (its config.json equals the config); another nested value is a mismatch that
    names the dotted key."""
    from qa2c.a2c import A2CConfig
    from qa2c.agents import AgentConfig
    from qa2c.experiments.cartpole import CONFIGS, CartPoleConfig, make_agent
    from repro.overrides import apply_overrides

    out = tmp_path / "runs"
    sets = [*_QA2C_TINY, "a2c.n_envs=2", "a2c.n_steps=4", "a2c.gae_lambda=0.9"]
    sets += ["agent.n_layers=3", "agent.obs_scale=1 1 0.5 0.5"]
    argv = ["run", "qa2c-cartpole", "--config", "HQ2Q", "--out", str(out), *FAST]
    assert main([*argv, "--set", *sets]) == 0
    run_dir = out / "qa2c-cartpole/HQ2Q/seed-0"
    stored = json.loads((run_dir / "config.json").read_text())
    assert stored["a2c"]["n_envs"] == 2 and stored["agent"]["obs_scale"] == [1.0, 1.0, 0.5, 0.5]
    agent = {**stored["agent"], "obs_scale": tuple(stored["agent"]["obs_scale"])}
    rebuilt = CartPoleConfig(
        **{**stored, "agent": AgentConfig(**agent), "a2c": A2CConfig(**stored["a2c"])}
    )
    assert rebuilt == apply_overrides(CONFIGS["HQ2Q"], sets)
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["params"] == make_agent(rebuilt, warn=False).num_parameters() == 2 * 36 + 10 + 5
    before = (run_dir / "config.json").read_bytes()
    capsys.readouterr()
    assert main([*argv, "--set", *sets]) == 0
    assert "1 skipped" in capsys.readouterr().out
    assert main([*argv, "--set", *sets[:-1], "agent.obs_scale=1 1 1 1"]) == 2
    assert (
        "agent.obs_scale: [1.0, 1.0, 0.5, 0.5] -> [1.0, 1.0, 1.0, 1.0]" in capsys.readouterr().err
    )
    assert (run_dir / "config.json").read_bytes() == before


# What the flat CartPoleConfig of earlier releases wrote into config.json for HA2Q with
# _QA2C_TINY (dataclasses.asdict of that config; the engine field came with the JAX engine).
_FLAT_HA2Q = {
    "seed": 0,
    "agent": "HA2Q",
    "total_steps": 96,
    "checkpoint_every": 32,
    "env_id": "CartPole-v1",
    "dtype": "float32",
    "hidden": 0,
    "n_layers": 2,
    "reupload": False,
    "input_scaling": False,
    "actor_readout": "paper",
    "critic_readout": "paper",
    "actor_scale": 1.0,
    "critic_scale": 1.0,
    "trainable_scale": False,
    "gamma": 0.99,
    "lr_actor": 0.0001,
    "lr_critic": 0.0001,
    "n_envs": 1,
    "n_steps": 1,
    "gae_lambda": 1.0,
    "discount_actor": True,
    "ent_coef": 0.0,
    "normalize_advantage": False,
    "max_grad_norm": 0.0,
    "lr_anneal_steps": 0,
    "engine": "torch",
}


def test_qa2c_flat_run_folder_resumes_unchanged(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A run folder interrupted under the flat config resumes (its config.json read through
    the experiment's ``upgrade_config``, never rewritten) to the rows of an uninterrupted run;
    a flat config that differs is a mismatch naming the dotted key."""
    import dataclasses

    import torch

    from qa2c.experiments.cartpole import CONFIGS, run
    from repro.storage import MetricsWriter, read_metrics

    cfg = dataclasses.replace(CONFIGS["HA2Q"], total_steps=96, checkpoint_every=32, engine="torch")
    out = tmp_path / "runs"
    run_dir = out / "qa2c-cartpole/HA2Q/seed-0"
    with MetricsWriter(run_dir / "metrics.jsonl") as log:  # the interrupted run's files
        for row in run(cfg, run_dir):
            log.append(row)
            if row["step"] > 50:
                break
    stopped = int(torch.load(run_dir / "checkpoint.pt", weights_only=True)["vec_steps"])
    assert 32 <= stopped < 96
    (run_dir / "config.json").write_text(json.dumps(_FLAT_HA2Q, indent=2))
    before = (run_dir / "config.json").read_bytes()
    argv = ["run", "qa2c-cartpole", "--config", "HA2Q", "--set", *_QA2C_TINY, *FAST]
    assert main([*argv, "--out", str(out)]) == 0
    assert (run_dir / "config.json").read_bytes() == before
    resumed = [
        {k: v for k, v in r.items() if k != "wall_time"}
        for r in read_metrics(run_dir / "metrics.jsonl")
    ]
    fresh = [{k: v for k, v in r.items() if k != "wall_time"} for r in run(cfg, tmp_path / "fresh")]
    assert resumed == fresh
    other = out / "qa2c-cartpole/HA2Q/seed-1"
    other.mkdir()
    (other / "config.json").write_text(json.dumps({**_FLAT_HA2Q, "seed": 1, "lr_actor": 0.001}))
    capsys.readouterr()
    assert main([*argv, "--seeds", "1", "--out", str(out)]) == 2
    assert "a2c.lr_actor: 0.001 -> 0.0001" in capsys.readouterr().err
