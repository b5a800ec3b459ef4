"""The QA2C paper's CartPole-v1 experiment, and improved pure-quantum agents.

Protocol (shared/DESIGN.md): ``CartPoleConfig``, ``CONFIGS`` (the paper's eight agents with the
paper's algorithm, plus improved configurations) and ``run(config, run_dir)`` yielding one row per
episode. Two engines behind one switch, ``CartPoleConfig.engine``: ``"jax"`` (default; the whole
training loop compiled, ``qa2c.jax_engine``) and ``"torch"`` (``qa2c.train``, the reference, any
Gymnasium environment); same rows, run folders, resume and report either way (the random streams
differ, so individual curves do). ``run_many(configs, run_dirs)`` trains several seeds of one
configuration in one process (population training, in lockstep); each member's rows equal those
of ``run`` for that seed, and each member keeps its own checkpoint ``run_dir/checkpoint.pt``
(torch) or ``checkpoint_jax.npz`` (jax), resumable by either entry point.

The config nests the agent (``CartPoleConfig.agent``: ``qa2c.agents.AgentConfig``) and the
algorithm (``CartPoleConfig.a2c``: ``qa2c.a2c.A2CConfig``); each field is declared once, there.
Run folders written with the earlier flat config resume: ``upgrade_config`` (declared in
``PROTOCOL``) reads their ``config.json`` into the nested shape.

Example (the paper's figure, one config, 10 seeds in one process)::

    from qa2c.experiments.cartpole import CONFIGS, run_many
    cfgs = [dataclasses.replace(CONFIGS["HA2Q"], seed=s) for s in range(10)]
    more_envs = dataclasses.replace(cfgs[0], a2c=dataclasses.replace(cfgs[0].a2c, n_envs=4))
    for i, row in run_many(cfgs, [Path(f"/tmp/ha2q/{s}") for s in range(10)]): ...
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..a2c import A2CConfig
from ..agents import AGENT_NAMES, Agent, AgentConfig, build_agent
from ..train import train_population

__all__ = [
    "CONFIGS",
    "CartPoleConfig",
    "curve_stats",
    "make_agent",
    "run",
    "run_many",
    "upgrade_config",
]

_DTYPES = {"float32": torch.float32, "float64": torch.float64}
#: the JAX engine's checkpoint file in a run folder (the torch engine's is ``checkpoint.pt``)
JAX_CHECKPOINT = "checkpoint_jax.npz"


@dataclass(frozen=True)
class CartPoleConfig:
    """One training run of an actor-critic agent on CartPole-v1 (defaults: the paper's HA2Q).

    The agent's architecture and the algorithm are nested configs (``--set agent.n_layers=4``,
    ``--set a2c.n_envs=16`` on the command line); their defaults are the paper's.
    """

    seed: int = 0
    """seed of the weights, the environments and the action sampling"""
    agent: AgentConfig = field(default_factory=AgentConfig)
    """the agent: one of the paper's eight architectures and its options"""
    a2c: A2CConfig = field(default_factory=A2CConfig)
    """the algorithm: the paper's one-step A2C, or the improved n-envs / GAE / ... form"""
    total_steps: int = 1_000_000
    """environment steps per agent"""
    checkpoint_every: int = 50_000
    """environment steps between checkpoints"""
    env_id: str = "CartPole-v1"
    """Gymnasium environment id"""
    dtype: str = "float32"
    """float32 or float64"""
    engine: str = "jax"
    """'jax' (the whole loop compiled; CartPole-v1, Acrobot-v1; needs the jax extra) or 'torch'
    (the reference; any Gymnasium env)"""


ENGINES = ("jax", "torch")


def upgrade_config(stored: dict[str, Any]) -> dict[str, Any]:
    """A run folder's ``config.json`` in the flat shape of earlier releases -> the nested shape.

    Flat: agent and algorithm fields at the top level, ``"agent"`` the agent's name. The fields
    the flat shape lacked could not be set then, so they get the values those runs used: the
    defaults of ``AgentConfig`` / ``A2CConfig`` (e.g. ``a2c.adam_eps``, ``agent.encoding``) and
    ``engine="torch"`` when there is no ``engine`` (written before the JAX engine existed). Any
    other field stays as stored (an unknown one remains a mismatch). A nested config is returned
    as it is. The runner compares the result; it never rewrites the folder's file.
    """
    if not isinstance(stored.get("agent"), str):
        return stored
    agent_keys = {f.name for f in dataclasses.fields(AgentConfig)}
    a2c_keys = {f.name for f in dataclasses.fields(A2CConfig)}
    flat = {"engine": "torch", **stored, "name": stored["agent"]}
    out = {k: v for k, v in flat.items() if k not in agent_keys | a2c_keys | {"agent"}}
    agent = {k: flat[k] for k in agent_keys & set(flat)}
    a2c = {k: flat[k] for k in a2c_keys & set(flat)}
    out["agent"] = {**dataclasses.asdict(AgentConfig()), **agent}
    out["a2c"] = {**dataclasses.asdict(A2CConfig()), **a2c}
    result: dict[str, Any] = json.loads(json.dumps(out))  # tuples as lists, as in a config.json
    return result


