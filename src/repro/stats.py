"""Statistics of few-run experiments, as rliable (Agarwal et al., 2021) defines them, in numpy.

Scores are a matrix ``(R, T)``: R runs (seeds) of one config on T tasks. Confidence intervals are
percentile intervals of a stratified bootstrap: each replicate resamples the runs with
replacement within every task separately. ``tests/repro/test_stats.py`` checks every function
against the ``rliable`` package.

* :func:`iqm` — interquartile mean: the mean of the middle 50 % of all R·T scores (the 25 %
  trimmed mean; ``floor(0.25 n)`` scores cut at each end, as ``scipy.stats.trim_mean``);
* :func:`performance_profile` — the fraction of the R·T scores above each threshold τ;
* :func:`probability_of_improvement` — P(X > Y) for a run X of one config and Y of another,
  ties counting one half (the Mann-Whitney U statistic over m·n), averaged over tasks.

A single run has nothing to resample: its "interval" would be the point itself, a CI of zero
width that looks like certainty. With fewer than ``MIN_RUNS_FOR_CI`` runs (on either side of
a comparison) the interval ends are NaN, and the report says there is no CI.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = [
    "MIN_RUNS_FOR_CI",
    "Estimate",
    "bootstrap_ci",
    "iqm",
    "iqm_estimate",
    "performance_profile",
    "probability_of_improvement",
    "probability_of_improvement_estimate",
    "stratified_resample",
]

DEFAULT_REPS = 2000
MIN_RUNS_FOR_CI = 2
"""Fewer runs than this get NaN interval ends (see the module docstring)."""


@dataclass(frozen=True)
class Estimate:
    """A point estimate with a percentile bootstrap confidence interval."""

    value: float
    low: float
    high: float


def _matrix(scores: np.ndarray) -> np.ndarray:
    a = np.asarray(scores, dtype=np.float64)
    if a.ndim == 1:
        a = a[:, None]
    if a.ndim != 2 or a.shape[0] < 1 or a.shape[1] < 1:
        raise ValueError(f"scores must be (runs, tasks) with at least one of each, got {a.shape}")
    if np.isnan(a).any():
        raise ValueError("scores contain NaN; count those runs separately and leave them out")
    return a


def iqm(scores: np.ndarray) -> np.ndarray:
    """Interquartile mean over the last two axes: ``(..., R, T) -> (...)``."""
    a = np.asarray(scores, dtype=np.float64)
    flat = np.sort(a.reshape(*a.shape[:-2], -1), axis=-1)  # (..., R*T)
    n = flat.shape[-1]
    cut = int(0.25 * n)
    return np.asarray(flat[..., cut : n - cut].mean(axis=-1))


def stratified_resample(scores: np.ndarray, reps: int, rng: np.random.Generator) -> np.ndarray:
    """``reps`` bootstrap replicates of ``scores`` (R, T), runs resampled within each task.
    -> (reps, R, T)"""
    a = _matrix(scores)
    r, t = a.shape
    idx = rng.integers(0, r, size=(reps, r, t))  # (B, R, T)
    return a[idx, np.arange(t)]


def bootstrap_ci(replicates: np.ndarray, size: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval of bootstrap replicates ``(B, ...)`` -> (low (...), high (...))."""
    tail = 100 * (1 - size) / 2
    low, high = np.percentile(replicates, [tail, 100 - tail], axis=0)
    return low, high


def iqm_estimate(
    scores: np.ndarray, reps: int = DEFAULT_REPS, seed: int = 0, size: float = 0.95
) -> Estimate:
    """IQM of ``scores`` (R, T) with its stratified-bootstrap percentile interval."""
    a = _matrix(scores)
    if a.shape[0] < MIN_RUNS_FOR_CI:
        return Estimate(float(iqm(a)), np.nan, np.nan)
    reps_iqm = iqm(stratified_resample(a, reps, np.random.default_rng(seed)))  # (B,)
    low, high = bootstrap_ci(reps_iqm, size)
    return Estimate(float(iqm(a)), float(low), float(high))


def performance_profile(
    scores: np.ndarray,
    taus: np.ndarray,
    reps: int = DEFAULT_REPS,
    seed: int = 0,
    size: float = 0.95,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(profile (K,), low (K,), high (K,)): the fraction of the scores (R, T) above each τ."""
    a = _matrix(scores)
    taus = np.asarray(taus, dtype=np.float64)  # (K,)

    def profile(x: np.ndarray) -> np.ndarray:  # (..., R, T) -> (..., K)
        flat = x.reshape(*x.shape[:-2], -1)[..., None]  # (..., R*T, 1)
        return np.asarray((flat > taus).mean(axis=-2))

    if a.shape[0] < MIN_RUNS_FOR_CI:
        nan = np.full(taus.shape, np.nan)
        return profile(a), nan, nan.copy()
    low, high = bootstrap_ci(profile(stratified_resample(a, reps, np.random.default_rng(seed))))
    return profile(a), low, high


def _poi(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """P(X > Y) + P(X = Y)/2 per replicate: x (..., M, T), y (..., N, T) -> (...)"""
    gt = (x[..., :, None, :] > y[..., None, :, :]).mean(axis=(-3, -2))  # (..., T)
    eq = (x[..., :, None, :] == y[..., None, :, :]).mean(axis=(-3, -2))
    return np.asarray((gt + 0.5 * eq).mean(axis=-1))


def probability_of_improvement(x: np.ndarray, y: np.ndarray) -> float:
    """P(a run of X scores above a run of Y), ties one half, averaged over tasks: x (M, T), y (N, T)."""
    a, b = _matrix(x), _matrix(y)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"x and y need the same tasks, got {a.shape} and {b.shape}")
    return float(_poi(a, b))


def probability_of_improvement_estimate(
    x: np.ndarray,
    y: np.ndarray,
    reps: int = DEFAULT_REPS,
    seed: int = 0,
    size: float = 0.95,
    chunk: int = 250,
) -> Estimate:
    """P(X > Y) with a percentile interval of an independent stratified bootstrap (x and y
    resampled separately, each within every task)."""
    a, b = _matrix(x), _matrix(y)
    point = probability_of_improvement(a, b)
    if min(a.shape[0], b.shape[0]) < MIN_RUNS_FOR_CI:
        return Estimate(point, np.nan, np.nan)
    rng = np.random.default_rng(seed)
    parts: list[np.ndarray] = []
    for start in range(0, reps, chunk):  # bounded memory: (chunk, M, N, T) booleans
        n = min(chunk, reps - start)
        parts.append(_poi(stratified_resample(a, n, rng), stratified_resample(b, n, rng)))
    low, high = bootstrap_ci(np.concatenate(parts), size)
    return Estimate(point, float(low), float(high))
