"""Aggregation over seeds: the numbers behind the report's tables and plots (no plotting here).

Conventions: "mean ± std" is the mean and the sample standard deviation (ddof = 1) over the
seeds that finished (std is NaN for a single seed). RL curves use the per-episode return at
the environment step where the episode ended; "first 500" is the step of the first episode
with return >= 500, "solved" the step where the mean of the last 100 episodes first reaches 475.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from repro.storage import CONFIG_FILE, read_json, read_metrics, run_state

__all__ = [
    "RETURN_KEYS",
    "EvalCell",
    "RLRow",
    "RunRecord",
    "episode_returns",
    "eval_tables",
    "load_runs",
    "mean_std",
    "rl_table",
    "rolling_mean",
    "seed_curves_on_grid",
    "steps_to_solve",
]

RETURN_KEYS = ("charts/episodic_return", "return", "episode/return")
"""Row keys that carry a per-episode return (the first present is used)."""
NON_EVAL_PREFIXES = ("eval", "losses", "charts", "params", "train", "time", "perf", "system")
"""First key components that are not evaluation results (training curves, bookkeeping)."""
SOLVE_WINDOW, SOLVE_THRESHOLD, MAX_RETURN = 100, 475.0, 500.0
Series = tuple[np.ndarray, np.ndarray]
"""(steps, values), both (N,)."""


@dataclass
class RunRecord:
    """One run folder as read back from disk."""

    experiment: str
    config: str
    seed: int
    run_dir: Path
    status: str
    config_values: dict[str, Any]
    summary: dict[str, Any] = field(default_factory=dict)
    _series: dict[str, Series] | None = None

    @property
    def final(self) -> dict[str, Any]:
        return dict(self.summary.get("final", {}))

    def series(self) -> dict[str, Series]:
        """Every numeric metric as (steps, values) arrays, in one streaming pass over the log."""
        if self._series is None:
            cols: dict[str, tuple[list[float], list[float]]] = {}
            for row in read_metrics(self.run_dir / "metrics.jsonl"):
                step = float(row["step"])
                for key, value in row.items():
                    if (
                        key != "step"
                        and isinstance(value, int | float)
                        and not isinstance(value, bool)
                    ):
                        xs, ys = cols.setdefault(key, ([], []))
                        xs.append(step)
                        ys.append(float(value))
            self._series = {k: (np.asarray(x), np.asarray(y)) for k, (x, y) in cols.items()}
        return self._series


def load_runs(runs_dir: Path) -> list[RunRecord]:
    """Every run folder ``runs_dir/experiment/config/seed-N`` that has a ``config.json``."""
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"runs folder {runs_dir} does not exist")
    records = []
    for cfg_path in sorted(runs_dir.glob(f"*/*/seed-*/{CONFIG_FILE}")):
        run_dir = cfg_path.parent
        try:
            seed = int(run_dir.name.removeprefix("seed-"))
        except ValueError:
            continue
        state = run_state(run_dir)
        records.append(
            RunRecord(
                run_dir.parent.parent.name,
                run_dir.parent.name,
                seed,
                run_dir,
                state.status,
                read_json(cfg_path),
                state.summary,
            )
        )
    records.sort(key=lambda r: (r.experiment, r.config, r.seed))
    return records


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample std with ddof=1 — NaN for one value, n); NaN mean for no values."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return math.nan, math.nan, 0
    std = statistics.stdev(vals) if len(vals) > 1 else math.nan
    return statistics.fmean(vals), std, len(vals)


@dataclass(frozen=True)
class EvalCell:
    mean: float
    std: float
    n: int


def eval_tables(
    records: Sequence[RunRecord],
) -> dict[str, dict[str, dict[str, dict[str, EvalCell]]]]:
    """``{experiment: {split: {config: {metric: EvalCell}}}}`` from finished runs' final values.

    A key ``eval/<split...>/<metric>`` is split at its last ``/``: ``eval/interpolate/accuracy``
    is split ``interpolate``, metric ``accuracy``; per-category keys give splits like
    ``interpolate/arithmetic__add_or_sub``. Other ``<split>/<metric>`` keys (e.g.
    ``regression/rmse``) count too unless their first component is in ``NON_EVAL_PREFIXES``.
    """
    values: dict[tuple[str, str, str, str], list[float]] = {}
    for r in records:
        if r.status != "finished":
            continue
        for key, value in r.final.items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                continue
            if key.startswith("eval/") and key.count("/") >= 2:
                split, metric = key.removeprefix("eval/").rsplit("/", 1)
            elif "/" in key and key.split("/", 1)[0] not in NON_EVAL_PREFIXES:
                split, metric = key.rsplit("/", 1)
            else:
                continue
            values.setdefault((r.experiment, split, r.config, metric), []).append(float(value))
    out: dict[str, dict[str, dict[str, dict[str, EvalCell]]]] = {}
    for (exp, split, config, metric), vals in values.items():
        cell = EvalCell(*mean_std(vals))
        out.setdefault(exp, {}).setdefault(split, {}).setdefault(config, {})[metric] = cell
    return out


def episode_returns(series: Mapping[str, Series]) -> Series | None:
    """(steps, returns) of the first of :data:`RETURN_KEYS` present in ``series``, else None."""
    for key in RETURN_KEYS:
        if key in series and len(series[key][0]):
            return series[key]
    return None


def rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` values at each index (fewer at the start). (E,) -> (E,)"""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    c = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def steps_to_solve(steps: np.ndarray, returns: np.ndarray) -> tuple[float | None, float | None]:
    """(step of the first episode with return >= 500, step where MA100 first reaches >= 475)."""
    hit = np.nonzero(returns >= MAX_RETURN)[0]
    first_500 = float(steps[hit[0]]) if hit.size else None
    solved = None
    if len(returns) >= SOLVE_WINDOW:
        ma = rolling_mean(returns, SOLVE_WINDOW)[SOLVE_WINDOW - 1 :]
        ok = np.nonzero(ma >= SOLVE_THRESHOLD)[0]
        if ok.size:
            solved = float(steps[ok[0] + SOLVE_WINDOW - 1])
    return first_500, solved