def make_agent(config: CartPoleConfig, warn: bool = True) -> Agent:
    """Build the config's agent (weights from ``config.seed``)."""
    if config.dtype not in _DTYPES:
        raise ValueError(f"dtype: expected one of {tuple(_DTYPES)}, got {config.dtype!r}")
    return build_agent(
        config.agent, config.seed, dtype=_DTYPES[config.dtype], gamma=config.a2c.gamma, warn=warn
    )


def _dotted(config: Any, prefix: str = "") -> dict[str, Any]:
    """A (nested) config's fields as ``{"a2c.n_envs": 16, ...}``."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            out.update(_dotted(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out


def run(config: CartPoleConfig, run_dir: Path) -> Iterator[dict[str, Any]]:
    """Train one agent; rows per episode; resumes from ``run_dir/checkpoint.pt`` if present."""
    for _, row in run_many([config], [run_dir]):
        yield row


def run_many(
    configs: list[CartPoleConfig], run_dirs: list[Path]
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Train configs that differ only in ``seed`` together (population training).

    Yields ``(index into configs, row)``; each member's rows are those ``run`` yields for it.
    Members whose checkpoints are at different steps run as separate lockstep groups.
    """
    if not configs or len(configs) != len(run_dirs):
        raise ValueError(
            f"configs/run_dirs: need equally many (> 0), got {len(configs)}, {len(run_dirs)}"
        )
    ref = _dotted(configs[0])
    for i, c in enumerate(configs):
        diff = {k: (ref[k], v) for k, v in _dotted(c).items() if k != "seed" and ref[k] != v}
        if diff:
            raise ValueError(
                f"configs[{i}]: run_many needs configs that differ only in seed; {diff}"
            )
    engine = configs[0].engine
    if engine not in ENGINES:
        raise ValueError(f"engine: expected one of {ENGINES}, got {engine!r}")
    agents = [make_agent(c, warn=i == 0) for i, c in enumerate(configs)]
    if engine == "jax":
        yield from _run_jax(configs, run_dirs, agents)
        return
    yield from train_population(
        agents,
        [c.seed for c in configs],
        configs[0].total_steps,
        configs[0].a2c,
        configs[0].env_id,
        [Path(d) / "checkpoint.pt" for d in run_dirs],
        configs[0].checkpoint_every,
    )


def _run_jax(
    configs: list[CartPoleConfig], run_dirs: list[Path], agents: list[Agent]
) -> Iterator[tuple[int, dict[str, Any]]]:
    """The JAX engine (``qa2c.jax_engine``): same rows and resume; checkpoints ``.npz``."""
    cfg = configs[0]
    try:
        from ..jax_engine.envs import JAX_ENV_IDS
        from ..jax_engine.train import train_population as train_jax
    except ImportError as e:
        raise ImportError(f"{e}; or set engine='torch'") from e
    if cfg.env_id not in JAX_ENV_IDS:
        raise ValueError(
            f"env_id: {cfg.env_id!r} has no JAX version (have {', '.join(JAX_ENV_IDS)}); "
            "set engine='torch'"
        )
    yield from train_jax(
        agents,
        [c.seed for c in configs],
        cfg.total_steps,
        cfg.a2c,
        cfg.env_id,
        [Path(d) / JAX_CHECKPOINT for d in run_dirs],
        cfg.checkpoint_every,
    )


