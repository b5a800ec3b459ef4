"""Advantage actor-critic in JAX, top to bottom: one agent's update and one agent's iteration.

The same algorithm as the torch engine's ``qa2c.a2c.A2C`` (the reference; defaults = the paper):
``δ = r + γ (1 - terminated) V(s') - V(s)`` with ``V(s')`` a fixed target (time-limit truncation
bootstraps), GAE(λ) over ``n_steps``-step rollouts of ``n_envs`` environments, actor loss
``-mean(w · log π(a|s)) - c_ent · mean(H)`` with ``w`` the (optionally per-agent normalised)
advantage times ``I = γ^t`` (``discount_actor``), critic loss ``mean((R - V(s))²)``, per-head
gradient clipping, and two Adams (``optax.adam``: torch.optim.Adam's update, eps outside the square
root after bias correction) whose learning rates anneal linearly with the environment steps taken
before the update. Everything here is one agent; ``qa2c.jax_engine.train`` vmaps it over a
population and loops it with ``lax``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from qa2c.a2c import A2CConfig
from qa2c.jax_engine.heads import AgentFns

__all__ = ["Batch", "Carry", "make_agent_step", "make_optimizers", "make_update"]

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

    params: Params
    opt: dict[str, Any]  # role -> optax state
    env_state: Any  # gymnax state, leaves (E, ...)
    obs: Array  # (E, n_obs)
    key: Array  # (2,) uint32
    ep_len: Array  # (E,) int
    ep_ret: Array  # (E,) float64


def make_optimizers(cfg: A2CConfig) -> dict[str, optax.GradientTransformation]:
    """The paper's two Adams (actor, critic), learning rates annealed per ``lr_anneal_steps``."""
    steps_per_update = cfg.n_envs * cfg.n_steps

    def adam(lr: float) -> optax.GradientTransformation:
        if not cfg.lr_anneal_steps:
            return optax.adam(lr, b1=0.9, b2=0.999, eps=cfg.adam_eps)

        def schedule(count: Array) -> Array:  # count = updates before this one (int32)
            # float64: int32 / int would be float32 and round the learning rate (0.01 by 2e-8)
            done = count.astype(jnp.float64) * steps_per_update
            return lr * jnp.maximum(0.0, 1.0 - done / cfg.lr_anneal_steps)

        return optax.adam(schedule, b1=0.9, b2=0.999, eps=cfg.adam_eps)

    return {"actor": adam(cfg.lr_actor), "critic": adam(cfg.lr_critic)}


def _clip(grads: dict[str, Array], max_norm: float) -> dict[str, Array]:
    """Scale one head's gradient to norm <= max_norm (the torch engine's formula)."""
    sq = sum(jnp.sum(g * g) for g in grads.values())
    scale = jnp.minimum(max_norm / (jnp.sqrt(sq) + 1e-6), 1.0)
    return {k: g * scale for k, g in grads.items()}


def make_update(
    fns: AgentFns, cfg: A2CConfig
) -> Callable[[Params, dict[str, Any], Batch], tuple[Params, dict[str, Any], Array]]:
    """``update(params, opt, batch) -> (params, opt, losses (2,) = actor, critic)``."""
    txs = make_optimizers(cfg)
    g = cfg.gamma

    def loss_fn(params: Params, b: Batch) -> tuple[Array, Array]:
        t, e, n = b.obs.shape
        dt = params["actor"][next(iter(params["actor"]))].dtype
        obs, nxt = b.obs.astype(dt), b.next_obs.astype(dt)
        logits = fns.actor(params["actor"], obs.reshape(t * e, n)).reshape(t, e, -1)
        v = fns.critic(params["critic"], jnp.concatenate([obs, nxt]).reshape(2 * t * e, n))
        v = v.reshape(2, t, e)
        v_s, v_next = v[0], jax.lax.stop_gradient(v[1])
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

    def update(
        params: Params, opt: dict[str, Any], b: Batch
    ) -> tuple[Params, dict[str, Any], Array]:
        grads, losses = jax.grad(loss_fn, has_aux=True)(params, b)
        new_params, new_opt = {}, {}
        for role in ("actor", "critic"):
            gr = grads[role]
            if cfg.max_grad_norm:
                gr = _clip(gr, cfg.max_grad_norm)
            upd, new_opt[role] = txs[role].update(gr, opt[role], params[role])
            new_params[role] = optax.apply_updates(params[role], upd)
        return new_params, new_opt, losses

    return update


def make_agent_step(
    fns: AgentFns, cfg: A2CConfig, env: Any, env_params: Any
) -> Callable[[Carry], tuple[Carry, dict[str, Array]]]:
    """``step(carry) -> (carry, out)``: ``n_steps`` steps of ``n_envs`` environments, one update.

    ``out``: ``done, ret, length`` (T, E) of the episodes that ended (ret/length where done) and
    ``losses`` (2,) of the update.
    """
    update = make_update(fns, cfg)
    e_n, g = cfg.n_envs, cfg.gamma
    env_step = jax.vmap(env.step, in_axes=(0, 0, 0, None))

    def act(c: Carry) -> tuple[Carry, tuple[Batch, Array, Array]]:
        key, k_act, k_env = jax.random.split(c.key, 3)
        logits = fns.actor(c.params["actor"], c.obs.astype(fns.dtype))  # (E, n_act)
        cdf = jnp.cumsum(jax.nn.softmax(logits, -1), -1).astype(jnp.float64)
        u = jax.random.uniform(k_act, (e_n,), dtype=jnp.float64)
        a = jnp.sum(u[:, None] >= cdf[:, :-1], -1)  # (E,) inverse-CDF sampling
        nxt, state, r, term, trunc, info = env_step(
            jax.random.split(k_env, e_n), c.env_state, a, env_params
        )
        final = info["final_observation"].astype(jnp.float32)  # Gymnasium's float32 obs
        done = term | trunc
        disc = g ** c.ep_len.astype(jnp.float64) if cfg.discount_actor else jnp.ones(e_n)
        ep_len, ep_ret = c.ep_len + 1, c.ep_ret + r
        b = Batch(c.obs, a, r, final, term, done, disc)
        new = Carry(
            c.params,
            c.opt,
            state,
            nxt.astype(jnp.float32),
            key,
            jnp.where(done, 0, ep_len),
            jnp.where(done, 0.0, ep_ret),
        )
        return new, (b, ep_ret, ep_len)

    def step(c: Carry) -> tuple[Carry, dict[str, Array]]:
        if cfg.n_steps == 1:
            c, (b, ret, length) = act(c)
            b, ret, length = jax.tree.map(lambda x: x[None], (b, ret, length))
        else:
            c, (b, ret, length) = jax.lax.scan(lambda cc, _: act(cc), c, None, cfg.n_steps)
        params, opt, losses = update(c.params, c.opt, b)
        out = {"done": b.done, "ret": ret, "length": length, "losses": losses}
        return c._replace(params=params, opt=opt), out

    return step
