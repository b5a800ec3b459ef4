"""The JAX engine's A2C update equals the torch engine's (qa2c.a2c.A2C.learn), float64.

Same initial weights, the same transitions, several consecutive updates (so Adam's moments and
bias corrections are compared too); every paper agent with the paper's algorithm and the improved
configurations (n-envs, GAE, normalisation, clipping, annealing, entropy). Compared on the live
weights; light-cone-dead weights must not move at all in the JAX engine.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("gymnax")
pytest.importorskip("optax")

import jax.numpy as jnp

import qa2c.jax_engine  # noqa: F401
from qa2c.a2c import A2C
from qa2c.agents import AGENT_NAMES
from qa2c.experiments.cartpole import CONFIGS, CartPoleConfig, make_agent
from qa2c.jax_engine.a2c import Batch, layout, make_optimizer, make_update
from qa2c.jax_engine.heads import agent_fns

UPDATES = 3

# The improved configurations at a test's size (2 envs x 4 steps; their learning rate 0.01,
# annealed over 200 steps so that every update sees another rate).
_SMALL = dict(n_envs=2, n_steps=4, lr_anneal_steps=200)


def _tweak(
    config: CartPoleConfig, agent: dict[str, Any] | None = None, **a2c: Any
) -> CartPoleConfig:
    """``config`` with some agent and algorithm fields replaced."""
    return dataclasses.replace(
        config,
        agent=dataclasses.replace(config.agent, **(agent or {})),
        a2c=dataclasses.replace(config.a2c, **a2c),
    )


_CASES = {
    **{name: CONFIGS[name] for name in AGENT_NAMES},
    "Q2Q-improved": _tweak(CONFIGS["Q2Q-improved"], **_SMALL),
    "A2C-improved": _tweak(CONFIGS["A2C-improved"], **_SMALL),
    # entropy bonus, GAE without normalisation, two envs, angle-free improved circuit options
    "HQ2Q-ent-gae": _tweak(
        CONFIGS["HQ2Q"], ent_coef=0.01, n_envs=2, n_steps=3, gae_lambda=0.9, max_grad_norm=0.3
    ),
    "Q2C-reupload": _tweak(
        CONFIGS["Q2C"], {"n_layers": 3, "reupload": True, "input_scaling": True}, lr_anneal_steps=4
    ),
}


def _transitions(rng: np.random.Generator, t: int, e: int) -> dict[str, np.ndarray]:
    shape = (1, t, e)
    term = rng.random(shape) < 0.2
    trunc = ~term & (rng.random(shape) < 0.2)
    return {
        "obs": rng.normal(size=(*shape, 4)) * 0.5,
        "actions": rng.integers(0, 2, size=shape),
        "rewards": np.ones(shape),
        "next_obs": rng.normal(size=(*shape, 4)) * 0.5,
        "terminated": term,
        "truncated": trunc,
        "episode_steps": rng.integers(0, 400, size=shape),
    }


@pytest.mark.parametrize("case", list(_CASES))
def test_update_matches_torch(case: str) -> None:
    config = dataclasses.replace(_CASES[case], dtype="float64", seed=5)
    algo = config.a2c
    agent = make_agent(config, warn=False)
    learner = A2C([agent], [config.seed], algo)
    fns = agent_fns(agent)
    lay = layout(fns)
    flat = jnp.asarray(lay.init)
    opt = make_optimizer(algo, lay.actor).init(flat)
    update = make_update(fns, algo, lay)  # eager: cheaper than compiling 13 programs
    rng = np.random.default_rng(0)
    t, e = algo.n_steps, algo.n_envs
    for k in range(UPDATES):
        tr = _transitions(rng, t, e)
        learner.vec_steps = (k + 1) * t  # the annealing reads the steps taken, as in iterate()
        ref_losses = learner.learn(**tr)
        b = Batch(
            obs=jnp.asarray(tr["obs"][0]),
            actions=jnp.asarray(tr["actions"][0]),
            rewards=jnp.asarray(tr["rewards"][0]),
            next_obs=jnp.asarray(tr["next_obs"][0]),
            terminated=jnp.asarray(tr["terminated"][0]),
            done=jnp.asarray(tr["terminated"][0] | tr["truncated"][0]),
            disc=jnp.asarray(algo.gamma ** tr["episode_steps"][0].astype(np.float64)),
        )
        flat, opt, losses = update(flat, opt, b)
        np.testing.assert_allclose(
            np.asarray(losses), [float(x[0]) for x in ref_losses], rtol=1e-10, atol=1e-12
        )
    params = lay.unravel(flat)
    for role in ("actor", "critic"):
        ref = getattr(learner, f"{role}_params")
        init = getattr(fns, f"{role}_params")
        moved = 0.0
        for name, value in params[role].items():
            got, want = np.asarray(value), ref[name][0].detach().numpy()
            dead = fns.dead[role].get(name, np.zeros(got.shape, bool))
            assert np.abs(got - want)[~dead].max() <= 1e-9, (role, name)
            moved = max(moved, float(np.abs(got - init[name]).max()))
            # dead weights: exactly zero gradient, so Adam leaves them exactly where they were
            np.testing.assert_array_equal(got[dead], init[name][dead])
        assert moved > 1e-6, (role, "did not learn")


def test_optax_adam_equals_torch_adam() -> None:
    """The engine's one Adam over the flat vector (optax) against torch.optim.Adam with two
    parameter groups (the actor's and the critic's learning rates): same update rule."""
    from qa2c.a2c import A2CConfig

    rng = np.random.default_rng(1)
    p0 = rng.normal(size=(7,))
    actor = np.arange(7) < 3
    tx = make_optimizer(A2CConfig(lr_actor=1e-2, lr_critic=3e-3), actor)
    p = jnp.asarray(p0)
    state = tx.init(p)
    ta, tc = torch.tensor(p0[:3], requires_grad=True), torch.tensor(p0[3:], requires_grad=True)
    opt = torch.optim.Adam([{"params": [ta], "lr": 1e-2}, {"params": [tc], "lr": 3e-3}])
    for _ in range(50):
        g = rng.normal(size=(7,)) * rng.choice([1e-9, 1.0, 1e3])
        upd, state = tx.update(jnp.asarray(g), state, p)
        p = p + upd
        ta.grad, tc.grad = torch.tensor(g[:3]), torch.tensor(g[3:])
        opt.step()
    want = np.concatenate([ta.detach().numpy(), tc.detach().numpy()])
    np.testing.assert_allclose(np.asarray(p), want, rtol=0, atol=1e-13)
