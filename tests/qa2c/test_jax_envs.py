"""gymnax's CartPole-v1 and Acrobot-v1 against Gymnasium's (float64), and the time limit.

The JAX engine steps gymnax environments; these tests hold the physics to Gymnasium's within
1e-12 from identical states under the same actions, and check that reaching the time limit is a
truncation (bootstrapped), never a termination, with the true successor state kept.
"""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("gymnax")
gym = pytest.importorskip("gymnasium")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import qa2c.jax_engine  # noqa: E402, F401
from qa2c.jax_engine.envs import make_env  # noqa: E402

_ENVS = {name: make_env(name) for name in ("CartPole-v1", "Acrobot-v1")}
_TEMPLATES = {name: env.reset(jax.random.PRNGKey(0), p)[1] for name, (env, p) in _ENVS.items()}


def _cartpole_state(s: np.ndarray, time: int) -> object:
    st = _TEMPLATES["CartPole-v1"]
    return st.replace(
        x=jnp.float64(s[0]), x_dot=jnp.float64(s[1]), theta=jnp.float64(s[2]),
        theta_dot=jnp.float64(s[3]), time=jnp.asarray(time, dtype=st.time.dtype),
    )  # fmt: skip


def _acrobot_state(s: np.ndarray, time: int) -> object:
    st = _TEMPLATES["Acrobot-v1"]
    return st.replace(
        joint_angle1=jnp.float64(s[0]), joint_angle2=jnp.float64(s[1]),
        velocity_1=jnp.float64(s[2]), velocity_2=jnp.float64(s[3]),
        time=jnp.asarray(time, dtype=st.time.dtype),
    )  # fmt: skip


def _vector(env_id: str, st: object) -> np.ndarray:
    names = (
        ("x", "x_dot", "theta", "theta_dot")
        if env_id == "CartPole-v1"
        else ("joint_angle1", "joint_angle2", "velocity_1", "velocity_2")
    )
    return np.array([float(getattr(st, n)) for n in names])


@pytest.mark.parametrize("env_id", ["CartPole-v1", "Acrobot-v1"])
def test_physics_equal_gymnasium(env_id: str) -> None:
    env, params = _ENVS[env_id]
    step = jax.jit(env.step_env)
    make_state = _cartpole_state if env_id == "CartPole-v1" else _acrobot_state
    ref = gym.make(env_id).unwrapped
    rng = np.random.default_rng(0)
    worst, terminations = 0.0, 0
    ref.reset(seed=1)
    for _ in range(300):
        s = np.asarray(ref.state, dtype=np.float64)
        a = int(rng.integers(0, env.num_actions))
        obs, r, term, _, _ = ref.step(a)
        _, st, jr, jterm, _ = step(jax.random.PRNGKey(0), make_state(s, 1), a, params)
        worst = max(worst, float(np.abs(_vector(env_id, st) - np.asarray(ref.state)).max()))
        assert bool(jterm) == term and float(jr) == r
        jobs = np.asarray(env.get_obs(st, params))
        np.testing.assert_allclose(jobs.astype(np.float32), obs, rtol=1e-6, atol=1e-6)
        if term:
            terminations += 1
            ref.reset(seed=int(rng.integers(1 << 30)))
    assert worst <= 1e-12, worst
    assert terminations >= 2 or env_id == "Acrobot-v1"


def test_time_limit_truncates_and_keeps_the_successor() -> None:
    env, params = _ENVS["CartPole-v1"]
    assert params.max_steps_in_episode == gym.make("CartPole-v1").spec.max_episode_steps
    s = np.array([0.01, 0.0, 0.01, 0.0])
    st = _cartpole_state(s, params.max_steps_in_episode - 1)
    obs, new, r, term, trunc, info = env.step(jax.random.PRNGKey(3), st, 1, params)
    assert bool(trunc) and not bool(term)  # the limit bootstraps: not a termination
    assert float(r) == 1.0
    final = np.asarray(info["final_observation"])
    assert abs(final[0] - 0.01) < 1e-3 and int(new.time) == 0  # successor kept, env reset
    assert not np.allclose(np.asarray(obs), final)
    # one step earlier: neither
    st = _cartpole_state(s, params.max_steps_in_episode - 2)
    _, _, _, term, trunc, _ = env.step(jax.random.PRNGKey(3), st, 1, params)
    assert not bool(trunc) and not bool(term)
