"""Learning curves of the two engines agree within the seeds' spread on a short run.

The engines draw different random streams (JAX keys vs NumPy/torch seeds), so their curves cannot
be compared run by run; what must agree is the distribution over seeds. ``A2C-improved`` (the
classical agent with the improved algorithm: 16 envs x 16 steps, GAE, lr 0.01) learns CartPole
within 20k steps, which makes the check cheap (torch ~3 s, JAX ~15 s of CPU, mostly compile).
What it proves: both engines learn (late returns well above the early, near-random ones), and the
mean over 8 seeds of the late returns differs between the engines by less than the seeds' own
standard deviation (about two standard errors of the difference). It does not resolve small
biases (a few percent of the learning speed); the per-update equality in float64 is the exact
test (``test_jax_update.py``). Deterministic: fixed seeds in both engines.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("gymnax")
pytest.importorskip("optax")

import qa2c.jax_engine  # noqa: F401
from qa2c.experiments.cartpole import CONFIGS, make_agent
from qa2c.jax_engine.train import train_population as train_jax
from qa2c.train import train_population as train_torch

STEPS = 20_000
SEEDS = list(range(8))


def _returns(train: object) -> tuple[np.ndarray, np.ndarray]:
    """Per seed: mean return of the episodes ending in the first and the last quarter."""
    cfg = CONFIGS["A2C-improved"]
    agents = [make_agent(dataclasses.replace(cfg, seed=s), warn=False) for s in SEEDS]
    rows: list[list[tuple[int, float]]] = [[] for _ in SEEDS]
    for i, row in train(agents, SEEDS, STEPS, cfg.a2c):  # type: ignore[operator]
        rows[i].append((row["step"], row["charts/episodic_return"]))
    early = [np.mean([r for s, r in rs if s <= STEPS // 4]) for rs in rows]
    late = [np.mean([r for s, r in rs if s > STEPS * 3 // 4]) for rs in rows]
    return np.array(early), np.array(late)


def test_learning_curves_agree_within_seed_spread() -> None:
    early_t, late_t = _returns(train_torch)
    early_j, late_j = _returns(train_jax)
    for early, late in ((early_t, late_t), (early_j, late_j)):
        assert early.mean() < 35  # near the random policy's ~22
        assert late.mean() > 2 * early.mean()  # both engines learn
    spread = max(late_t.std(ddof=1), late_j.std(ddof=1))
    assert abs(late_j.mean() - late_t.mean()) < spread, (late_t, late_j)