def curve_stats(
    rows: list[dict[str, Any]], window: int = 100, threshold: float = 475.0, tail: int = 100
) -> dict[str, Any]:
    """The paper-table numbers of one run's episode rows (in order).

    Returns ``first_500_step`` (env steps at the first episode with return >= 500, or None),
    ``solved_step`` (env steps when the ``window``-episode moving average first reaches
    ``threshold``, or None), ``best_ma`` (best moving average, None if fewer episodes),
    ``mean_last`` (mean return of the last ``tail`` episodes), ``steps`` and ``episodes``.
    """
    rets = [float(r["charts/episodic_return"]) for r in rows]
    steps = [int(r["step"]) for r in rows]
    first = next((s for s, g in zip(steps, rets) if g >= 500.0), None)
    solved, best, acc = None, None, 0.0
    for i, g in enumerate(rets):
        acc += g - (rets[i - window] if i >= window else 0.0)
        if i >= window - 1:
            ma = acc / window
            best = ma if best is None else max(best, ma)
            if solved is None and ma >= threshold:
                solved = steps[i]
    last = rets[-tail:]
    return {
        "first_500_step": first,
        "solved_step": solved,
        "best_ma": best,
        "mean_last": sum(last) / len(last) if last else None,
        "steps": steps[-1] if steps else 0,
        "episodes": len(rows),
    }


# The improved pure-quantum agent (Q2Q with the improvements): actor and critic are circuits only,
# 4 qubits, 4 layers, data re-uploading with trainable input scaling, readout <Z_i>, plus ONE
# trainable scalar output scale each (counted): 2 x (48 + 16) + 2 = 130 parameters (16 of the
# 96 rotation angles are dead: the last rotations that commute with the measurement).
# Algorithm: 16 environments per agent, 16-step rollouts, GAE(0.95), per-agent advantage
# normalisation, Adam lr 0.01 annealed linearly to 0 over 200k steps, per-agent gradient clipping
# 0.5, no γ^t factor on the actor loss. The output scales start where the readouts can express a
# near-deterministic policy (β = 4: p(a) up to sigmoid(8)) and CartPole's values (±100).
_IMPROVED_A2C = A2CConfig(
    gamma=0.99,
    lr_actor=0.01,
    lr_critic=0.01,
    n_envs=16,
    n_steps=16,
    gae_lambda=0.95,
    discount_actor=False,
    normalize_advantage=True,
    max_grad_norm=0.5,
    lr_anneal_steps=200_000,
)
_IMPROVED_Q2Q = AgentConfig(
    "Q2Q",
    n_layers=4,
    reupload=True,
    input_scaling=True,
    actor_readout="z",
    critic_readout="z",
    actor_scale=4.0,
    critic_scale=50.0,
    trainable_scale=True,
)

CONFIGS: dict[str, CartPoleConfig] = {
    **{name: CartPoleConfig(agent=AgentConfig(name)) for name in AGENT_NAMES},
    # pure quantum, 130 parameters
    "Q2Q-improved": CartPoleConfig(agent=_IMPROVED_Q2Q, a2c=_IMPROVED_A2C, total_steps=200_000),
    # classical MLPs of the same size (hidden 10: 72 + 61 = 133 parameters), same algorithm
    "A2C-improved": CartPoleConfig(
        agent=AgentConfig("A2C", hidden=10), a2c=_IMPROVED_A2C, total_steps=200_000
    ),
}


def _validate_config(config: CartPoleConfig) -> None:
    """Raise ValueError naming the first bad value (before the runner creates any folder)."""
    values = _dotted(config)
    if config.engine not in ENGINES:
        raise ValueError(f"engine: expected one of {ENGINES}, got {config.engine!r}")
    for name in ("total_steps", "checkpoint_every", "a2c.n_envs", "a2c.n_steps"):
        value = values[name]
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    config.a2c.validate()
    agent = make_agent(config, warn=False)  # agent, dtype and head options (milliseconds)
    if config.engine == "jax":
        try:
            from ..jax_engine.envs import JAX_ENV_IDS
            from ..jax_engine.heads import agent_fns
        except ImportError:  # the run itself names what to install
            return
        if config.env_id not in JAX_ENV_IDS:
            raise ValueError(
                f"env_id: {config.env_id!r} has no JAX version (have {', '.join(JAX_ENV_IDS)}); "
                "set engine='torch'"
            )
        agent_fns(agent)  # heads the JAX engine cannot run (e.g. the pennylane backend) raise


# What the experiment runner needs to know, as plain data (DESIGN.md convention 11).
PROTOCOL: dict[str, Any] = {
    "score": "charts/episodic_return",
    "score_per": "episode",
    "score_window": 100,
    "solve_threshold": 475.0,
    "solve_window": 100,
    "max_score": 500.0,
    "random_score": 22.0,  # mean CartPole-v1 return of a uniformly random policy (the paper's line)
    "progress_unit": "env step",
    "progress_total": lambda config: config.total_steps,
    "params": lambda config: make_agent(config, warn=False).num_parameters(),
    "validate": _validate_config,
    "checkpoint": ("checkpoint.pt", JAX_CHECKPOINT),
    "upgrade_config": upgrade_config,
}