@dataclass(frozen=True)
class RLRow:
    """Steps-to-solve summary of one (experiment, config) over its seeds."""

    experiment: str
    config: str
    seeds: int
    reached_500: int
    median_first_500: float | None
    solved: int
    median_solved: float | None
    final_ma100: EvalCell
    max_step: float
    params: float | None


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _params(records: Sequence[RunRecord]) -> float | None:
    for r in records:
        if isinstance(r.summary.get("params"), int):
            return float(r.summary["params"])
        for source in (r.final, r.config_values):
            for key in ("params/total", "params", "n_params", "num_params"):
                value = source.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    return float(value)
    return None


def rl_table(records: Sequence[RunRecord]) -> list[RLRow]:
    """One :class:`RLRow` per (experiment, config) whose runs carry episode returns."""
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for r in records:
        groups.setdefault((r.experiment, r.config), []).append(r)
    out = []
    for (exp, config), runs in groups.items():
        curves = [(r, episode_returns(r.series())) for r in runs]
        curves_ok = [(r, c) for r, c in curves if c is not None]
        if not curves_ok:
            continue
        firsts, solves, finals, max_step = [], [], [], 0.0
        for _, (steps, rets) in curves_ok:
            first, solved = steps_to_solve(steps, rets)
            if first is not None:
                firsts.append(first)
            if solved is not None:
                solves.append(solved)
            finals.append(float(rets[-SOLVE_WINDOW:].mean()))
            max_step = max(max_step, float(steps[-1]))
        out.append(
            RLRow(
                exp,
                config,
                len(curves_ok),
                len(firsts),
                _median(firsts),
                len(solves),
                _median(solves),
                EvalCell(*mean_std(finals)),
                max_step,
                _params([r for r, _ in curves_ok]),
            )
        )
    return out


def seed_curves_on_grid(
    curves: Sequence[tuple[np.ndarray, np.ndarray]], grid: np.ndarray
) -> np.ndarray:
    """Each seed's curve sampled on ``grid``: the value of the last point at or before each grid
    step (NaN before the first point and after the seed's last step). -> (S, G)"""
    out = np.full((len(curves), len(grid)), np.nan)
    for i, (x, y) in enumerate(curves):
        if len(x) == 0:
            continue
        idx = np.searchsorted(x, grid, side="right") - 1  # (G,)
        ok = (idx >= 0) & (grid <= x[-1])
        out[i, ok] = y[idx[ok]]
    return out
