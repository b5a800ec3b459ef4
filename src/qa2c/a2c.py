"""Advantage actor-critic for a population of agents, top to bottom.

The paper's algorithm (Kölle et al., "Quantum Advantage Actor-Critic", ICAART 2024) is the
default ``A2CConfig()``:
one environment, an update after every step, the one-step TD error
``δ = r + γ (1 - terminated) V(s') - V(s)`` (``V(s')`` without gradient; reaching the time limit
is truncation, not termination, so it bootstraps), actor loss ``-I δ log π(a|s)`` with
``I = γ^t`` (t = step within the episode), critic loss ``δ²``, two Adam optimisers (lr 1e-4),
γ = 0.99, no entropy bonus, no clipping.

Improvements are fields of ``A2CConfig``: several environments per agent (``n_envs``),
``n_steps``-step rollouts with GAE(λ) (λ = 1: n-step returns), entropy bonus, per-agent advantage
normalisation, per-agent gradient clipping, dropping the ``γ^t`` factor, other learning rates.

Population: ``A`` agents of one architecture train in lockstep. Every parameter is stacked along a
leading agent dimension and the heads are evaluated with ``Head.stacked``. The loss is the *sum*
of per-agent losses, so each agent's slice of the gradient is exactly its own gradient; Adam is
elementwise with a step count shared by all agents; everything non-elementwise (advantage
normalisation, gradient clipping) is computed per agent. Action sampling uses one NumPy generator
per agent and each agent has its own environments: an agent's run is the same whatever
population it is part of.
"""

from __future__ import annotations

import math
import numbers
import operator
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .agents import Agent
from .envs import EnvPool

__all__ = ["A2C", "A2CConfig", "EpisodeEnd", "adam_update", "check_finite_weights", "check_int"]


