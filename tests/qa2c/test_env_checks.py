"""Environments as registered (wrappers kept, time limit once), non-finite data, API validation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.envs.classic_control.cartpole import CartPoleEnv

from qa2c.agents import build_agent
from qa2c.envs import EnvPool, env_seed
from qa2c.train import load_checkpoint, train

SCALED = "qa2c-test/ScaledCartPole-v0"
NAN = "qa2c-test/NaNCartPole-v0"
NORMALIZED = "qa2c-test/NormalizedCartPole-v0"


def _scaled_cartpole() -> gym.Env[Any, Any]:
    """CartPole with reward x10 and observations x2, the wrappers set by the entry point."""
    core = CartPoleEnv()
    env = gym.wrappers.TransformReward(core, lambda r: 10.0 * r)
    return gym.wrappers.TransformObservation(env, lambda o: 2.0 * o, core.observation_space)


class _NaNAfter(CartPoleEnv):
    """CartPole whose observations become nan from its ``after``-th step on (over all episodes)."""

    def __init__(self, after: int = 30) -> None:
        super().__init__()
        self.after, self.count = after, 0

    def step(self, action: Any) -> Any:
        obs, rew, term, trunc, info = super().step(action)
        self.count += 1
        if self.count >= self.after:
            obs = obs * np.nan
        return obs, rew, term, trunc, info


if SCALED not in gym.registry:
    gym.register(SCALED, entry_point=_scaled_cartpole, max_episode_steps=8)
if NAN not in gym.registry:
    gym.register(NAN, entry_point=_NaNAfter, max_episode_steps=500)
if NORMALIZED not in gym.registry:  # a wrapper with running statistics: state of its own
    gym.register(
        NORMALIZED,
        entry_point=lambda: gym.wrappers.NormalizeObservation(CartPoleEnv()),
        max_episode_steps=500,
    )


def test_env_pool_steps_the_registered_env_with_its_wrappers() -> None:
    pool = EnvPool(SCALED, [3], 1, 4, 2)
    ref = gym.make(SCALED)  # reward and observation wrappers, TimeLimit(8)
    obs = pool.reset()
    ref_obs, _ = ref.reset(seed=env_seed(3, 0, 1))
    np.testing.assert_array_equal(obs[0, 0], ref_obs)
    rng = np.random.default_rng(0)
    truncations = 0
    for t in range(60):
        a = int(rng.integers(2))
        nxt, final, rew, term, trunc = pool.step(np.array([[a]]), t + 1)
        o, r, te, tr, _ = ref.step(a)
        np.testing.assert_array_equal(final[0, 0], o)
        assert (rew[0, 0], term[0, 0], trunc[0, 0]) == (r, te, tr)
        assert r == 10.0
        if te or tr:
            truncations += int(tr)
            o, _ = ref.reset()
        np.testing.assert_array_equal(nxt[0, 0], o)
    assert truncations > 0  # the time limit fired, once per episode, at the registered step


def test_training_sees_the_wrapped_rewards() -> None:
    agent = build_agent("A2C", seed=0, warn=False)
    rows = list(train(agent, 200, seed=0, env_id=SCALED))
    assert rows and all(r["charts/episodic_length"] <= 8 for r in rows)
    for r in rows:
        assert r["charts/episodic_return"] == 10.0 * r["charts/episodic_length"]


@pytest.mark.parametrize("name", ["A2C5", "HA2Q", "Q2Q"])
def test_nan_observation_stops_training_and_keeps_the_checkpoint(name: str, tmp_path: Path) -> None:
    agent = build_agent(name, seed=0, warn=False)
    path = tmp_path / "ckpt.pt"
    with pytest.raises(ValueError, match=r"qa2c-test/NaNCartPole-v0.*step 30 .*seed 4"):
        for _ in train(agent, 100, seed=4, env_id=NAN, checkpoint_path=path, checkpoint_every=10):
            pass
    state = load_checkpoint(path)
    assert state["vec_steps"] == 20  # the last save before the bad step
    for role in ("actor", "critic"):
        assert all(bool(torch.isfinite(p).all()) for p in state[role].values())


def test_train_validates_its_arguments_at_the_call() -> None:
    agent = build_agent("A2C", seed=0, warn=False)
    with pytest.raises(ValueError, match="seed: expected an int >= 0, got -1"):
        train(agent, 50, seed=-1)
    with pytest.raises(TypeError, match="seed: expected an int, got str"):
        train(agent, 50, seed="0")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="total_steps: expected an int, got float"):
        train(agent, 50.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="total_steps"):
        train(agent, 0)
    numpy_rows = list(train(agent, np.int64(60), seed=np.int64(1)))  # type: ignore[arg-type]
    assert numpy_rows and all(isinstance(r["step"], int) for r in numpy_rows)
    plain = list(train(agent, 60, seed=1))
    assert [r["charts/episodic_return"] for r in numpy_rows] == [
        r["charts/episodic_return"] for r in plain
    ]
    with torch.no_grad():
        agent.critic.get_parameter("l2.bias")[0] = float("nan")
    with pytest.raises(ValueError, match=r"critic parameter 'l2\.bias' has non-finite"):
        train(agent, 50)


def _returns(rows: list[dict[str, Any]]) -> list[tuple[int, float]]:
    return [(r["step"], r["charts/episodic_return"]) for r in rows]


def test_wrapped_env_resumes_identically(tmp_path: Path) -> None:
    agent = build_agent("A2C", seed=0, warn=False, dtype=torch.float64)
    full = list(train(agent, 300, seed=2, env_id=SCALED))
    path = tmp_path / "ckpt.pt"
    for row in train(agent, 300, seed=2, env_id=SCALED, checkpoint_path=path, checkpoint_every=50):
        if row["step"] > 160:
            break
    done = load_checkpoint(path)["vec_steps"]
    resumed = list(train(agent, 300, seed=2, env_id=SCALED, checkpoint_path=path))
    assert resumed and _returns(resumed) == [r for r in _returns(full) if r[0] > done]


def test_stateful_wrapper_refuses_a_checkpoint_before_training(tmp_path: Path) -> None:
    agent = build_agent("A2C", seed=0, warn=False)
    assert list(train(agent, 50, env_id=NORMALIZED))  # trains without checkpoints
    path = tmp_path / "ckpt.pt"
    with pytest.raises(ValueError, match="NormalizeObservation may hold state"):
        next(train(agent, 50, env_id=NORMALIZED, checkpoint_path=path, checkpoint_every=10))
    assert not path.exists()
