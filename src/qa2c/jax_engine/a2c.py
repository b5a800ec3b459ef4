"""Advantage actor-critic in JAX, top to bottom: one agent's update and a population's iteration.

The same algorithm as the torch engine's ``qa2c.a2c.A2C`` (the reference; defaults = the paper):
``δ = r + γ (1 - terminated) V(s') - V(s)`` with ``V(s')`` a fixed target (time-limit truncation
bootstraps), GAE(λ) over ``n_steps``-step rollouts of ``n_envs`` environments, actor loss
``-mean(w · log π(a|s)) - c_ent · mean(H)`` with ``w`` the (optionally per-agent normalised)
advantage times ``I = γ^t`` (``discount_actor``), critic loss ``mean((R - V(s))²)``, per-head
gradient clipping, and the two heads' Adams (``optax.scale_by_adam``: torch.optim.Adam's update,
eps outside the square root after bias correction) as one Adam over the agent's flat parameter
vector with per-entry learning rates, annealed linearly with the environment steps taken before
the update. The update is one agent's; ``make_population_step`` vmaps it over a population, and
``qa2c.jax_engine.train`` loops that with ``lax``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.flatten_util import ravel_pytree

from qa2c.a2c import A2CConfig
from qa2c.jax_engine.heads import AgentFns
from qa2c.jax_engine.rng import random_words, split

__all__ = [
    "Batch",
    "Carry",
    "Layout",
    "layout",
    "make_optimizer",
    "make_population_step",
    "make_update",
]

Array = jax.Array
Params = dict[str, dict[str, Array]]  # role -> name -> array


class Batch(NamedTuple):
    """One rollout of one agent: leading dims (T, E) = (n_steps, n_envs)."""

    obs: Array  # (T, E, n_obs)
    actions: Array  # (T, E) int
    rewards: Array  # (T, E)
    next_obs: Array  # (T, E, n_obs): the true successor (not a reset observation)
    terminated: Array  # (T, E) bool
    done: Array  # (T, E) bool: terminated or truncated
    disc: Array  # (T, E): I = γ^t (1 where discount_actor is off)


class Carry(NamedTuple):
    """Everything one agent carries from iteration to iteration."""

    params: Array  # (N,) both heads' parameters in one flat vector (see Layout)
    opt: Any  # optax state of the flat vector
    env_state: Any  # gymnax state, leaves (E, ...)
    obs: Array  # (E, n_obs)
    key: Array  # (2,) uint32
    ep_len: Array  # (E,) int
    ep_ret: Array  # (E,) float64


@dataclass(frozen=True)
class Layout:
    """Where the heads' named parameters lie in an agent's flat parameter vector.

    Both heads' parameters live in one vector, so that Adam (elementwise) is a few fused kernels
    instead of a few per named array; the heads read their arrays back with ``unravel`` (static
    slices that XLA fuses into their consumers).
    """

    init: np.ndarray  # (N,) the agent's initial parameters
    unravel: Callable[[Array], Params]  # flat (N,) -> role -> torch name -> array
    actor: np.ndarray  # (N,) bool: the actor's entries


def layout(fns: AgentFns) -> Layout:
    """The flat layout of an agent's parameters, with its initial values."""
    params = fns.init_params()
    flat, unravel = ravel_pytree(params)
    mask = {r: {k: np.full(v.shape, r == "actor") for k, v in p.items()} for r, p in params.items()}
    actor, _ = ravel_pytree(mask)
    return Layout(np.asarray(flat), unravel, np.asarray(actor, dtype=bool))


def make_optimizer(cfg: A2CConfig, actor: np.ndarray) -> optax.GradientTransformation:
    """The paper's two Adams (actor, critic) as one Adam over the flat parameter vector.

    ``actor``: bool mask (N,) of the actor's entries; they get ``lr_actor``, the others
    ``lr_critic`` (Adam is elementwise and both heads update at every step: the same update as
    two optimisers), annealed linearly per ``lr_anneal_steps``.
    """
    steps_per_update = cfg.n_envs * cfg.n_steps
    lr = np.where(actor, cfg.lr_actor, cfg.lr_critic)
    adam = optax.scale_by_adam(b1=0.9, b2=0.999, eps=cfg.adam_eps)
    if not cfg.lr_anneal_steps:
        return optax.chain(adam, optax.scale_by_learning_rate(jnp.asarray(lr)))

    def schedule(count: Array) -> Array:  # count = updates before this one (int32)
        # float64: int32 / int would be float32 and round the learning rate (0.01 by 2e-8)
        done = count.astype(jnp.float64) * steps_per_update
        return jnp.asarray(lr) * jnp.maximum(0.0, 1.0 - done / cfg.lr_anneal_steps)

    return optax.chain(adam, optax.scale_by_learning_rate(schedule))


