"""The CartPole experiment module: protocol, smoke run per config, run_many ≡ run, resume."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from qa2c.experiments.cartpole import CONFIGS as _ALL_CONFIGS
from qa2c.experiments.cartpole import CartPoleConfig as _Config
from qa2c.experiments.cartpole import curve_stats, make_agent, run, run_many

# This module tests the torch engine (the reference); the JAX engine: tests/qa2c/test_jax_*.py
CONFIGS = {k: dataclasses.replace(c, engine="torch") for k, c in _ALL_CONFIGS.items()}


def CartPoleConfig(**kwargs: Any) -> _Config:
    return _Config(**{"engine": "torch", **kwargs})


def _strip(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "wall_time"}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_smoke_each_config(name: str, tmp_path: Path) -> None:
    cfg = dataclasses.replace(CONFIGS[name], total_steps=150, checkpoint_every=100)
    rows = list(run(cfg, tmp_path))
    assert rows, "CartPole episodes under a random-ish policy end well within 150 steps"
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps))
    for r in rows:
        json.dumps(r)  # flat, JSON-serialisable
        assert r["charts/episodic_return"] > 0 and r["charts/episodic_length"] >= 1
    quantum = (
        make_agent(cfg, warn=False).actor.circuits_per_input
        + make_agent(cfg, warn=False).critic.circuits_per_input
    )
    assert (rows[-1]["circuit_calls"] > 0) == (quantum > 0)
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert state["vec_steps"] * cfg.n_envs >= 150


def test_configs_cover_the_paper() -> None:
    for name in ("A2C", "A2Q", "Q2C", "Q2Q", "A2C5", "HA2Q", "HQ2C", "HQ2Q"):
        cfg = CONFIGS[name]
        assert cfg.agent == name and cfg.lr_actor == cfg.lr_critic == 1e-4 and cfg.gamma == 0.99
        assert cfg.n_envs == cfg.n_steps == 1 and cfg.discount_actor and cfg.seed == 0
    improved = [c for n, c in CONFIGS.items() if "improved" in n]
    assert improved and all(c.agent == "Q2Q" for c in improved if c.agent.startswith("Q"))


def test_run_many_equals_run(tmp_path: Path) -> None:
    base = dataclasses.replace(CONFIGS["HQ2Q"], total_steps=300, dtype="float64")
    cfgs = [dataclasses.replace(base, seed=s) for s in (0, 1)]
    got: dict[int, list[dict[str, Any]]] = {0: [], 1: []}
    for i, row in run_many(cfgs, [tmp_path / "m0", tmp_path / "m1"]):
        got[i].append(_strip(row))
    for i, c in enumerate(cfgs):
        alone = [_strip(r) for r in run(c, tmp_path / f"a{i}")]
        assert [r["charts/episodic_length"] for r in alone] == [
            r["charts/episodic_length"] for r in got[i]
        ]
        for ra, rb in zip(alone, got[i]):
            assert ra["losses/critic"] == pytest.approx(rb["losses/critic"], rel=1e-9)


def test_run_resumes(tmp_path: Path) -> None:
    cfg = dataclasses.replace(CONFIGS["HA2Q"], total_steps=400, checkpoint_every=100, seed=3)
    full = [_strip(r) for r in run(cfg, tmp_path / "full")]
    part = []
    for r in run(cfg, tmp_path / "cut"):
        part.append(r)
        if r["step"] > 250:
            break
    last = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)["vec_steps"]
    resumed = [_strip(r) for r in run(cfg, tmp_path / "cut")]
    assert resumed == [r for r in full if r["step"] > last]


def test_bad_configs(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="agent"):
        list(run(CartPoleConfig(agent="DQN"), tmp_path))
    with pytest.raises(ValueError, match="n_layers"):
        list(run(CartPoleConfig(agent="A2C", n_layers=3), tmp_path))
    with pytest.raises(ValueError, match="differ only in seed"):
        list(
            run_many(
                [CartPoleConfig(), CartPoleConfig(seed=1, lr_actor=1e-3)],
                [tmp_path / "a", tmp_path / "b"],
            )
        )
    with pytest.raises(ValueError, match="observation space"):
        list(run(CartPoleConfig(agent="A2C", env_id="Acrobot-v1"), tmp_path))


def test_curve_stats_by_hand() -> None:
    rets = [10.0] * 5 + [500.0] * 4 + [20.0]
    rows, step = [], 0
    for g in rets:
        step += int(g)
        rows.append({"step": step, "charts/episodic_return": g})
    st = curve_stats(rows, window=4, threshold=475.0, tail=2)
    assert st["first_500_step"] == 50 + 500
    assert st["solved_step"] == 50 + 2000  # the 4th 500 completes the first window >= 475
    assert st["best_ma"] == 500.0 and st["mean_last"] == 260.0
    assert st["episodes"] == 10 and st["steps"] == 50 + 2000 + 20
    assert curve_stats([], window=4)["solved_step"] is None
