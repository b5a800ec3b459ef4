"""The agents' actor and critic heads as pure JAX functions, built from a torch ``qa2c.Agent``.

The torch agent (``qa2c.agents.build_agent``) is the single description of an architecture and its
initial weights: this module reads its heads (kind, circuit spec, readout, scale, measured wires)
and its parameters (same names, e.g. ``"l1.weight"``, ``"vqc.weights"``), so both engines start
from identical weights and count identical parameters. Heads, with ``p_i = (⟨Z_i⟩ + 1)/2``:

* classical: ``Linear(n_obs, h) -> ReLU -> Linear(h, n_out)``;
* pure quantum: logits ``scale·r`` (actor), value ``scale·Σ r_i`` (critic), ``r = p`` or ``⟨Z⟩``;
* hybrid: ``Linear(ReLU(p))`` over all measured wires.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from qa2c.agents import Agent, Head, MLPHead, QuantumHead
from qa2c.jax_engine.circuit import circuit_fn

__all__ = ["AgentFns", "HeadFn", "agent_fns", "head_fn"]

Array = jax.Array
Params = dict[str, Array]
HeadFn = Callable[[Params, Array], Array]  # (params, x (B, n_obs)) -> (B, n_out)


def _linear(params: Params, prefix: str, x: Array) -> Array:
    return x @ params[f"{prefix}.weight"].T + params[f"{prefix}.bias"]


def head_fn(head: Head) -> HeadFn:
    """The JAX function of one torch head (same parameter names)."""
    if isinstance(head, MLPHead):

        def mlp(params: Params, x: Array) -> Array:
            return _linear(params, "l2", jax.nn.relu(_linear(params, "l1", x)))

        return mlp
    if not isinstance(head, QuantumHead):
        raise TypeError(f"head: no JAX version of {type(head).__name__}")
    if head.vqc.backend != "torch" or head.vqc.noise.active:
        raise ValueError(
            f"head: the JAX engine runs the exact noiseless circuit; got backend "
            f"{head.vqc.backend!r}, noise active={head.vqc.noise.active}"
        )
    circ = circuit_fn(head.vqc.spec, head.vqc.output)
    mode, role, scale = head.mode, head.role, head.scale
    trainable = head.output_scale is not None

    def quantum(params: Params, x: Array) -> Array:
        r = circ(params["vqc.weights"], x, params.get("vqc.input_weights"))  # (B, m)
        if mode == "hybrid":
            return _linear(params, "post", jax.nn.relu(r))
        if role == "critic":
            r = r.sum(-1, keepdims=True)
        if trainable:
            return r * params["output_scale"]
        return r * scale if scale != 1.0 else r

    return quantum


def _params(head: Head) -> dict[str, np.ndarray]:
    return {n: p.detach().cpu().numpy().copy() for n, p in head.named_parameters()}


def _dead(head: Head) -> dict[str, np.ndarray]:
    if isinstance(head, QuantumHead):
        return {"vqc.weights": head.vqc.dead_parameters().cpu().numpy()}
    return {}


@dataclass(frozen=True)
class AgentFns:
    """An agent's heads as JAX functions, its initial parameters and its dead-weight masks."""

    actor: HeadFn  # (params, x (B, n_obs)) -> logits (B, n_actions)
    critic: HeadFn  # (params, x (B, n_obs)) -> value (B, 1)
    actor_params: dict[str, np.ndarray]
    critic_params: dict[str, np.ndarray]
    dead: dict[str, dict[str, np.ndarray]]  # role -> name -> bool mask
    circuits_per_input: tuple[int, int]  # actor, critic
    n_obs: int
    n_actions: int
    dtype: Any  # numpy dtype of the parameters

    def init_params(self) -> dict[str, Params]:
        """{"actor": ..., "critic": ...} as JAX arrays in the agent's dtype."""
        return {
            "actor": {k: jnp.asarray(v) for k, v in self.actor_params.items()},
            "critic": {k: jnp.asarray(v) for k, v in self.critic_params.items()},
        }


def agent_fns(agent: Agent) -> AgentFns:
    """The JAX form of a torch :class:`qa2c.Agent` (its weights are copied, never modified)."""
    return AgentFns(
        actor=head_fn(agent.actor),
        critic=head_fn(agent.critic),
        actor_params=_params(agent.actor),
        critic_params=_params(agent.critic),
        dead={"actor": _dead(agent.actor), "critic": _dead(agent.critic)},
        circuits_per_input=(agent.actor.circuits_per_input, agent.critic.circuits_per_input),
        n_obs=agent.n_obs,
        n_actions=agent.n_actions,
        dtype=np.dtype("float64" if str(agent.dtype).endswith("64") else "float32"),
    )
