"""The CartPole experiment module: protocol, smoke run per config, run_many ≡ run, resume."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from qa2c.a2c import A2CConfig
from qa2c.agents import AgentConfig
from qa2c.experiments.cartpole import CONFIGS as _ALL_CONFIGS
from qa2c.experiments.cartpole import (
    PROTOCOL,
    curve_stats,
    make_agent,
    run,
    run_many,
    upgrade_config,
)
from qa2c.experiments.cartpole import CartPoleConfig as _Config

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
    assert state["vec_steps"] * cfg.a2c.n_envs >= 150


def test_configs_cover_the_paper() -> None:
    for name in ("A2C", "A2Q", "Q2C", "Q2Q", "A2C5", "HA2Q", "HQ2C", "HQ2Q"):
        cfg = CONFIGS[name]
        assert cfg.agent == AgentConfig(name) and cfg.a2c == A2CConfig() and cfg.seed == 0
        a2c = cfg.a2c
        assert a2c.lr_actor == a2c.lr_critic == 1e-4 and a2c.gamma == 0.99
        assert a2c.n_envs == a2c.n_steps == 1 and a2c.discount_actor
    improved = [c for n, c in CONFIGS.items() if "improved" in n]
    assert {c.agent.name for c in improved} == {"Q2Q", "A2C"}
    assert all(c.a2c == improved[0].a2c and c.a2c.n_envs == 16 for c in improved)


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
        list(run(CartPoleConfig(agent=AgentConfig("DQN")), tmp_path))
    with pytest.raises(ValueError, match="n_layers"):
        list(run(CartPoleConfig(agent=AgentConfig("A2C", n_layers=3)), tmp_path))
    with pytest.raises(
        ValueError, match=r"differ only in seed; \{'a2c.lr_actor': \(0.0001, 0.001\)"
    ):
        list(
            run_many(
                [CartPoleConfig(), CartPoleConfig(seed=1, a2c=A2CConfig(lr_actor=1e-3))],
                [tmp_path / "a", tmp_path / "b"],
            )
        )
    with pytest.raises(ValueError, match="observation space"):
        list(run(CartPoleConfig(agent=AgentConfig("A2C"), env_id="Acrobot-v1"), tmp_path))


def test_validate_rejects_an_unknown_engine() -> None:
    """The runner's check before any run folder exists (before: engine="tpu" passed it, the
    folder and its config.json were written, and the run failed only when it started)."""
    with pytest.raises(ValueError, match="engine"):
        PROTOCOL["validate"](dataclasses.replace(CONFIGS["A2C"], engine="tpu"))


def test_validate_rejects_what_the_jax_engine_cannot_run() -> None:
    """Before: these passed the check, and the run failed only after its folder existed."""
    pytest.importorskip("gymnax")
    jax_cfg = dataclasses.replace(CONFIGS["A2C"], engine="jax")
    with pytest.raises(ValueError, match="MountainCar-v0"):
        PROTOCOL["validate"](dataclasses.replace(jax_cfg, env_id="MountainCar-v0"))
    pytest.importorskip("pennylane")
    pennylane = dataclasses.replace(
        jax_cfg, agent=AgentConfig("Q2Q", backend="pennylane"), dtype="float64"
    )
    with pytest.raises(ValueError, match="pennylane"):
        PROTOCOL["validate"](pennylane)
    PROTOCOL["validate"](dataclasses.replace(pennylane, engine="torch"))  # fine there


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


# config.json of a Q2Q-improved run (seed 3, torch engine) as the flat CartPoleConfig of earlier
# releases wrote it (dataclasses.asdict of that config)
_FLAT_Q2Q_IMPROVED: dict[str, Any] = {
    "seed": 3,
    "agent": "Q2Q",
    "total_steps": 200000,
    "checkpoint_every": 50000,
    "env_id": "CartPole-v1",
    "dtype": "float32",
    "hidden": 0,
    "n_layers": 4,
    "reupload": True,
    "input_scaling": True,
    "actor_readout": "z",
    "critic_readout": "z",
    "actor_scale": 4.0,
    "critic_scale": 50.0,
    "trainable_scale": True,
    "gamma": 0.99,
    "lr_actor": 0.01,
    "lr_critic": 0.01,
    "n_envs": 16,
    "n_steps": 16,
    "gae_lambda": 0.95,
    "discount_actor": False,
    "ent_coef": 0.0,
    "normalize_advantage": True,
    "max_grad_norm": 0.5,
    "lr_anneal_steps": 200000,
    "engine": "torch",
}


def _json(config: _Config) -> dict[str, Any]:
    """What a run folder's config.json holds for ``config``."""
    out: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(config)))
    return out


def test_config_nests_agent_and_algorithm_once() -> None:
    """Every agent and algorithm field is declared once, in AgentConfig / A2CConfig."""
    top = {f.name for f in dataclasses.fields(_Config)}
    nested = {f.name for c in (AgentConfig, A2CConfig) for f in dataclasses.fields(c)}
    assert top == {
        "seed",
        "agent",
        "a2c",
        "total_steps",
        "checkpoint_every",
        "env_id",
        "dtype",
        "engine",
    }
    assert not top & nested
    cfg = _ALL_CONFIGS["Q2Q-improved"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.a2c.n_envs = 2  # type: ignore[misc]
    rebuilt = _Config(
        **{
            **_json(cfg),
            "agent": AgentConfig(**_json(cfg)["agent"]),
            "a2c": A2CConfig(**_json(cfg)["a2c"]),
        }
    )
    assert rebuilt == cfg


def test_upgrade_config_reads_the_flat_shape() -> None:
    nested = _json(dataclasses.replace(CONFIGS["Q2Q-improved"], seed=3))
    assert upgrade_config(dict(_FLAT_Q2Q_IMPROVED)) == nested
    assert upgrade_config(nested) is nested  # the current shape passes through
    # written before the JAX engine existed: no engine field, those runs used torch
    pre_engine = {k: v for k, v in _FLAT_Q2Q_IMPROVED.items() if k != "engine"}
    assert upgrade_config(pre_engine) == nested
    # a field that is no longer known stays where it was (the runner then reports a mismatch)
    assert upgrade_config({**_FLAT_Q2Q_IMPROVED, "gone": 1})["gone"] == 1
    assert upgrade_config({**_FLAT_Q2Q_IMPROVED, "lr_actor": 0.5})["a2c"]["lr_actor"] == 0.5
