"""Actor and critic heads (classical, pure quantum, hybrid) and the paper's eight agents.

Every head maps observations ``(..., n_obs)`` to outputs ``(..., n_out)``: action logits for an
actor (the policy is ``softmax(logits)``), a value ``(..., 1)`` for a critic. Besides ``forward``,
each head has ``stacked(params, x)``: the same function evaluated for a population of ``A``
agents at once, with every parameter stacked along a new leading dimension
(``params[name]: (A, *shape)``, ``x: (A, B, n_obs)`` -> ``(A, B, n_out)``). Population training
(``qa2c.train``) uses only ``stacked``; ``forward`` is ``stacked`` with ``A = 1``.

Heads as in the paper (facts: shared/papers/qa2c.md), with ``p_i = (<Z_i> + 1) / 2``:

* classical: ``Linear(n_obs, h) -> ReLU -> Linear(h, n_out)``;
* pure quantum actor: logits ``[p_0, p_1]``; pure quantum critic ``p_0 + p_1`` (Q2Q) or ``p_0`` (A2Q);
* hybrid: all four ``p_i -> ReLU -> Linear(4, n_out)``.

Improvements (all off by default): more layers, data re-uploading, trainable input scaling, a
``"z"`` readout (``<Z_i>`` instead of ``p_i``), a fixed or trainable scalar output scale.
The classical heads can get the same non-quantum tricks (``ScaledHead``, options ``mlp_*``): the
paper's fixed input map, trainable input scaling, a fixed or trainable output scale; and every
head can see observations multiplied by a fixed per-feature ``obs_scale`` (all off by default).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "ACTOR_PROB_TARGET",
    "AGENT_NAMES",
    "INPUT_MAPS",
    "Agent",
    "Head",
    "MLPHead",
    "QuantumHead",
    "ScaledHead",
    "build_agent",
    "value_cap",
]

logger = logging.getLogger(__name__)

# name -> (actor kind, critic kind, classical hidden units); kinds: "mlp" | "pure" | "hybrid"
_SPECS: dict[str, tuple[str, str, int]] = {
    "A2C": ("mlp", "mlp", 4),
    "A2Q": ("mlp", "pure", 4),
    "Q2C": ("pure", "mlp", 4),
    "Q2Q": ("pure", "pure", 4),
    "A2C5": ("mlp", "mlp", 5),
    "HA2Q": ("mlp", "hybrid", 5),
    "HQ2C": ("hybrid", "mlp", 5),
    "HQ2Q": ("hybrid", "hybrid", 5),
}
AGENT_NAMES: tuple[str, ...] = tuple(_SPECS)

#: An actor whose most likely action can never exceed this probability gets a warning.
ACTOR_PROB_TARGET = 0.99
_READOUTS = ("paper", "z")
#: fixed input maps of ``ScaledHead``: "cartpole_paper" is the angle map of the paper's encoding,
#: (π·x0/4.8, 2·atan x1, π·x2/0.418, 2·atan x3)
INPUT_MAPS = ("cartpole_paper",)


def value_cap(gamma: float, max_episode_steps: int) -> float:
    """Largest true state value of CartPole (reward 1 per step): (1 - γ^T) / (1 - γ)."""
    return (
        float(max_episode_steps) if gamma == 1.0 else (1 - gamma**max_episode_steps) / (1 - gamma)
    )


class Head(nn.Module):
    """Base class: observations ``(..., n_obs)`` -> outputs ``(..., n_out)``."""

    n_obs: int
    n_out: int
    #: circuit executions per evaluated observation (0 for a classical head)
    circuits_per_input: int = 0

    def stacked(self, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """Population form: ``params[name] (A, *shape)``, ``x (A, B, n_obs)`` -> ``(A, B, n_out)``."""
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.n_obs:
            raise ValueError(f"x: expected last dimension {self.n_obs}, got shape {tuple(x.shape)}")
        lead = x.shape[:-1]
        params = {n: p.unsqueeze(0) for n, p in self.named_parameters()}
        out = self.stacked(params, x.reshape(1, -1, self.n_obs))  # (1, B, n_out)
        return out.reshape(*lead, self.n_out)

    def output_range(self) -> tuple[float, float]:
        """Reachable range of every output (``±inf`` where unbounded)."""
        return (-math.inf, math.inf)


class MLPHead(Head):
    """``Linear(n_obs, hidden) -> ReLU -> Linear(hidden, n_out)`` (PyTorch's default init)."""

    def __init__(self, n_obs: int, hidden: int, n_out: int, dtype: torch.dtype) -> None:
        super().__init__()
        self.n_obs, self.n_out = n_obs, n_out
        self.l1 = nn.Linear(n_obs, hidden, dtype=dtype)
        self.l2 = nn.Linear(hidden, n_out, dtype=dtype)

    def stacked(self, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        w1, b1 = params["l1.weight"], params["l1.bias"]  # (A, h, n_obs), (A, h)
        w2, b2 = params["l2.weight"], params["l2.bias"]  # (A, n_out, h), (A, n_out)
        h = torch.baddbmm(b1.unsqueeze(1), x, w1.transpose(1, 2)).relu()  # (A, B, h)
        return torch.baddbmm(b2.unsqueeze(1), h, w2.transpose(1, 2))  # (A, B, n_out)


class QuantumHead(Head):
    """A VQC head, ``mode="pure"`` (readout only, plus a scalar scale) or ``"hybrid"``.

    pure actor: logits ``scale * r``; pure critic: value ``scale * sum_i r_i``; with
    ``r_i = p_i = (<Z_i>+1)/2`` (readout ``"paper"``) or ``r_i = <Z_i>`` (readout ``"z"``).
    The scale is a fixed float, or one trainable scalar parameter ``output_scale`` (counted).
    hybrid: ``Linear(ReLU(p))`` over all measured wires (parameters ``post.weight, post.bias``).
    """

    def __init__(
        self,
        *,
        role: str,
        mode: str,
        n_obs: int,
        n_out: int,
        measure: tuple[int, ...],
        vqc_kwargs: dict[str, Any],
        readout: str = "paper",
        scale: float = 1.0,
        trainable_scale: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        from .vqc import VQC

        self.role, self.mode, self.readout = role, mode, readout
        self.n_obs, self.n_out = n_obs, n_out
        self.circuits_per_input = 1
        # the paper's p_i straight from the simulator (output="prob0"): no (z + 1)/2 kernels
        if mode == "hybrid" or readout == "paper":
            vqc_kwargs = {**vqc_kwargs, "output": "prob0"}
        self.vqc = VQC(n_qubits=n_obs, measure=measure, dtype=dtype, **vqc_kwargs)
        self.scale = float(scale)
        self.output_scale: nn.Parameter | None = None
        if mode == "hybrid":
            self.post = nn.Linear(len(measure), n_out, dtype=dtype)
        elif trainable_scale:
            self.output_scale = nn.Parameter(torch.full((1,), float(scale), dtype=dtype))

    def stacked(self, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        iw = params.get("vqc.input_weights")
        w = params["vqc.weights"]  # (A, n_qubits, n_layers, k)
        if w.shape[0] == 1:  # one agent: the simulator's unstacked path (fewer, cheaper kernels)
            # squeeze, not w[0]: its backward is a view, not a zero-filled scatter
            r = self.vqc.functional(
                w.squeeze(0), x.squeeze(0), None if iw is None else iw.squeeze(0)
            ).unsqueeze(0)
        else:
            r = self.vqc.functional(w, x, iw)  # (A, B, n_measure): p_i, or <Z_i> (readout "z")
        if self.mode == "hybrid":
            h = r.relu()  # the paper's ReLU on p_i (a no-op on [0, 1], kept faithfully)
            w, b = params["post.weight"], params["post.bias"]  # (A, n_out, m), (A, n_out)
            return torch.baddbmm(b.unsqueeze(1), h, w.transpose(1, 2))  # (A, B, n_out)
        if self.role == "critic":
            r = r.sum(-1, keepdim=True)  # (A, B, 1)
        if self.output_scale is not None:
            return r * params["output_scale"].unsqueeze(1)  # (A, 1, 1) broadcast
        return r * self.scale if self.scale != 1.0 else r

    def output_range(self) -> tuple[float, float]:
        """An outer bound of the reachable outputs, from ``<Z_i> ∈ [-1, 1]`` through the readout.

        An outer bound is what a "cannot express" warning needs (``VQC.output_range`` gives an
        inner, certified-reachable bound instead; for these circuits both are [-1, 1]).
        """
        if self.mode == "hybrid" or self.output_scale is not None:
            return (-math.inf, math.inf)
        low, high = (0.0, 1.0) if self.readout == "paper" else (-1.0, 1.0)
        if self.role == "critic":
            m = len(self.vqc.measure)
            low, high = m * low, m * high
        lo, hi = sorted((low * self.scale, high * self.scale))
        return (lo, hi)


class ScaledHead(Head):
    """An inner head with fixed/trainable input and output scaling around it.

    ``y = s · inner(λ ⊙ m(c ⊙ x))``: ``c`` a fixed per-feature ``obs_scale`` (a buffer, not
    trained), ``m`` a fixed ``input_map`` (``INPUT_MAPS``), ``λ`` trainable input weights
    (``input_scaling``, shape ``(n_obs,)``, initialised to 1), ``s`` a fixed float ``scale`` or one
    trainable scalar ``output_scale`` (initialised to ``scale``). The inner head's parameters are
    named ``inner.*``. Used to give the classical heads the quantum heads' non-quantum tricks.
    """

    def __init__(
        self,
        inner: Head,
        *,
        obs_scale: tuple[float, ...] | None = None,
        input_map: str | None = None,
        input_scaling: bool = False,
        scale: float = 1.0,
        trainable_scale: bool = False,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        super().__init__()
        self.inner = inner
        self.n_obs, self.n_out = inner.n_obs, inner.n_out
        self.circuits_per_input = inner.circuits_per_input
        if input_map is not None:
            _check_choice("input_map", input_map, INPUT_MAPS)
            if inner.n_obs != 4:
                raise ValueError(
                    f"input_map: {input_map!r} needs 4 observations, got {inner.n_obs}"
                )
        self.input_map = input_map
        self.obs_scale: Tensor | None
        if obs_scale is None:
            self.register_buffer("obs_scale", None)
        else:
            if len(obs_scale) != inner.n_obs or not all(math.isfinite(c) for c in obs_scale):
                raise ValueError(
                    f"obs_scale: expected {inner.n_obs} finite floats, got {tuple(obs_scale)}"
                )
            self.register_buffer("obs_scale", torch.tensor(obs_scale, dtype=dtype))
        self.input_weights = (
            nn.Parameter(torch.ones(inner.n_obs, dtype=dtype)) if input_scaling else None
        )
        self.scale = float(scale)
        self.output_scale = (
            nn.Parameter(torch.full((1,), float(scale), dtype=dtype)) if trainable_scale else None
        )

    def stacked(self, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        if self.obs_scale is not None:
            x = x * self.obs_scale
        if self.input_map == "cartpole_paper":
            x = torch.stack(
                (
                    x[..., 0] * (math.pi / 4.8),
                    2.0 * torch.atan(x[..., 1]),
                    x[..., 2] * (math.pi / 0.418),
                    2.0 * torch.atan(x[..., 3]),
                ),
                -1,
            )
        if self.input_weights is not None:
            x = x * params["input_weights"].unsqueeze(1)  # (A, 1, n_obs)
        inner = {n[6:]: p for n, p in params.items() if n.startswith("inner.")}
        out = self.inner.stacked(inner, x)
        if self.output_scale is not None:
            return out * params["output_scale"].unsqueeze(1)  # (A, 1, 1)
        return out * self.scale if self.scale != 1.0 else out

    def output_range(self) -> tuple[float, float]:
        if self.output_scale is not None:
            return (-math.inf, math.inf)
        lo, hi = self.inner.output_range()
        if self.scale == 1.0:
            return (lo, hi)
        a, b = sorted((lo * self.scale, hi * self.scale))
        return (a, b)


@dataclass
class Agent:
    """An actor and a critic with their construction recipe (enough to rebuild them)."""

    name: str
    actor: Head
    critic: Head
    seed: int
    n_obs: int
    n_actions: int
    dtype: torch.dtype
    options: dict[str, Any] = field(default_factory=dict)

    def num_parameters(self) -> int:
        """Number of trainable scalars in actor and critic together."""
        mods = (self.actor, self.critic)
        return sum(p.numel() for m in mods for p in m.parameters() if p.requires_grad)

    def describe(self) -> str:
        kinds = _SPECS[self.name]
        return f"{self.name} (actor {kinds[0]}, critic {kinds[1]}, {self.num_parameters()} params)"


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name}: expected one of {choices}, got {value!r}")


def build_agent(
    name: str,
    seed: int = 0,
    *,
    hidden: int | None = None,
    n_layers: int | None = None,
    reupload: bool | None = None,
    input_scaling: bool | None = None,
    encoding: str | None = None,
    backend: str | None = None,
    actor_readout: str | None = None,
    critic_readout: str | None = None,
    actor_scale: float | None = None,
    critic_scale: float | None = None,
    trainable_scale: bool | None = None,
    obs_scale: tuple[float, ...] | None = None,
    mlp_input_map: str | None = None,
    mlp_input_scaling: bool | None = None,
    mlp_actor_scale: float | None = None,
    mlp_critic_scale: float | None = None,
    mlp_trainable_scale: bool | None = None,
    n_obs: int = 4,
    n_actions: int = 2,
    dtype: torch.dtype = torch.float32,
    gamma: float = 0.99,
    max_episode_steps: int = 500,
    warn: bool = True,
) -> Agent:
    """Build one of the paper's agents, optionally with improvements.

    Args:
        name: one of ``AGENT_NAMES`` (A2C, A2Q, Q2C, Q2Q, A2C5, HA2Q, HQ2C, HQ2Q).
        seed: initialises all weights (the global torch RNG is left untouched).
        hidden: hidden units of the classical heads (default 4 or 5 per the paper).
        n_layers, reupload, input_scaling, encoding: circuit options (quantum agents only).
        backend: circuit simulator, ``"torch"`` (default) or ``"pennylane"`` (optional extra).
        actor_readout, critic_readout: ``"paper"`` (p_i) or ``"z"`` (<Z_i>); pure heads only.
        actor_scale, critic_scale: scalar multiplier of a pure head's output (default 1).
        trainable_scale: make the pure heads' scales trainable parameters (one scalar each).
        obs_scale: fixed per-feature multipliers of the observations, before every head.
        mlp_input_map: a fixed map of the classical heads' inputs (``INPUT_MAPS``).
        mlp_input_scaling: trainable input weights (one per observation) per classical head.
        mlp_actor_scale, mlp_critic_scale: scalar multiplier of a classical head's output.
        mlp_trainable_scale: make the classical heads' scales trainable (one scalar each).
        n_obs, n_actions: environment sizes; a quantum head needs ``n_obs`` qubits.
        dtype: parameter dtype. gamma, max_episode_steps: only to judge the critic's range.
        warn: log capacity and dead-parameter warnings.

    Returns an :class:`Agent`; logs a warning when a head cannot express the task.
    """
    if name not in _SPECS:
        raise ValueError(f"name: unknown agent {name!r}; valid names: {', '.join(AGENT_NAMES)}")
    if not isinstance(seed, int):
        raise TypeError(f"seed: expected int, got {type(seed).__name__}")
    if n_obs < 1 or n_actions < 2:
        raise ValueError(
            f"n_obs/n_actions: need n_obs >= 1 and n_actions >= 2, got {n_obs}, {n_actions}"
        )
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype: expected torch.float32 or torch.float64, got {dtype}")
    a_kind, c_kind, h_default = _SPECS[name]
    quantum = {a_kind, c_kind} != {"mlp"}
    circuit_opts: dict[str, Any] = {
        "n_layers": n_layers,
        "reupload": reupload,
        "input_scaling": input_scaling,
        "encoding": encoding,
        "backend": backend,
    }
    if not quantum:
        given = [k for k, v in circuit_opts.items() if v is not None]
        if given:
            raise ValueError(f"{given[0]}: agent {name} has no quantum head")
    if hidden is not None:
        if "mlp" not in (a_kind, c_kind):
            raise ValueError(f"hidden: agent {name} has no classical head")
        if hidden < 1:
            raise ValueError(f"hidden: expected >= 1, got {hidden}")
    if quantum and n_obs != 4 and encoding in (None, "cartpole_paper"):
        raise ValueError(
            f"n_obs: the paper's encoding needs 4 observations (one per qubit), got {n_obs}"
        )
    for role, kind, readout, scale in (
        ("actor", a_kind, actor_readout, actor_scale),
        ("critic", c_kind, critic_readout, critic_scale),
    ):
        if kind != "pure" and (readout is not None or scale is not None):
            arg = f"{role}_readout" if readout is not None else f"{role}_scale"
            raise ValueError(f"{arg}: applies to a pure quantum {role}; {name}'s {role} is {kind}")
        if readout is not None:
            _check_choice(f"{role}_readout", readout, _READOUTS)
    if trainable_scale and "pure" not in (a_kind, c_kind):
        raise ValueError(f"trainable_scale: agent {name} has no pure quantum head")
    if n_layers is not None and n_layers < 1:
        raise ValueError(f"n_layers: expected >= 1, got {n_layers}")
    mlp_opts = {
        "mlp_input_map": mlp_input_map,
        "mlp_input_scaling": mlp_input_scaling,
        "mlp_actor_scale": mlp_actor_scale,
        "mlp_critic_scale": mlp_critic_scale,
        "mlp_trainable_scale": mlp_trainable_scale,
    }
    for arg, value, kind in (
        ("mlp_actor_scale", mlp_actor_scale, a_kind),
        ("mlp_critic_scale", mlp_critic_scale, c_kind),
    ):
        if value is not None and (kind != "mlp" or not math.isfinite(value)):
            raise ValueError(f"{arg}: needs a finite float and a classical head; got {value}")
    if "mlp" not in (a_kind, c_kind):
        given = [k for k, v in mlp_opts.items() if v is not None]
        if given:
            raise ValueError(f"{given[0]}: agent {name} has no classical head")
    if mlp_input_map is not None:
        _check_choice("mlp_input_map", mlp_input_map, INPUT_MAPS)
        if n_obs != 4:
            raise ValueError(f"mlp_input_map: {mlp_input_map!r} needs n_obs=4, got {n_obs}")
    if obs_scale is not None:
        obs_scale = tuple(float(c) for c in obs_scale)
        if len(obs_scale) != n_obs or not all(math.isfinite(c) for c in obs_scale):
            raise ValueError(f"obs_scale: expected {n_obs} finite floats, got {obs_scale}")

    vqc_kwargs: dict[str, Any] = {
        "n_layers": 2 if n_layers is None else n_layers,
        "encoding": "cartpole_paper" if encoding is None else encoding,
        "rotations": "ZYZ",
        "entangler": "cnot_ring",
        "reupload": bool(reupload),
        "input_scaling": bool(input_scaling),
        "backend": "torch" if backend is None else backend,
    }
    h = h_default if hidden is None else hidden
    options = {
        k: v
        for k, v in dict(
            hidden=hidden,
            n_layers=n_layers,
            reupload=reupload,
            input_scaling=input_scaling,
            encoding=encoding,
            backend=backend,
            actor_readout=actor_readout,
            critic_readout=critic_readout,
            actor_scale=actor_scale,
            critic_scale=critic_scale,
            trainable_scale=trainable_scale,
            obs_scale=obs_scale,
            **mlp_opts,
        ).items()
        if v is not None
    }

    def make(role: str, kind: str, n_out: int, readout: str | None, scale: float | None) -> Head:
        head = _make(role, kind, n_out, readout, scale)
        mlp_scale = mlp_actor_scale if role == "actor" else mlp_critic_scale
        if kind == "mlp" and (
            mlp_input_map is not None
            or mlp_input_scaling
            or mlp_scale is not None
            or mlp_trainable_scale
            or obs_scale is not None
        ):
            return ScaledHead(
                head,
                obs_scale=obs_scale,
                input_map=mlp_input_map,
                input_scaling=bool(mlp_input_scaling),
                scale=1.0 if mlp_scale is None else mlp_scale,
                trainable_scale=bool(mlp_trainable_scale),
                dtype=dtype,
            )
        if obs_scale is not None:
            return ScaledHead(head, obs_scale=obs_scale, dtype=dtype)
        return head

    def _make(role: str, kind: str, n_out: int, readout: str | None, scale: float | None) -> Head:
        if kind == "mlp":
            return MLPHead(n_obs, h, n_out, dtype)
        if kind == "hybrid":
            measure = tuple(range(n_obs))
        elif role == "actor":
            measure = tuple(range(n_actions))
        else:  # pure critic: p0 + p1 (Q2Q) or p0 (A2Q)
            measure = (0, 1) if name == "Q2Q" else (0,)
        if max(measure) >= n_obs:
            raise ValueError(
                f"n_actions: a pure quantum actor needs n_actions <= n_obs, got {n_actions}"
            )
        return QuantumHead(
            role=role,
            mode="hybrid" if kind == "hybrid" else "pure",
            n_obs=n_obs,
            n_out=n_out,
            measure=measure,
            vqc_kwargs=vqc_kwargs,
            readout="paper" if readout is None else readout,
            scale=1.0 if scale is None else scale,
            trainable_scale=bool(trainable_scale),
            dtype=dtype,
        )

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        actor = make("actor", a_kind, n_actions, actor_readout, actor_scale)
        critic = make("critic", c_kind, 1, critic_readout, critic_scale)
    agent = Agent(name, actor, critic, seed, n_obs, n_actions, dtype, options)
    if warn:
        _warn_capacity(agent, gamma, max_episode_steps)
    return agent


def _warn_capacity(agent: Agent, gamma: float, max_episode_steps: int) -> None:
    """Log warnings for heads that cannot express CartPole's policy or values, and dead weights."""
    lo, hi = agent.actor.output_range()
    if math.isfinite(hi - lo):
        n = agent.n_actions
        cap = 1.0 / (1.0 + (n - 1) * math.exp(lo - hi))  # best action probability reachable
        if cap < ACTOR_PROB_TARGET:
            logger.warning(
                "%s: the actor's action probability is capped at %.3f (< %.2f): the policy can "
                "never become near-deterministic",
                agent.name,
                cap,
                ACTOR_PROB_TARGET,
            )
    v_lo, v_hi = agent.critic.output_range()
    v_max = value_cap(gamma, max_episode_steps)
    if v_hi < v_max or v_lo > 0.0:
        logger.warning(
            "%s: the critic's values are confined to [%.3g, %.3g], but true values span "
            "[0, %.1f] = [0, (1 - γ^%d) / (1 - γ)]",
            agent.name,
            v_lo,
            v_hi,
            v_max,
            max_episode_steps,
        )
    for role, head in (("actor", agent.actor), ("critic", agent.critic)):
        if isinstance(head, ScaledHead):
            head = head.inner
        if isinstance(head, QuantumHead):
            dead = int(head.vqc.dead_parameters().sum())
            if dead:
                total = head.vqc.weights.numel()
                logger.warning(
                    "%s: %d of %d circuit weights of the %s cannot influence its measured "
                    "wires and will never receive a gradient",
                    agent.name,
                    dead,
                    total,
                    role,
                )
