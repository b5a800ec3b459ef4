"""Training loops: one agent (``train``) or a population in lockstep (``train_population``).

Both yield one row per finished episode, in the experiment protocol of ``repro`` (metric rows)::

    {"step", "episode", "charts/episodic_return", "charts/episodic_length", "wall_time",
     "circuit_calls", "losses/actor", "losses/critic"}

``step`` is the agent's environment steps when the episode ended (strictly increasing; with
several environments per agent, environments count in index order within a lockstep step).
The losses are means over the updates since the agent's previous row; a row with no update since
that row (several episodes ended in one rollout) has no loss keys. ``circuit_calls`` counts
circuit executions (one per head evaluation per observation) the agent has made so far.

Checkpoints are one file per agent (``member_state`` of :class:`qa2c.a2c.A2C`, plain tensors and
lists, ``torch.load(weights_only=True)``), written atomically after an update every
``checkpoint_every`` environment steps and at the end. A run that finds its checkpoint resumes
from it and yields exactly the rows an uninterrupted run yields after that point.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from ._atomic import atomic_write
from .a2c import A2C, A2CConfig, check_finite_weights, check_int
from .agents import Agent

__all__ = ["load_checkpoint", "loss_keys", "save_checkpoint", "train", "train_population"]


def loss_keys(losses: tuple[float, float] | None) -> dict[str, float]:
    """A row's loss entries: none when the agent made no update since its previous row."""
    if losses is None:
        return {}
    return {"losses/actor": losses[0], "losses/critic": losses[1]}


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """Write ``state`` to ``path`` atomically (temp file in the same folder, then os.replace)."""
    atomic_write(Path(path), lambda tmp: torch.save(state, tmp))


def load_checkpoint(path: Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (weights_only)."""
    state: dict[str, Any] = torch.load(path, weights_only=True)
    return state


def train(
    agent: Agent,
    total_steps: int,
    seed: int = 0,
    config: A2CConfig | None = None,
    env_id: str = "CartPole-v1",
    checkpoint_path: Path | None = None,
    checkpoint_every: int = 0,
) -> Iterator[dict[str, Any]]:
    """Train ``agent`` (its weights are copied, never modified) for ``total_steps`` env steps.

    ``seed`` seeds the environments and action sampling (the weights come from the agent).
    ``checkpoint_path``: resume from it if it exists; save to it every ``checkpoint_every``
    environment steps (0: only at the end). Yields one row per finished episode.
    """
    seed = check_int("seed", seed, 0)
    paths = None if checkpoint_path is None else [Path(checkpoint_path)]
    rows = train_population([agent], [seed], total_steps, config, env_id, paths, checkpoint_every)
    return (row for _, row in rows)


def train_population(
    agents: Sequence[Agent],
    seeds: Sequence[int],
    total_steps: int,
    config: A2CConfig | None = None,
    env_id: str = "CartPole-v1",
    checkpoint_paths: Sequence[Path] | None = None,
    checkpoint_every: int = 0,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Train agents of one architecture in lockstep; yields ``(agent index, row)``.

    Every agent's rows are identical (up to float rounding of the batched kernels) to training it
    alone with ``train(agents[i], total_steps, seeds[i], ...)``. Agents whose checkpoints are at
    different steps (or missing) run as separate lockstep groups, one after another.
    Environments that return a non-finite observation or reward stop training with a ValueError
    naming the step and the environment; the last checkpoint written stays as it was.
    """
    config = A2CConfig() if config is None else config
    config.validate()
    total_steps = check_int("total_steps", total_steps, 1)
    checkpoint_every = check_int("checkpoint_every", checkpoint_every, 0)
    seeds = [check_int(f"seeds[{i}]", s, 0) for i, s in enumerate(seeds)]
    check_finite_weights(agents)
    if len(agents) != len(seeds) or not agents:
        raise ValueError(f"agents/seeds: need equally many (> 0), got {len(agents)}, {len(seeds)}")
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: must be distinct within a population, got {list(seeds)}")
    paths: list[Path | None] = (
        [None] * len(agents) if checkpoint_paths is None else [Path(p) for p in checkpoint_paths]
    )
    if len(paths) != len(agents):
        raise ValueError(f"checkpoint_paths: expected {len(agents)}, got {len(paths)}")
    return _run_groups(agents, seeds, total_steps, config, env_id, paths, checkpoint_every)


def _run_groups(
    agents: Sequence[Agent],
    seeds: list[int],
    total_steps: int,
    config: A2CConfig,
    env_id: str,
    paths: list[Path | None],
    checkpoint_every: int,
) -> Iterator[tuple[int, dict[str, Any]]]:
    states = [None if p is None or not p.exists() else load_checkpoint(p) for p in paths]
    groups: dict[int, list[int]] = {}  # resume step -> members
    for i, st in enumerate(states):
        groups.setdefault(-1 if st is None else int(st["vec_steps"]), []).append(i)
    for key in sorted(groups, reverse=True):
        idx = groups[key]
        learner = A2C([agents[i] for i in idx], [seeds[i] for i in idx], config, env_id)
        if any(paths[i] is not None for i in idx):
            learner.envs.check_checkpointable()  # before the first step, not at the first save
        if key >= 0:
            learner.load_member_states([st for i in idx if (st := states[i]) is not None])
        offsets = [0.0 if (st := states[i]) is None else float(st["wall_time"]) for i in idx]
        for j, row in _run(
            learner, total_steps, [paths[i] for i in idx], checkpoint_every, offsets
        ):
            yield idx[j], row


def _run(
    learner: A2C,
    total_steps: int,
    paths: list[Path | None],
    every: int,
    offsets: list[float],
) -> Iterator[tuple[int, dict[str, Any]]]:
    start = time.perf_counter()
    last_ckpt = learner.steps
    while learner.steps < total_steps:
        ended = learner.iterate()
        for end in ended:
            yield (
                end.agent,
                {
                    "step": end.step,
                    "episode": end.episode,
                    "charts/episodic_return": end.ret,
                    "charts/episodic_length": end.length,
                    "wall_time": offsets[end.agent] + time.perf_counter() - start,
                    "circuit_calls": learner.circuit_calls,
                    **loss_keys(learner.pop_losses(end.agent)),
                },
            )
        finished = learner.steps >= total_steps
        if (every and learner.steps - last_ckpt >= every) or finished:
            last_ckpt = learner.steps
            for j, p in enumerate(paths):
                if p is not None:
                    st = learner.member_state(j)
                    st["wall_time"] = offsets[j] + time.perf_counter() - start
                    save_checkpoint(st, p)