def check_int(name: str, value: object, minimum: int) -> int:
    """``value`` as a Python int (NumPy integers accepted); TypeError for a non-integer (a bool, a
    string, a float), ValueError below ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{name}: expected an int, got {type(value).__name__} {value!r}")
    out = operator.index(value)
    if out < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {out}")
    return out


def check_finite_weights(agents: Sequence[Agent]) -> None:
    """ValueError naming the first agent parameter with a nan or inf."""
    for i, ag in enumerate(agents):
        for role in ("actor", "critic"):
            for n, p in getattr(ag, role).named_parameters():
                if not bool(torch.isfinite(p).all()):
                    raise ValueError(
                        f"agents[{i}]: {role} parameter {n!r} has non-finite values (nan/inf)"
                    )


def adam_update(
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    step: Tensor,
    lr: float,
    eps: float,
    beta1: float = 0.9,
    beta2: float = 0.999,
    fused: bool = True,
) -> None:
    """One Adam step (Kingma & Ba, torch.optim.Adam's arithmetic) in place, under no_grad.

    ``torch._fused_adam_`` (the kernel behind ``torch.optim.Adam(fused=True)``) when this torch
    build has it for these tensors, else the same update in plain tensor ops. ``step`` is the
    (already incremented) step count as a float32 scalar tensor.
    """
    kernel = getattr(torch, "_fused_adam_", None) if fused else None
    if kernel is not None:
        try:
            kernel(
                params,
                grads,
                exp_avgs,
                exp_avg_sqs,
                [],
                [step] * len(params),
                lr=lr,
                beta1=beta1,
                beta2=beta2,
                weight_decay=0.0,
                eps=eps,
                amsgrad=False,
                maximize=False,
            )
            return
        except (RuntimeError, NotImplementedError, TypeError):  # no kernel for these tensors
            pass
    t = float(step)
    bc1, bc2_sqrt = 1.0 - beta1**t, math.sqrt(1.0 - beta2**t)
    for p, g, m, v in zip(params, grads, exp_avgs, exp_avg_sqs, strict=True):
        m.lerp_(g, 1.0 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1.0 - beta2)
        p.addcdiv_(m, (v.sqrt() / bc2_sqrt).add_(eps), value=-lr / bc1)


@dataclass(frozen=True)
class A2CConfig:
    """Hyper-parameters; the defaults are the paper's algorithm."""

    gamma: float = 0.99
    """discount factor γ"""
    lr_actor: float = 1e-4
    """Adam learning rate of the actor"""
    lr_critic: float = 1e-4
    """Adam learning rate of the critic"""
    n_envs: int = 1
    """environments per agent (stepped in lockstep)"""
    n_steps: int = 1
    """environment steps per environment between updates (1 = update after every step)"""
    gae_lambda: float = 1.0
    """GAE λ for n_steps > 1 (1.0 = plain n-step returns)"""
    discount_actor: bool = True
    """multiply the actor loss by I = γ^t, t = step within the episode (as the paper)"""
    ent_coef: float = 0.0
    """entropy bonus coefficient"""
    normalize_advantage: bool = False
    """normalise advantages per agent over its rollout (needs n_envs * n_steps > 1)"""
    max_grad_norm: float = 0.0
    """clip each agent's gradient (actor and critic separately) to this norm; 0 = off"""
    adam_eps: float = 1e-8
    """Adam epsilon"""
    lr_anneal_steps: int = 0
    """anneal both learning rates linearly to 0 over this many env steps per agent; 0 = constant"""

    def validate(self) -> None:
        """Raise ValueError on an out-of-range or conflicting field."""
        if not 0.0 <= self.gamma <= 1.0:
            raise ValueError(f"gamma: expected in [0, 1], got {self.gamma}")
        if not 0.0 <= self.gae_lambda <= 1.0:
            raise ValueError(f"gae_lambda: expected in [0, 1], got {self.gae_lambda}")
        for name in ("lr_actor", "lr_critic", "adam_eps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}: expected > 0, got {getattr(self, name)}")
        for name in ("n_envs", "n_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if self.lr_anneal_steps < 0:
            raise ValueError(f"lr_anneal_steps: expected >= 0, got {self.lr_anneal_steps}")
        if self.ent_coef < 0 or self.max_grad_norm < 0:
            raise ValueError(
                f"ent_coef/max_grad_norm: expected >= 0, got {self.ent_coef}, {self.max_grad_norm}"
            )
        if self.normalize_advantage and self.n_envs * self.n_steps < 2:
            raise ValueError(
                "normalize_advantage: needs n_envs * n_steps > 1 (the advantage of a single "
                f"transition normalises to 0), got n_envs={self.n_envs}, n_steps={self.n_steps}"
            )
        if self.gae_lambda != 1.0 and self.n_steps == 1:
            raise ValueError(f"gae_lambda: has no effect with n_steps=1, got {self.gae_lambda}")


@dataclass
class EpisodeEnd:
    """One finished episode of agent ``agent`` (index in the population)."""

    agent: int
    step: int  # the agent's environment steps when the episode ended
    episode: int  # 1-based episode count of the agent (over all its environments)
    ret: float
    length: int


class A2C:
    """A population of agents of one architecture, their optimiser and their environments."""

    def __init__(
        self, agents: list[Agent], seeds: list[int], config: A2CConfig, env_id: str = "CartPole-v1"
    ) -> None:
        config.validate()
        if not agents or len(agents) != len(seeds):
            raise ValueError(
                f"agents/seeds: need equally many (> 0), got {len(agents)}, {len(seeds)}"
            )
        seeds = [check_int(f"seeds[{i}]", s, 0) for i, s in enumerate(seeds)]
        check_finite_weights(agents)
        ref = agents[0]
        for ag in agents[1:]:
            if (ag.name, ag.options, ag.dtype) != (ref.name, ref.options, ref.dtype):
                raise ValueError(
                    f"agents: a population needs one architecture, got {ref.describe()} "
                    f"and {ag.describe()} (options {ref.options} vs {ag.options})"
                )
        self.config, self.env_id = config, env_id
        self.agents, self.seeds = agents, list(seeds)
        self.actor, self.critic = ref.actor, ref.critic  # structure only; weights are stacked below
        self.dtype = ref.dtype
        self.n_agents, self.n_envs = len(agents), config.n_envs

        def stack(role: str) -> dict[str, Tensor]:  # name -> (A, *shape), new leaf tensors
            names = [n for n, _ in getattr(ref, role).named_parameters()]
            return {
                n: torch.stack([getattr(ag, role).get_parameter(n).detach() for ag in agents])
                .clone()
                .requires_grad_(True)
                for n in names
            }

        self.actor_params, self.critic_params = stack("actor"), stack("critic")
        # The paper's two Adam optimisers: one learning rate per parameter (see _adam_step).
        self._plist = [*self.actor_params.values(), *self.critic_params.values()]
        self._lrs = [config.lr_actor] * len(self.actor_params) + [config.lr_critic] * len(
            self.critic_params
        )
        self.adam_m = [torch.zeros_like(p) for p in self._plist]  # first moments (A, ...)
        self.adam_v = [torch.zeros_like(p) for p in self._plist]  # second moments (A, ...)
        self.adam_step = 0  # shared by all agents: they update in lockstep
        self._step_t = torch.zeros((), dtype=torch.float32)  # adam_step as the fused kernel's input
        groups: dict[float, list[int]] = {}
        for j, lr in enumerate(self._lrs):
            groups.setdefault(lr, []).append(j)
        self._lr_groups = list(groups.items())
        self.envs = EnvPool(env_id, self.seeds, config.n_envs, ref.n_obs, ref.n_actions)
        self.rngs = [np.random.default_rng([1, s]) for s in self.seeds]  # action sampling
        self.obs = self.envs.reset()  # (A, E, n_obs)
        shape = (self.n_agents, self.n_envs)
        self.ep_len = np.zeros(shape, dtype=np.int64)
        self.ep_ret = np.zeros(shape, dtype=np.float64)
        self.episodes = np.zeros(self.n_agents, dtype=np.int64)
        self.vec_steps = 0  # lockstep environment steps taken (per environment)
        self.circuit_calls = 0  # circuit executions per agent (same for every agent)
        self.loss_sum = torch.zeros(2, self.n_agents, dtype=torch.float64)  # actor, critic
        self.loss_count = np.zeros(self.n_agents, dtype=np.int64)

    @property
    def steps(self) -> int:
        """Environment steps taken by each agent."""
        return self.vec_steps * self.n_envs

    # -- acting ----------------------------------------------------------------------------------
    def _tensor(self, x: np.ndarray) -> Tensor:
        return torch.from_numpy(x).to(self.dtype)

    def _sample(self, logits: Tensor) -> np.ndarray:
        """One action per agent and environment from ``softmax(logits) (A, E, n_act)``."""
        cdf = torch.softmax(logits.detach(), -1).cumsum(-1).numpy()  # (A, E, n_act)
        u = np.stack([rng.random(self.n_envs) for rng in self.rngs])  # (A, E)
        return (u[..., None] >= cdf[..., :-1]).sum(-1)  # (A, E)

    # -- one iteration: n_steps of acting, then one update ----------------------------------------
    def iterate(self) -> list[EpisodeEnd]:
        """Collect ``n_steps`` steps in every environment, then update every agent once."""
        cfg, g = self.config, self.config.gamma
        a, t, e = self.n_agents, cfg.n_steps, self.n_envs
        x = np.empty((a, 2, t, e, self.obs.shape[-1]))  # critic inputs: s_t and s'_t
        aux = np.empty((4, a, t, e))  # reward, 1 - terminated, 1 - done, I = γ^t
        actions = np.empty((a, t, e), dtype=np.int64)
        logits: list[Tensor] = []
        ended: list[EpisodeEnd] = []
        for k in range(t):
            lg = self.actor.stacked(self.actor_params, self._tensor(self.obs))  # (A, E, n_act)
            logits.append(lg)  # the graph is kept for the update: weights do not change before it
            act = self._sample(lg)
            nxt, final, rew, term, trunc = self.envs.step(act, (self.vec_steps + 1) * e)
            done = term | trunc
            x[:, 0, k], x[:, 1, k], actions[:, k] = self.obs, final, act
            aux[0, :, k], aux[1, :, k], aux[2, :, k] = rew, ~term, ~done
            aux[3, :, k] = np.power(g, self.ep_len) if cfg.discount_actor else 1.0
            self.ep_len += 1
            self.ep_ret += rew
            self.vec_steps += 1
            if done.any():
                ended += self._finish_episodes(done)
            self.obs = nxt
        self.circuit_calls += self.actor.circuits_per_input * e * t
        self._update(torch.stack(logits, 1), actions, self._tensor(x), self._tensor(aux))
        return ended

    def _finish_episodes(self, done: np.ndarray) -> list[EpisodeEnd]:
        ended = []
        for i, e in zip(*np.nonzero(done)):  # row-major: agent, then environment order
            self.episodes[i] += 1
            ended.append(
                EpisodeEnd(
                    agent=int(i),
                    step=(self.vec_steps - 1) * self.n_envs + int(e) + 1,
                    episode=int(self.episodes[i]),
                    ret=float(self.ep_ret[i, e]),
                    length=int(self.ep_len[i, e]),
                )
            )
            self.ep_len[i, e], self.ep_ret[i, e] = 0, 0.0
        return ended

    def learn(
        self,
        obs: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_obs: np.ndarray,
        terminated: np.ndarray,
        truncated: np.ndarray,
        episode_steps: np.ndarray,
    ) -> tuple[Tensor, Tensor]:
        """One update from given transitions (what ``iterate`` does after collecting them).

        obs, next_obs (A, T, E, n_obs) (next_obs: the true successor, not a reset observation);
        actions, rewards, terminated, truncated, episode_steps (A, T, E), episode_steps = t of
        ``I = γ^t``. Returns the per-agent actor and critic losses (A,) of this update.
        """
        a, t, e, n = obs.shape
        if (a, t, e) != (self.n_agents, self.config.n_steps, self.n_envs):
            raise ValueError(
                f"obs: expected (A, T, E) = {(self.n_agents, self.config.n_steps, self.n_envs)} "
                f"leading dims, got {obs.shape}"
            )
        logits = self.actor.stacked(self.actor_params, self._tensor(obs).reshape(a, t * e, n))
        self.circuit_calls += self.actor.circuits_per_input * t * e
        x = np.stack([obs, next_obs], 1)  # (A, 2, T, E, n_obs)
        term = np.asarray(terminated, dtype=bool)
        done = term | np.asarray(truncated, dtype=bool)
        disc = np.power(self.config.gamma, episode_steps) if self.config.discount_actor else 1.0
        aux = np.stack(np.broadcast_arrays(rewards, ~term, ~done, disc)).astype(np.float64)
        acts = np.asarray(actions, dtype=np.int64)
        return self._update(logits.reshape(a, t, e, -1), acts, self._tensor(x), self._tensor(aux))

    # -- the update ------------------------------------------------------------------------------
    def _update(
        self, logits: Tensor, actions: np.ndarray, x: Tensor, aux: Tensor
    ) -> tuple[Tensor, Tensor]:
        """logits (A, T, E, n_act) with graph; actions (A, T, E); x (A, 2, T, E, n_obs) = (s, s');
        aux (4, A, T, E) = reward, 1 - terminated, 1 - done, I."""
        cfg, g = self.config, self.config.gamma
        a, _, t, e, n_obs = x.shape
        v = self.critic.stacked(self.critic_params, x.reshape(a, 2 * t * e, n_obs))  # one call
        self.circuit_calls += self.critic.circuits_per_input * 2 * t * e
        v = v.reshape(a, 2, t, e)
        v_s, v_next = v[:, 0], v[:, 1].detach()  # (A, T, E); V(s') is a fixed target
        r, not_term, not_done, disc = aux
        delta = r + g * not_term * v_next - v_s.detach()  # one-step TD errors (A, T, E)
        if t == 1:
            adv = delta
        else:  # GAE(λ): A_t = δ_t + γλ (1 - done_t) A_{t+1}; bootstraps through truncation
            carry = not_done * (g * cfg.gae_lambda)
            advs = [delta[:, -1]]
            for k in range(t - 2, -1, -1):
                advs.append(delta[:, k] + carry[:, k] * advs[-1])
            adv = torch.stack(advs[::-1], 1)
        returns = adv + v_s.detach()  # critic targets (A, T, E)

        # The losses' gradients w.r.t. the logits and V(s) in closed form, then one backward pass
        # through the two heads: the same gradients as autograd through the loss expressions,
        # without their graph. N = T·E samples per agent.
        with torch.no_grad():
            lg = logits.detach()
            logp_all = torch.log_softmax(lg, -1)  # (A, T, E, n_act)
            probs = logp_all.exp()
            act = torch.from_numpy(actions).unsqueeze(-1)  # (A, T, E, 1)
            logp = logp_all.gather(-1, act).squeeze(-1)  # (A, T, E)
            w = adv
            if cfg.normalize_advantage:  # per agent, over its own rollout
                w = (adv - adv.mean((1, 2), keepdim=True)) / (adv.std((1, 2), keepdim=True) + 1e-8)
            if cfg.discount_actor:
                w = w * disc  # I = γ^t
            inv_n = 1.0 / (t * e)
            actor_loss = -(w * logp).mean((1, 2))  # (A,)
            # ∂(-w·log π(a))/∂logits = -w·(onehot(a) - π)
            g_logits = probs * w.unsqueeze(-1)
            g_logits.scatter_add_(-1, act, -w.unsqueeze(-1))
            if cfg.ent_coef:
                ent = -(probs * logp_all).sum(-1)  # (A, T, E)
                actor_loss = actor_loss - cfg.ent_coef * ent.mean((1, 2))
                # ∂(-c·H)/∂logits = c·π·(log π + H)
                g_logits += cfg.ent_coef * probs * (logp_all + ent.unsqueeze(-1))
            g_logits *= inv_n
            err = returns - v_s.detach()  # (A, T, E)
            critic_loss = err.square().mean((1, 2))  # (A,)  == δ² for n_steps = 1
            g_v = err * (-2.0 * inv_n)
        # the sum over agents: each agent's slice of the gradient is its own
        torch.autograd.backward((logits, v_s), (g_logits, g_v))
        if cfg.max_grad_norm:
            self._clip(self.actor_params)
            self._clip(self.critic_params)
        self._adam_step()
        self.loss_sum[0] += actor_loss.detach()
        self.loss_sum[1] += critic_loss.detach()
        self.loss_count += 1
        return actor_loss.detach(), critic_loss.detach()

    def _adam_step(self) -> None:
        """Adam on all stacked parameters at once; elementwise, so per agent (``adam_update``: the
        paper's two optimisers are two learning rates, one call per distinct rate), with the step
        count shared by all agents."""
        self.adam_step += 1
        frac = 1.0
        if self.config.lr_anneal_steps:  # linear decay, a function of the update count only
            # env steps before this update's rollout: updates before it x steps per update (the
            # JAX engine's schedule; equal to the steps taken under iterate, and right for learn,
            # which takes no environment steps)
            done = (self.adam_step - 1) * self.n_envs * self.config.n_steps
            frac = max(0.0, 1.0 - done / self.config.lr_anneal_steps)
        with torch.no_grad():
            self._step_t.fill_(self.adam_step)
            for lr, idx in self._lr_groups:  # in-place updates of leaves: under no_grad
                params = [self._plist[j] for j in idx]
                grads = []
                for p in params:
                    g = p.grad
                    grads.append(torch.zeros_like(p) if g is None else g.contiguous())
                adam_update(
                    params,
                    grads,
                    [self.adam_m[j] for j in idx],
                    [self.adam_v[j] for j in idx],
                    self._step_t,
                    lr=lr * frac,
                    eps=self.config.adam_eps,
                )
        for p in self._plist:
            p.grad = None

    def _clip(self, params: dict[str, Tensor]) -> None:
        """Scale each agent's gradient to norm <= max_grad_norm (norm over that agent only)."""
        grads = [p.grad for p in params.values() if p.grad is not None]
        if not grads:
            return
        sq = torch.stack([gr.pow(2).reshape(gr.shape[0], -1).sum(1) for gr in grads]).sum(0)  # (A,)
        scale = (self.config.max_grad_norm / (sq.sqrt() + 1e-6)).clamp(max=1.0)
        for gr in grads:
            gr.mul_(scale.reshape(-1, *([1] * (gr.dim() - 1))))

    def pop_losses(self, i: int) -> tuple[float, float] | None:
        """Mean actor and critic loss of agent ``i`` since the last call; None if no update.

        (None, not NaN: a NaN loss is a diverged one.)"""
        n = int(self.loss_count[i])
        if n == 0:
            return None
        a, c = (self.loss_sum[:, i] / n).tolist()
        self.loss_sum[:, i] = 0.0
        self.loss_count[i] = 0
        return float(a), float(c)

    # -- agents and checkpoints ------------------------------------------------------------------
    def member_state(self, i: int) -> dict[str, Any]:
        """Everything agent ``i`` needs to continue alone or in another population (plain data)."""
        return {
            "agent": {"name": self.agents[i].name, "options": self.agents[i].options},
            "seed": self.seeds[i],
            "config": asdict(self.config),
            "env_id": self.env_id,
            "actor": {n: p[i].detach().clone() for n, p in self.actor_params.items()},
            "critic": {n: p[i].detach().clone() for n, p in self.critic_params.items()},
            "adam_m": [m[i].clone() for m in self.adam_m],
            "adam_v": [v[i].clone() for v in self.adam_v],
            "adam_step": self.adam_step,
            "rng": self.rngs[i].bit_generator.state,
            "envs": self.envs.member_state(i),
            "obs": torch.from_numpy(self.obs[i].copy()),
            "ep_len": self.ep_len[i].tolist(),
            "ep_ret": self.ep_ret[i].tolist(),
            "episodes": int(self.episodes[i]),
            "vec_steps": self.vec_steps,
            "circuit_calls": self.circuit_calls,
            "loss_sum": self.loss_sum[:, i].clone(),
            "loss_count": int(self.loss_count[i]),
        }

    def load_member_states(self, states: list[dict[str, Any]]) -> None:
        """Restore every agent from ``member_state`` dicts (one per agent, same step)."""
        if len(states) != self.n_agents:
            raise ValueError(f"states: expected {self.n_agents}, got {len(states)}")
        steps = {s["vec_steps"] for s in states}
        if len(steps) != 1:
            raise ValueError(f"states: members are at different steps {sorted(steps)}")
        defaults = asdict(A2CConfig())  # fields added after a checkpoint was written: defaults
        for i, s in enumerate(states):
            if s["seed"] != self.seeds[i] or {**defaults, **s["config"]} != asdict(self.config):
                raise ValueError(
                    f"states[{i}]: checkpoint of seed {s['seed']} / config "
                    f"{s['config']} does not match seed {self.seeds[i]} / {asdict(self.config)}"
                )
            if s["agent"] != {"name": self.agents[i].name, "options": self.agents[i].options}:
                raise ValueError(f"states[{i}]: checkpoint agent {s['agent']} differs")
            dtypes = {str(w.dtype) for w in s["actor"].values()}
            if dtypes != {str(self.dtype)}:
                raise ValueError(
                    f"states[{i}]: checkpoint of dtype {sorted(dtypes)}, not {self.dtype}"
                )
            if s["env_id"] != self.env_id:
                raise ValueError(
                    f"states[{i}]: checkpoint of env_id {s['env_id']!r}, not {self.env_id!r}"
                )
        with torch.no_grad():
            for role, params in (("actor", self.actor_params), ("critic", self.critic_params)):
                for n, p in params.items():
                    p.copy_(torch.stack([s[role][n] for s in states]))
            for j in range(len(self._plist)):
                self.adam_m[j].copy_(torch.stack([s["adam_m"][j] for s in states]))
                self.adam_v[j].copy_(torch.stack([s["adam_v"][j] for s in states]))
        self.adam_step = int(states[0]["adam_step"])
        for i, s in enumerate(states):
            self.rngs[i].bit_generator.state = s["rng"]
            self.envs.load_member_state(i, s["envs"])
            self.obs[i] = s["obs"].numpy()
            self.ep_len[i] = s["ep_len"]
            self.ep_ret[i] = s["ep_ret"]
            self.episodes[i] = s["episodes"]
            self.loss_sum[:, i] = s["loss_sum"]
            self.loss_count[i] = s["loss_count"]
        self.vec_steps = states[0]["vec_steps"]
        self.circuit_calls = states[0]["circuit_calls"]