def make_update(
    fns: AgentFns, cfg: A2CConfig, lay: Layout
) -> Callable[[Array, Any, Batch], tuple[Array, Any, Array]]:
    """``update(params (N,), opt, batch) -> (params, opt, losses (2,) = actor, critic)``.

    ``opt``: the state of ``make_optimizer(cfg, lay.actor)`` (its ``init(params)``).
    """
    tx = make_optimizer(cfg, lay.actor)
    g, actor = cfg.gamma, lay.actor

    def loss_fn(flat: Array, b: Batch) -> tuple[Array, Array]:
        params = lay.unravel(flat)
        t, e, n = b.obs.shape
        dt = params["actor"][next(iter(params["actor"]))].dtype
        obs, nxt = b.obs.astype(dt), b.next_obs.astype(dt)
        logits = fns.actor(params["actor"], obs.reshape(t * e, n)).reshape(t, e, -1)
        v_s = fns.critic(params["critic"], obs.reshape(t * e, n)).reshape(t, e)
        # V(s') is a fixed target: a forward pass only (no residuals, no backward sweep)
        frozen = jax.lax.stop_gradient(params["critic"])
        v_next = fns.critic(frozen, nxt.reshape(t * e, n)).reshape(t, e)
        v_fixed = jax.lax.stop_gradient(v_s)
        r, not_term = b.rewards.astype(dt), 1.0 - b.terminated.astype(dt)
        delta = r + g * not_term * v_next - v_fixed  # (T, E)
        if t == 1:
            adv = delta
        else:  # GAE(λ): A_t = δ_t + γλ (1 - done_t) A_{t+1}
            carry = (1.0 - b.done.astype(dt)) * (g * cfg.gae_lambda)
            advs = [delta[-1]]
            for k in range(t - 2, -1, -1):
                advs.append(delta[k] + carry[k] * advs[-1])
            adv = jnp.stack(advs[::-1])
        returns = adv + v_fixed
        w = adv
        if cfg.normalize_advantage:
            w = (adv - adv.mean()) / (jnp.std(adv, ddof=1) + 1e-8)
        if cfg.discount_actor:
            w = w * b.disc.astype(dt)
        logp_all = jax.nn.log_softmax(logits, -1)  # (T, E, n_act)
        logp = jnp.take_along_axis(logp_all, b.actions[..., None], -1)[..., 0]
        actor_loss = -(jax.lax.stop_gradient(w) * logp).mean()
        if cfg.ent_coef:
            ent = -(jnp.exp(logp_all) * logp_all).sum(-1)
            actor_loss = actor_loss - cfg.ent_coef * ent.mean()
        critic_loss = jnp.square(jax.lax.stop_gradient(returns) - v_s).mean()
        return actor_loss + critic_loss, jnp.stack([actor_loss, critic_loss])

    def update(params: Array, opt: Any, b: Batch) -> tuple[Array, Any, Array]:
        grads, losses = jax.grad(loss_fn, has_aux=True)(params, b)
        if cfg.max_grad_norm:  # each head's gradient to norm <= max_grad_norm (torch's formula)
            sq = grads * grads
            sq_heads = jnp.stack([jnp.where(actor, sq, 0.0).sum(), jnp.where(actor, 0.0, sq).sum()])
            scale = jnp.minimum(cfg.max_grad_norm / (jnp.sqrt(sq_heads) + 1e-6), 1.0)
            grads = grads * jnp.where(actor, scale[0], scale[1])
        upd, opt = tx.update(grads, opt, params)
        return optax.apply_updates(params, upd), opt, losses

    return update


def _uniform(bits: Array) -> Array:
    """Uniform float64 in [0, 1) from pairs of random words ``(..., 2)`` uint32 (52 bits)."""
    b = (bits[..., 0].astype(jnp.uint64) << 32) | bits[..., 1].astype(jnp.uint64)
    one = jnp.uint64(0x3FF0000000000000)  # the bits of 1.0: mantissa | one lies in [1, 2)
    return jax.lax.bitcast_convert_type((b >> 12) | one, jnp.float64) - 1.0


