"""JAX-native environments (gymnax) with Gymnasium's semantics.

``gymnax`` 1.0 keeps termination and truncation apart (``is_truncated``: the step count reached
``max_steps_in_episode``) and returns the true successor as ``info["final_observation"]`` before
its same-step auto-reset, so the A2C update bootstraps through a time-limit truncation exactly as
with Gymnasium. Its CartPole-v1 and Acrobot-v1 physics equal Gymnasium's to float64 round-off
(``tests/qa2c/test_jax_envs.py``); only the reset streams differ (JAX keys, not NumPy seeds).
Observations are rounded to float32 as Gymnasium's are; the physics state stays float64.
"""

from __future__ import annotations

from typing import Any

__all__ = ["JAX_ENV_IDS", "make_env"]

#: Gymnasium ids with a JAX version here (gymnax names them the same).
JAX_ENV_IDS: tuple[str, ...] = ("CartPole-v1", "Acrobot-v1")


def make_env(env_id: str) -> tuple[Any, Any]:
    """``(env, env_params)`` of a gymnax environment with Gymnasium's time limit."""
    import gymnax

    if env_id not in JAX_ENV_IDS:
        raise ValueError(
            f"env_id: no JAX version of {env_id!r} (have {', '.join(JAX_ENV_IDS)}); "
            "use engine='torch' for other Gymnasium environments"
        )
    env, params = gymnax.make(env_id)
    return env, params
