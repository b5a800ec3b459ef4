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
Every option is one field of :class:`AgentConfig`; ``build_agent(AgentConfig(...), seed)`` (or
``build_agent(name, seed, **options)``) builds the agent.
"""

from __future__ import annotations

import dataclasses
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
    "AgentConfig",
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


@dataclass(frozen=True)
class AgentConfig:
    """An agent: one of the paper's eight architectures, with optional improvements.

    The defaults are the paper's. An option that differs from its default must apply to one of
    the agent's heads (``n_layers`` to a quantum head, ``hidden`` to a classical one, see
    ``_APPLIES``); :func:`build_agent` raises a ValueError naming it otherwise.
    """

    name: str = "HA2Q"
    """agent: A2C, A2Q, Q2C, Q2Q, A2C5, HA2Q, HQ2C or HQ2Q"""
    hidden: int = 0
    """hidden units of the classical heads (0: the paper's 4 or 5)"""
    n_layers: int = 2
    """circuit layers of the quantum heads"""
    reupload: bool = False
    """data re-uploading (encoding before every layer)"""
    input_scaling: bool = False
    """trainable input scaling weights of the circuits"""
    encoding: str = "cartpole_paper"
    """the circuits' encoding: cartpole_paper (the paper's, 4 observations) or angle (RX(x_i))"""
    backend: str = "torch"
    """circuit simulator: torch, or pennylane (an optional extra)"""
    actor_readout: str = "paper"
    """pure quantum actor logits: 'paper' p_i = (<Z_i>+1)/2, or 'z' <Z_i>"""
    critic_readout: str = "paper"
    """pure quantum critic value: 'paper' sum of p_i, or 'z' sum of <Z_i>"""
    actor_scale: float = 1.0
    """scalar multiplier of the pure quantum actor's logits (initial value if trainable)"""
    critic_scale: float = 1.0
    """scalar multiplier of the pure quantum critic's value (initial value if trainable)"""
    trainable_scale: bool = False
    """make the pure quantum heads' scalar scales trainable (one parameter each)"""
    obs_scale: tuple[float, ...] | None = None
    """fixed per-feature multipliers of the observations, before every head (None: off)"""
    mlp_input_map: str | None = None
    """a fixed map of the classical heads' inputs: cartpole_paper (the encoding's angles)"""
    mlp_input_scaling: bool = False
    """trainable input weights (one per observation) of each classical head"""
    mlp_actor_scale: float = 1.0
    """scalar multiplier of a classical actor's logits (initial value if trainable)"""
    mlp_critic_scale: float = 1.0
    """scalar multiplier of a classical critic's value (initial value if trainable)"""
    mlp_trainable_scale: bool = False
    """make the classical heads' scalar scales trainable (one parameter each)"""

    def options(self) -> dict[str, Any]:
        """The options that differ from the paper's defaults (``Agent.options``)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if f.name != "name" and getattr(self, f.name) != f.default
        }


_BOTH = ("actor", "critic")
_QUANTUM = ("pure", "hybrid")
_KIND_WORDS = {"mlp": "classical", "pure": "pure quantum", "hybrid": "hybrid"}
#: option -> (roles, head kinds, in words): a non-default option needs a head of that role and kind
_APPLIES: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "hidden": (_BOTH, ("mlp",), "a classical head"),
    **{
        k: (_BOTH, _QUANTUM, "a quantum head")
        for k in ("n_layers", "reupload", "input_scaling", "encoding", "backend")
    },
    "actor_readout": (("actor",), ("pure",), "a pure quantum actor"),
    "actor_scale": (("actor",), ("pure",), "a pure quantum actor"),
    "critic_readout": (("critic",), ("pure",), "a pure quantum critic"),
    "critic_scale": (("critic",), ("pure",), "a pure quantum critic"),
    "trainable_scale": (_BOTH, ("pure",), "a pure quantum head"),
    "obs_scale": (_BOTH, ("mlp", *_QUANTUM), "a head"),
    "mlp_input_map": (_BOTH, ("mlp",), "a classical head"),
    "mlp_input_scaling": (_BOTH, ("mlp",), "a classical head"),
    "mlp_trainable_scale": (_BOTH, ("mlp",), "a classical head"),
    "mlp_actor_scale": (("actor",), ("mlp",), "a classical actor"),
    "mlp_critic_scale": (("critic",), ("mlp",), "a classical critic"),
}


def _agent_config(agent: str | AgentConfig, options: Mapping[str, Any]) -> AgentConfig:
    """``build_agent``'s first argument and keyword options as one checked AgentConfig."""
    valid = [f.name for f in dataclasses.fields(AgentConfig) if f.name != "name"]
    unknown = sorted(set(options) - set(valid))
    if unknown:
        raise TypeError(f"{unknown[0]}: not an agent option; valid options: {', '.join(valid)}")
    if isinstance(agent, str):
        config = AgentConfig(name=agent, **options)
    elif isinstance(agent, AgentConfig):
        config = dataclasses.replace(agent, **options)
    else:
        raise TypeError(f"agent: expected a name or an AgentConfig, got {type(agent).__name__}")
    if config.name not in _SPECS:
        raise ValueError(
            f"name: unknown agent {config.name!r}; valid names: {', '.join(AGENT_NAMES)}"
        )
    return config


def _check_options(config: AgentConfig, n_obs: int, n_actions: int) -> None:
    """ValueError naming the first option that does not apply to the agent or is out of range."""
    a_kind, c_kind, _ = _SPECS[config.name]
    heads = (("actor", a_kind), ("critic", c_kind))
    for opt in config.options():
        roles, kinds, what = _APPLIES[opt]
        if not any(role in roles and kind in kinds for role, kind in heads):
            raise ValueError(
                f"{opt}: applies to {what}; agent {config.name} has a "
                f"{_KIND_WORDS[a_kind]} actor and a {_KIND_WORDS[c_kind]} critic"
            )
    if config.hidden < 0 or config.n_layers < 1:
        raise ValueError(
            f"hidden/n_layers: expected hidden >= 0 (0: the paper's) and n_layers >= 1, got "
            f"{config.hidden}, {config.n_layers}"
        )
    _check_choice("actor_readout", config.actor_readout, _READOUTS)
    _check_choice("critic_readout", config.critic_readout, _READOUTS)
    for name in ("actor_scale", "critic_scale", "mlp_actor_scale", "mlp_critic_scale"):
        if not math.isfinite(getattr(config, name)):
            raise ValueError(f"{name}: expected a finite float, got {getattr(config, name)}")
    if config.mlp_input_map is not None:
        _check_choice("mlp_input_map", config.mlp_input_map, INPUT_MAPS)
        if n_obs != 4:
            raise ValueError(f"mlp_input_map: {config.mlp_input_map!r} needs n_obs=4, got {n_obs}")
    quantum = {a_kind, c_kind} != {"mlp"}
    if quantum and n_obs != 4 and config.encoding == "cartpole_paper":
        raise ValueError(
            f"n_obs: the paper's encoding needs 4 observations (one per qubit), got {n_obs}"
        )
    if a_kind == "pure" and n_actions > n_obs:
        raise ValueError(
            f"n_actions: a pure quantum actor needs n_actions <= n_obs, got {n_actions}"
        )
    obs = config.obs_scale
    if obs is not None and (len(obs) != n_obs or not all(math.isfinite(c) for c in obs)):
        raise ValueError(f"obs_scale: expected {n_obs} finite floats, got {tuple(obs)}")


def _quantum_head(
    config: AgentConfig, role: str, kind: str, n_obs: int, n_out: int, dtype: torch.dtype
) -> QuantumHead:
    """A hybrid head reads every wire; a pure actor one wire per action; a pure critic p0 + p1
    (Q2Q) or p0 (A2Q)."""
    if kind == "hybrid":
        measure = tuple(range(n_obs))
    elif role == "actor":
        measure = tuple(range(n_out))
    else:
        measure = (0, 1) if config.name == "Q2Q" else (0,)
    vqc_kwargs = {
        "n_layers": config.n_layers,
        "encoding": config.encoding,
        "rotations": "ZYZ",
        "entangler": "cnot_ring",
        "reupload": config.reupload,
        "input_scaling": config.input_scaling,
        "backend": config.backend,
    }
    return QuantumHead(
        role=role,
        mode=kind,
        n_obs=n_obs,
        n_out=n_out,
        measure=measure,
        vqc_kwargs=vqc_kwargs,
        readout=getattr(config, f"{role}_readout"),
        scale=getattr(config, f"{role}_scale"),
        trainable_scale=config.trainable_scale,
        dtype=dtype,
    )


def _head(
    config: AgentConfig, role: str, kind: str, n_obs: int, n_out: int, dtype: torch.dtype
) -> Head:
    """One head; inside a ``ScaledHead`` when it gets observation scaling or classical tricks."""
    if kind != "mlp":
        head: Head = _quantum_head(config, role, kind, n_obs, n_out, dtype)
        tricks: dict[str, Any] = {}
    else:
        hidden = config.hidden or _SPECS[config.name][2]
        head = MLPHead(n_obs, hidden, n_out, dtype)
        tricks = {
            "input_map": config.mlp_input_map,
            "input_scaling": config.mlp_input_scaling,
            "scale": getattr(config, f"mlp_{role}_scale"),
            "trainable_scale": config.mlp_trainable_scale,
        }
    obs = None if config.obs_scale is None else tuple(float(c) for c in config.obs_scale)
    plain = {"input_map": None, "input_scaling": False, "scale": 1.0, "trainable_scale": False}
    if obs is None and tricks in ({}, plain):
        return head
    return ScaledHead(head, obs_scale=obs, dtype=dtype, **tricks)


def build_agent(
    agent: str | AgentConfig,
    seed: int = 0,
    *,
    n_obs: int = 4,
    n_actions: int = 2,
    dtype: torch.dtype = torch.float32,
    gamma: float = 0.99,
    max_episode_steps: int = 500,
    warn: bool = True,
    **options: Any,
) -> Agent:
    """Build one of the paper's agents, optionally with improvements.

    Args:
        agent: an :class:`AgentConfig`, or a name of ``AGENT_NAMES`` (A2C, A2Q, Q2C, Q2Q, A2C5,
            HA2Q, HQ2C, HQ2Q); ``build_agent("Q2Q", n_layers=4)`` is
            ``build_agent(AgentConfig("Q2Q", n_layers=4))``.
        seed: initialises all weights (the global torch RNG is left untouched).
        n_obs, n_actions: environment sizes; a quantum head needs ``n_obs`` qubits.
        dtype: parameter dtype. gamma, max_episode_steps: only to judge the critic's range.
        warn: log capacity and dead-parameter warnings.
        options: :class:`AgentConfig` fields (their docs there), replacing the agent's.

    Returns an :class:`Agent`; logs a warning when a head cannot express the task.
    """
    config = _agent_config(agent, options)
    if not isinstance(seed, int):
        raise TypeError(f"seed: expected int, got {type(seed).__name__}")
    if n_obs < 1 or n_actions < 2:
        raise ValueError(
            f"n_obs/n_actions: need n_obs >= 1 and n_actions >= 2, got {n_obs}, {n_actions}"
        )
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype: expected torch.float32 or torch.float64, got {dtype}")
    _check_options(config, n_obs, n_actions)
    a_kind, c_kind, _ = _SPECS[config.name]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        actor = _head(config, "actor", a_kind, n_obs, n_actions, dtype)
        critic = _head(config, "critic", c_kind, n_obs, 1, dtype)
    out = Agent(config.name, actor, critic, seed, n_obs, n_actions, dtype, config.options())
    if warn:
        _warn_capacity(out, gamma, max_episode_steps)
    return out


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
