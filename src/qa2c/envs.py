"""A pool of Gymnasium environments for a population: ``A`` agents x ``E`` environments each.

Each agent owns its own environments and random streams, so one agent's trajectory never depends
on which population it was trained in. The pool steps real Gymnasium environments (``gym.make``)
with same-step autoreset, like ``gymnasium.vector.SyncVectorEnv(autoreset_mode=SAME_STEP)``:
``step`` returns the true next observation of every environment (``final_obs``, the last state of
a finished episode) and the observation to act on next (the reset observation where an episode
ended). Terminated and truncated are kept apart (current API).

Every wrapper the environment is registered with (its entry point's, ``additional_wrappers``) is
kept: the pool steps exactly what ``gym.make(env_id)`` steps, except gymnasium's TimeLimit and its
debugging wrappers (env checker, order enforcing). The time limit, the registered
``spec.max_episode_steps`` (500 for CartPole-v1), is applied once, here, so that the whole state is
checkpointable from public attributes (the core's ``state`` and ``np_random``). Checkpoints hold
no wrapper state, so an environment is checkpointed only when every wrapper is one of gymnasium's
stateless ones (``STATELESS_WRAPPERS``); any other wrapper trains but refuses a checkpoint.

Observations and rewards must be finite: a nan or inf raises ``ValueError`` naming the environment,
the agent's seed, the environment index and the step.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

__all__ = ["STATELESS_WRAPPERS", "EnvPool", "env_seed"]

#: gymnasium wrappers that hold no state between steps: a checkpoint of the core env is complete.
STATELESS_WRAPPERS = frozenset(
    {
        "TransformReward",
        "TransformObservation",
        "TransformAction",
        "ClipReward",
        "ClipAction",
        "RescaleAction",
        "RescaleObservation",
        "DtypeObservation",
        "FlattenObservation",
        "ReshapeObservation",
    }
)


def env_seed(seed: int, env_index: int, n_envs: int) -> int:
    """Reset seed of environment ``env_index`` of the agent trained with ``seed``."""
    return seed * n_envs + env_index


class EnvPool:
    """``A x E`` environments. Observations ``(A, E, n_obs)``, rewards and flags ``(A, E)``."""

    def __init__(
        self, env_id: str, seeds: list[int], n_envs: int, n_obs: int, n_actions: int
    ) -> None:
        import gymnasium as gym
        from gymnasium import spaces

        if n_envs < 1:
            raise ValueError(f"n_envs: expected >= 1, got {n_envs}")
        try:
            spec = gym.spec(env_id)
        except gym.error.Error as e:
            raise ValueError(f"env_id: cannot make {env_id!r}: {e}") from e
        self.max_episode_steps: int | None = spec.max_episode_steps
        # the registered env with its wrappers, without TimeLimit (applied here) and without
        # gymnasium's debugging wrappers
        core_spec = dataclasses.replace(
            spec, max_episode_steps=None, order_enforce=False, disable_env_checker=True
        )
        probe = gym.make(core_spec)
        obs_space, act_space = probe.observation_space, probe.action_space
        if not isinstance(obs_space, spaces.Box) or obs_space.shape != (n_obs,):
            raise ValueError(
                f"env_id: {env_id!r} has observation space {obs_space}, but the agent expects "
                f"a Box of shape ({n_obs},)"
            )
        if not isinstance(act_space, spaces.Discrete) or int(act_space.n) != n_actions:
            raise ValueError(
                f"env_id: {env_id!r} has action space {act_space}, but the agent expects "
                f"Discrete({n_actions})"
            )
        probe.close()
        self.env_id, self.seeds, self.n_envs = env_id, list(seeds), n_envs
        self.n_obs = n_obs
        a = len(seeds)
        self.envs: list[list[Any]] = [
            [gym.make(core_spec) for _ in range(n_envs)] for _ in range(a)
        ]
        self.elapsed = np.zeros((a, n_envs), dtype=np.int64)  # steps in the current episode

    def reset(self) -> np.ndarray:
        """First reset of every environment with its seed; returns obs ``(A, E, n_obs)``."""
        obs = np.empty((len(self.seeds), self.n_envs, self.n_obs), dtype=np.float64)
        for i, (seed, row) in enumerate(zip(self.seeds, self.envs)):
            for e, env in enumerate(row):
                obs[i, e] = env.reset(seed=env_seed(seed, e, self.n_envs))[0]
        self.elapsed[:] = 0
        self._check_finite(obs, None, 0)
        return obs

    def _check_finite(self, obs: np.ndarray, reward: np.ndarray | None, step: int) -> None:
        """Raise ValueError naming the first environment with a non-finite observation/reward."""
        total = sum(obs.ravel().tolist()) + (
            0.0 if reward is None else sum(reward.ravel().tolist())
        )
        if math.isfinite(total):  # the common case, in about a microsecond
            return
        bad = ~np.isfinite(obs).all(-1)
        if reward is not None:
            bad |= ~np.isfinite(reward)
        if bad.any():  # (else only the sum of finite values overflowed)
            i, e = (int(v) for v in np.argwhere(bad)[0])
            when = "reset" if step == 0 else f"step {step}"
            raise ValueError(
                f"env_id: {self.env_id!r} returned a non-finite observation or reward at {when} "
                f"(agent seed {self.seeds[i]}, environment {e}): obs {obs[i, e].tolist()}"
                + ("" if reward is None else f", reward {float(reward[i, e])}")
            )

    def step(
        self, actions: np.ndarray, step: int = 0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Step with ``actions (A, E)``; returns next_obs, final_obs, reward, terminated, truncated.

        ``next_obs`` is what to act on next (reset observations where an episode ended);
        ``final_obs`` is the true successor state of this step (for bootstrapping). ``step``: the
        caller's step count, named in the error for a non-finite observation.
        """
        a, n = actions.shape
        final = np.empty((a, n, self.n_obs), dtype=np.float64)
        reward = np.empty((a, n), dtype=np.float64)
        term = np.zeros((a, n), dtype=bool)
        self.elapsed += 1
        trunc = (
            np.zeros((a, n), dtype=bool)
            if self.max_episode_steps is None
            else self.elapsed >= self.max_episode_steps
        )
        acts = actions.tolist()
        nxt = final
        for i, row in enumerate(self.envs):
            for e, env in enumerate(row):
                o, r, te, _, _ = env.step(acts[i][e])
                final[i, e], reward[i, e], term[i, e] = o, r, te
        self._check_finite(final, reward, step)
        done = term | trunc
        if done.any():
            nxt = final.copy()
            for i, e in zip(*np.nonzero(done)):
                nxt[i, e] = self.envs[i][e].reset()[0]
                self.elapsed[i, e] = 0
            self._check_finite(nxt, None, step)
        return nxt, final, reward, term, trunc  # as TimeLimit: truncated even if terminated

    # -- checkpointing (only public attributes of the core environments) -------------------------
    def check_checkpointable(self) -> None:
        """ValueError if a wrapper may hold state that a checkpoint of the core env would lose."""
        import gymnasium as gym

        layer = self.envs[0][0]
        while isinstance(layer, gym.Wrapper):
            name, module = type(layer).__name__, type(layer).__module__
            if name not in STATELESS_WRAPPERS or not module.startswith("gymnasium."):
                raise ValueError(
                    f"env_id: cannot checkpoint {self.env_id!r}: its wrapper {module}.{name} may "
                    "hold state a checkpoint would lose (train without checkpoints, or register "
                    "the env without it)"
                )
            layer = layer.env

    def member_state(self, i: int) -> dict[str, Any]:
        """Plain-data state of agent ``i``'s environments."""
        self.check_checkpointable()
        envs = []
        for wrapped in self.envs[i]:
            env = wrapped.unwrapped
            if not hasattr(env, "state"):
                raise ValueError(
                    f"env_id: cannot checkpoint {self.env_id!r} (no `state` attribute)"
                )
            state = env.state
            envs.append(
                {
                    "state": None
                    if state is None
                    else np.asarray(state, dtype=np.float64).tolist(),
                    "steps_beyond_terminated": getattr(env, "steps_beyond_terminated", None),
                    "rng": env.np_random.bit_generator.state,
                }
            )
        return {"envs": envs, "elapsed": self.elapsed[i].tolist()}

    def load_member_state(self, i: int, state: dict[str, Any]) -> None:
        envs = state["envs"]
        if len(envs) != self.n_envs:
            raise ValueError(f"state: expected {self.n_envs} environments, got {len(envs)}")
        for wrapped, s in zip(self.envs[i], envs):
            wrapped.reset(seed=0)  # creates np_random; everything is overwritten below
            env = wrapped.unwrapped
            env.state = None if s["state"] is None else np.array(s["state"], dtype=np.float64)
            if hasattr(env, "steps_beyond_terminated"):
                env.steps_beyond_terminated = s["steps_beyond_terminated"]
            rng = np.random.Generator(np.random.PCG64())
            rng.bit_generator.state = s["rng"]
            env.np_random = rng
        self.elapsed[i] = np.asarray(state["elapsed"], dtype=np.int64)