def make_population_step(
    fns: AgentFns, cfg: A2CConfig, lay: Layout, env: Any, env_params: Any
) -> Callable[[Carry], tuple[Carry, dict[str, Array]]]:
    """``step(carry) -> (carry, out)`` for a population (carry leaves lead with the agent axis).

    Every agent: ``n_steps`` steps of its ``n_envs`` environments, then one update. ``out``:
    ``done, ret, length`` (A, T, E) of the episodes that ended (ret/length where done) and
    ``losses`` (A, 2) of the updates.

    Random numbers: one counter-based draw (threefry) per agent and environment step gives the
    agent's next key, its environments' step keys, the action-sampling uniforms and a reset key.
    Finished environments are reset (gymnax ``reset_env``, Gymnasium's auto-reset) inside a
    ``lax.cond`` taken only when some environment of the population finished, so the reset's
    draws cost nothing on the other steps. An agent's stream depends only on its own key.
    """
    update = jax.vmap(make_update(fns, cfg, lay))
    e_n, g = cfg.n_envs, cfg.gamma
    step_env = jax.vmap(jax.vmap(env.step_env, in_axes=(0, 0, 0, None)), in_axes=(0, 0, 0, None))
    is_truncated = jax.vmap(jax.vmap(env.is_truncated, in_axes=(0, None)), in_axes=(0, None))
    reset_env = jax.vmap(jax.vmap(env.reset_env, in_axes=(0, None)), in_axes=(0, None))

    def act_one(c: Carry) -> tuple[Array, Array, Array, Array]:
        """One agent: its next key, env step keys (E, 2), reset key and actions (E,)."""
        words = random_words(c.key, 2 + 2 * e_n)  # jax.random.bits, one fused kernel
        logits = fns.actor(lay.unravel(c.params)["actor"], c.obs.astype(fns.dtype))  # (E, n_act)
        cdf = jnp.cumsum(jax.nn.softmax(logits, -1), -1).astype(jnp.float64)
        u = _uniform(words[2 + e_n :])  # (E,)
        a = jnp.sum(u[:, None] >= cdf[:, :-1], -1)  # (E,) inverse-CDF sampling
        return words[0], words[2 : 2 + e_n], words[1], a

    act = jax.vmap(act_one)

    def env_step(c: Carry) -> tuple[Carry, tuple[Batch, Array, Array]]:
        key, k_step, k_reset, a = act(c)
        nxt, state, r, term, _ = step_env(k_step, c.env_state, a, env_params)
        trunc = is_truncated(state, env_params)
        done = term | trunc  # (A, E)
        final = nxt.astype(jnp.float32)  # Gymnasium's float32 obs, before any reset

        def with_resets(args: tuple[Any, Array]) -> tuple[Any, Array]:
            state, obs = args
            keys = jax.vmap(lambda k: split(k, e_n))(k_reset)  # (A, E, 2)
            obs_re, state_re = reset_env(keys, env_params)

            def pick(x: Array, y: Array) -> Array:
                return jnp.where(done.reshape(done.shape + (1,) * (x.ndim - 2)), x, y)

            return jax.tree.map(pick, state_re, state), pick(obs_re.astype(jnp.float32), obs)

        state, obs = jax.lax.cond(jnp.any(done), with_resets, lambda args: args, (state, final))
        if cfg.discount_actor:
            disc = g ** c.ep_len.astype(jnp.float64)
        else:
            disc = jnp.ones(c.ep_len.shape)
        ep_len, ep_ret = c.ep_len + 1, c.ep_ret + r
        b = Batch(c.obs, a, r, final, term, done, disc)
        new = Carry(
            c.params,
            c.opt,
            state,
            obs,
            key,
            jnp.where(done, 0, ep_len),
            jnp.where(done, 0.0, ep_ret),
        )
        return new, (b, ep_ret, ep_len)

    def step(c: Carry) -> tuple[Carry, dict[str, Array]]:
        if cfg.n_steps == 1:
            c, (b, ret, length) = env_step(c)
            b, ret, length = jax.tree.map(lambda x: x[:, None], (b, ret, length))
        else:  # scan over steps, then agents first again: (T, A, ...) -> (A, T, ...)
            c, (b, ret, length) = jax.lax.scan(lambda cc, _: env_step(cc), c, None, cfg.n_steps)
            b, ret, length = jax.tree.map(lambda x: jnp.swapaxes(x, 0, 1), (b, ret, length))
        params, opt, losses = update(c.params, c.opt, b)
        out = {"done": b.done, "ret": ret, "length": length, "losses": losses}
        return c._replace(params=params, opt=opt), out

    return step
