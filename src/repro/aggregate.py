"""Aggregation over seeds: the numbers behind the report's tables and plots (no plotting here).

Conventions: "mean ± std" is the mean and the sample standard deviation (ddof = 1) over the
seeds that finished (std is NaN for a single seed); seeds whose value is NaN are counted, not
dropped silently. What a score is, and when a run is solved, is what the experiment declares
in its ``PROTOCOL`` (:class:`repro.registry.Protocol`); nothing here knows an experiment by name.
For ``score_per="episode"`` curves use the per-episode score at the step where the episode
ended; "first max" is the step of the first episode at the declared ``max_score``, "solved" the
step where the mean of the last ``solve_window`` episodes first reaches ``solve_threshold``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import re
import statistics
import warnings
import zlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from repro.registry import (
    EXPERIMENTS,
    ExperimentUnavailableError,
    Protocol,
    load_experiment,
)
from repro.stats import (
    DEFAULT_REPS,
    Estimate,
    iqm_estimate,
    performance_profile,
    probability_of_improvement_estimate,
)
from repro.storage import (
    CONFIG_FILE,
    METRICS_FILE,
    CorruptFileError,
    dotted_json,
    read_metrics,
    run_state,
)

__all__ = [
    "EvalCell",
    "ExperimentResults",
    "RLRow",
    "ReportData",
    "RunRecord",
    "ScoreRow",
    "ScoreSection",
    "bootstrap_seed",
    "compute_report",
    "eval_tables",
    "load_runs",
    "mean_std",
    "protocol_of",
    "rl_table",
    "rolling_mean",
    "run_score",
    "run_score_at",
    "score_curve",
    "score_section",
    "seed_curves_on_grid",
    "seed_of",
    "solve_steps",
    "summarize",
]

NON_EVAL_PREFIXES = ("eval", "losses", "charts", "params", "train", "time", "perf", "system")
"""First key components that are not evaluation results (training curves, bookkeeping)."""
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
    error: str = ""
    """Why the run's files could not be read (status ``corrupt``)."""
    _series: dict[str, Series] | None = None

    @property
    def final(self) -> dict[str, Any]:
        """``summary.json``'s ``final``: the last value logged of each key, whatever its step."""
        return dict(self.summary.get("final", {}))

    def final_at(self, key: str) -> tuple[float, float] | None:
        """(step, value) of ``key`` at the last step of this run that logged it as a number;
        None when no step did. The step says where the value comes from: the report pools a
        metric's final values over seeds and must not pool different steps silently."""
        return self.final_values().get(key)

    def final_values(self) -> dict[str, tuple[float, float]]:
        """:meth:`final_at` of every numeric key."""
        return {k: (float(x[-1]), float(y[-1])) for k, (x, y) in self.series().items() if len(x)}

    def series(self) -> dict[str, Series]:
        """Every numeric metric as (steps, values) arrays, in one streaming pass over the log."""
        if self._series is None:
            cols: dict[str, tuple[list[float], list[float]]] = {}
            for row in read_metrics(self.run_dir / METRICS_FILE):
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


RUN_DIR_NAME = re.compile(r"seed-(0|[1-9][0-9]*)")
"""The name the runner gives a run folder (``seed-{seed}``, seeds >= 0); nothing else is a run."""


def seed_of(run_dir: Path) -> int | None:
    """The seed of a run folder named exactly as the runner names it; None for any other name
    (``seed-01``, ``seed-+1``, ``seed-1_0`` would otherwise read as seeds 1, 1 and 10)."""
    match = RUN_DIR_NAME.fullmatch(run_dir.name)
    return None if match is None else int(match.group(1))


def load_runs(runs_dir: Path) -> list[RunRecord]:
    """Every run folder ``runs_dir/experiment/config/seed-N`` that has a ``config.json``.

    A run whose files cannot be read (a corrupt ``config.json``, ``summary.json`` or a bad line
    inside ``metrics.jsonl``) gets status ``corrupt`` and the reason; it is listed, not used.
    A folder ``seed-...`` not named as the runner names it (``seed-01``: a copy of seed 1?) is
    skipped with a warning naming it, so that no seed is counted twice.
    """
    runs_dir = Path(runs_dir)
    if not runs_dir.is_dir():
        raise FileNotFoundError(f"runs folder {runs_dir} does not exist")
    records = []
    for cfg_path in sorted(runs_dir.glob(f"*/*/seed-*/{CONFIG_FILE}")):
        run_dir = cfg_path.parent
        seed = seed_of(run_dir)
        if seed is None:
            warnings.warn(
                f"{run_dir} is not a run folder name the runner writes (seed-<N>, N >= 0 without "
                "leading zeros); skipped: rename it seed-<N> if it is a run of its own",
                stacklevel=2,
            )
            continue
        exp, config = run_dir.parent.parent.name, run_dir.parent.name
        try:
            state = run_state(run_dir)
            record = RunRecord(
                exp, config, seed, run_dir, state.status, state.config or {}, state.summary
            )
            record.series()  # reads (and checks) every line of metrics.jsonl once
        except CorruptFileError as e:
            record = RunRecord(exp, config, seed, run_dir, "corrupt", {}, error=str(e))
        records.append(record)
    _label_config_variants(records)
    records.sort(key=lambda r: (r.experiment, r.config, r.seed))
    return records


def _flat(obj: dict[str, Any]) -> dict[str, str]:
    """A JSON config as dotted keys, each value as compact JSON text (comparable, printable)."""
    return {k: json.dumps(v, separators=(",", ":")) for k, v in dotted_json(obj).items()}


def _comparable_config(record: RunRecord, protocol: Protocol) -> dict[str, Any]:
    """A run's config without its seed, in the experiment's current shape when it declares
    ``upgrade_config`` (an old-shape ``config.json`` is the same config, not a variant)."""
    config = dict(record.config_values)
    upgrade = protocol.upgrade_config
    if upgrade is not None:
        with contextlib.suppress(Exception):  # a shape it does not know: compared as stored
            config = dict(upgrade(config))
    config.pop("seed", None)
    return _flat(config)


def _label_config_variants(records: Sequence[RunRecord]) -> None:
    """Runs of one config name whose stored configs differ (seeds run with different ``--set``
    overrides into one ``--out``) get the keys that differ in their name, ``ce [max_steps=400]``,
    so that no table or curve pools them as one config."""
    groups: dict[tuple[str, str], list[tuple[RunRecord, dict[str, Any]]]] = {}
    protocols: dict[str, Protocol] = {}
    for r in records:
        if r.status != "corrupt":
            protocol = protocols.setdefault(r.experiment, protocol_of(r.experiment))
            config = _comparable_config(r, protocol)
            groups.setdefault((r.experiment, r.config), []).append((r, config))
    for runs in groups.values():
        configs = [c for _, c in runs]
        keys = sorted(set().union(*configs)) if configs else []
        differ = [k for k in keys if len({c.get(k, "(unset)") for c in configs}) > 1]
        if not differ:
            continue
        for r, c in runs:
            r.config += " [" + ", ".join(f"{k}={c.get(k, '(unset)')}" for k in differ) + "]"


def protocol_of(experiment: str) -> Protocol:
    """The experiment's declared protocol; an empty one if it is not registered or importable."""
    if experiment not in EXPERIMENTS:
        return Protocol()
    try:
        return load_experiment(experiment).protocol
    except ExperimentUnavailableError:
        return Protocol()


def mean_std(values: Sequence[float]) -> tuple[float, float, int]:
    """(mean, sample std with ddof=1 — NaN for one value or any ±inf, n); NaN mean for no values
    (and for +inf together with -inf)."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    if not vals:
        return math.nan, math.nan, 0
    signs = {math.copysign(1.0, v) for v in vals if math.isinf(v)}
    if signs:  # statistics raises on ±inf: the mean is ±inf (NaN for both), the spread undefined
        return (math.nan if len(signs) == 2 else signs.pop() * math.inf), math.nan, len(vals)
    std = statistics.stdev(vals) if len(vals) > 1 else math.nan
    return statistics.fmean(vals), std, len(vals)


OUTLIER_RATIO = 5.0
"""A spread is outlier-dominated when the std exceeds this many robust stds (1.4826 · MAD)."""


@dataclass(frozen=True)
class EvalCell:
    """A metric over seeds: mean, std (ddof = 1) and n of the non-NaN values, and how many NaN."""

    mean: float
    std: float
    n: int
    nan: int = 0
    median: float = math.nan
    low: float = math.nan
    high: float = math.nan
    outliers: bool = False
    """The std is dominated by a few far values (see ``OUTLIER_RATIO``): mean ± std misleads."""
    ends: tuple[tuple[int, float], ...] = ()
    """(seed, step) of each run's value, where the values are runs' final values: the report
    says so when they come from different steps."""

    @property
    def steps(self) -> list[float]:
        """The distinct steps of ``ends``, ascending."""
        return sorted({step for _, step in self.ends})


def summarize(values: Sequence[float]) -> EvalCell:
    """An :class:`EvalCell` of ``values`` (NaN and None count as NaN)."""
    floats = [math.nan if v is None else float(v) for v in values]
    vals = np.array([v for v in floats if not math.isnan(v)])
    mean, std, n = mean_std(list(vals))
    if n == 0:
        return EvalCell(mean, std, 0, len(floats))
    with np.errstate(invalid="ignore"):  # ±inf values: inf - inf inside the median is NaN
        median = float(np.median(vals))
        mad = 1.4826 * float(np.median(np.abs(vals - median)))
    outliers = n >= 3 and not math.isnan(std) and std > OUTLIER_RATIO * mad
    return EvalCell(
        mean, std, n, len(floats) - n, median, float(vals.min()), float(vals.max()), outliers
    )


def eval_tables(
    records: Sequence[RunRecord],
) -> dict[str, dict[str, dict[str, dict[str, EvalCell]]]]:
    """``{experiment: {split: {config: {metric: EvalCell}}}}`` from finished runs' final values.

    A run's final value of a metric is its value at the run's last step that logged it
    (:meth:`RunRecord.final_at`); each cell keeps the (seed, step) of its values in ``ends``.

    A key ``eval/<split...>/<metric>`` is split at its last ``/``: ``eval/interpolate/accuracy``
    is split ``interpolate``, metric ``accuracy``; per-category keys give splits like
    ``interpolate/arithmetic__add_or_sub``; ``eval/<metric>`` (e.g. ``qa2c-fair``'s
    ``eval/return_mean``, the greedy policy's return) is split ``eval``. Other ``<split>/<metric>`` keys (e.g.
    ``regression/rmse``) count too unless their first component is in ``NON_EVAL_PREFIXES``.
    """
    values: dict[tuple[str, str, str, str], list[tuple[int, float, float]]] = {}
    for r in records:
        if r.status != "finished":
            continue
        for key, (step, value) in r.final_values().items():
            if key.startswith("eval/") and key.count("/") >= 2:
                split, metric = key.removeprefix("eval/").rsplit("/", 1)
            elif key.startswith("eval/"):  # eval/<metric>: a run with one evaluation protocol
                split, metric = "eval", key.removeprefix("eval/")
            elif "/" in key and key.split("/", 1)[0] not in NON_EVAL_PREFIXES:
                split, metric = key.rsplit("/", 1)
            else:
                continue
            values.setdefault((r.experiment, split, r.config, metric), []).append(
                (r.seed, step, value)
            )
    out: dict[str, dict[str, dict[str, dict[str, EvalCell]]]] = {}
    for (exp, split, config, metric), runs in values.items():
        ends = tuple((seed, step) for seed, step, _ in runs)
        cell = dataclasses.replace(summarize([v for _, _, v in runs]), ends=ends)
        out.setdefault(exp, {}).setdefault(split, {}).setdefault(config, {})[metric] = cell
    return out


def score_curve(record: RunRecord, protocol: Protocol) -> Series | None:
    """(steps, per-episode scores) of a run whose experiment declares ``score_per="episode"``."""
    if protocol.score is None or protocol.score_per != "episode":
        return None
    curve = record.series().get(protocol.score)
    return curve if curve is not None and len(curve[0]) else None


def run_score(record: RunRecord, protocol: Protocol) -> float | None:
    """A run's score: the mean of its last ``score_window`` episode scores, or the final value
    of the score key (:meth:`RunRecord.final_at`); NaN when the run logged NaN; None when it
    has none (or none declared)."""
    scored = run_score_at(record, protocol)
    return None if scored is None else scored[1]


def run_score_at(record: RunRecord, protocol: Protocol) -> tuple[float, float] | None:
    """(step, score) of :func:`run_score`; the step is that of the last episode or value used."""
    if protocol.score is None:
        return None
    if protocol.score_per == "episode":
        curve = score_curve(record, protocol)
        if curve is None:
            return None
        return float(curve[0][-1]), float(curve[1][-protocol.score_window :].mean())
    return record.final_at(protocol.score)


def rolling_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` values at each index (fewer at the start). (E,) -> (E,)"""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    c = np.concatenate([[0.0], np.cumsum(values, dtype=np.float64)])
    idx = np.arange(1, len(values) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def solve_steps(
    steps: np.ndarray, scores: np.ndarray, protocol: Protocol
) -> tuple[float | None, float | None]:
    """(step of the first episode at ``max_score``, step where the ``solve_window`` moving average
    first reaches ``solve_threshold``); None where not declared or not reached."""
    first = solved = None
    if protocol.max_score is not None:
        hit = np.nonzero(scores >= protocol.max_score)[0]
        first = float(steps[hit[0]]) if hit.size else None
    window = protocol.solve_window
    if protocol.solve_threshold is not None and len(scores) >= window:
        ma = rolling_mean(scores, window)[window - 1 :]
        ok = np.nonzero(ma >= protocol.solve_threshold)[0]
        if ok.size:
            solved = float(steps[ok[0] + window - 1])
    return first, solved


@dataclass(frozen=True)
class RLRow:
    """Steps-to-solve summary of one (experiment, config) over its seeds."""

    experiment: str
    config: str
    seeds: int
    reached_max: int
    median_first_max: float | None
    solved: int
    median_solved: float | None
    final_score: EvalCell
    max_step: float
    params: float | None


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _params(records: Sequence[RunRecord]) -> float | None:
    """The parameter count the runner recorded (the experiment's declared ``params``)."""
    for r in records:
        value = r.summary.get("params")
        if isinstance(value, int) and not isinstance(value, bool):
            return float(value)
    return None


def rl_table(records: Sequence[RunRecord]) -> list[RLRow]:
    """One :class:`RLRow` per (experiment, config) whose experiment declares per-episode scores."""
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for r in records:
        groups.setdefault((r.experiment, r.config), []).append(r)
    out = []
    for (exp, config), runs in groups.items():
        protocol = protocol_of(exp)
        curves = [(r, score_curve(r, protocol)) for r in runs]
        curves_ok = [(r, c) for r, c in curves if c is not None]
        if not curves_ok:
            continue
        firsts, solves, finals, max_step = [], [], [], 0.0
        for r, (steps, scores) in curves_ok:
            first, solved = solve_steps(steps, scores, protocol)
            if first is not None:
                firsts.append(first)
            if solved is not None:
                solves.append(solved)
            finals.append(run_score(r, protocol))
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
                summarize([math.nan if f is None else f for f in finals]),
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


@dataclass(frozen=True)
class ScoreRow:
    """One config's declared score over its finished seeds."""

    config: str
    scores: np.ndarray
    """(R,) the non-NaN run scores"""
    nan: int
    """seeds whose score is NaN (counted, left out of the statistics)"""
    cell: EvalCell
    """with the (seed, step) of each run's score in ``ends``"""
    iqm: Estimate | None


@dataclass(frozen=True)
class ScoreSection:
    """rliable's statistics of one experiment's declared score, across its configs."""

    experiment: str
    protocol: Protocol
    rows: list[ScoreRow]
    taus: np.ndarray
    """(K,) thresholds of the performance profiles"""
    profiles: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]
    """config -> (fraction of runs above each τ, CI low, CI high), each (K,)"""
    improvement: dict[tuple[str, str], Estimate]
    """(X, Y) -> P(a run of X scores above a run of Y)"""


PROFILE_POINTS = 101


def bootstrap_seed(*names: str) -> int:
    """A fixed bootstrap seed of its own for each config (and each pair of configs): configs of
    the same size resampled with one seed would share their resample indices, so their CIs
    would err together rather than independently. Deterministic (``hash`` is salted per run)."""
    return zlib.crc32("\0".join(names).encode())


def score_section(
    experiment: str, records: Sequence[RunRecord], reps: int = DEFAULT_REPS
) -> ScoreSection | None:
    """The statistics of ``experiment``'s finished runs, if it declares a score and has any."""
    protocol = protocol_of(experiment)
    if protocol.score is None:
        return None
    by_config: dict[str, list[tuple[int, float, float]]] = {}
    for r in records:
        if r.experiment == experiment and r.status == "finished":
            scored = run_score_at(r, protocol)
            if scored is not None:
                by_config.setdefault(r.config, []).append((r.seed, *scored))
    if not by_config:
        return None
    rows = []
    for config, runs in sorted(by_config.items()):
        values = [v for _, _, v in runs]
        arr = np.array(values)
        ok = arr[~np.isnan(arr)]
        boot = bootstrap_seed(experiment, config)
        estimate = iqm_estimate(ok, reps=reps, seed=boot) if len(ok) else None
        # episodes end at slightly different steps in every run: only a per-run score's step
        # says whether runs were scored at different points of training
        ends = tuple((seed, step) for seed, step, _ in runs) if protocol.score_per == "run" else ()
        cell = dataclasses.replace(summarize(values), ends=ends)
        rows.append(ScoreRow(config, ok, int(np.isnan(arr).sum()), cell, estimate))
    every = np.concatenate([row.scores for row in rows])
    lo = float(every.min()) if every.size else 0.0
    hi = float(every.max()) if every.size else 1.0
    if protocol.random_score is not None:
        lo = min(lo, protocol.random_score)
    if protocol.max_score is not None:
        hi = max(hi, protocol.max_score)
    taus = np.linspace(lo, hi, PROFILE_POINTS) if hi > lo else np.array([lo])
    profiles = {
        row.config: performance_profile(
            row.scores, taus, reps=reps, seed=bootstrap_seed(experiment, row.config)
        )
        for row in rows
        if len(row.scores)
    }
    improvement = {
        (x.config, y.config): probability_of_improvement_estimate(
            x.scores, y.scores, reps=reps, seed=bootstrap_seed(experiment, x.config, y.config)
        )
        for x in rows
        for y in rows
        if x.config != y.config and len(x.scores) and len(y.scores)
    }
    return ScoreSection(experiment, protocol, rows, taus, profiles, improvement)


@dataclass
class ExperimentResults:
    """Everything the report shows for one experiment, computed from its run folders."""

    experiment: str
    protocol: Protocol
    runs: list[RunRecord]
    """its finished runs (curves are read from these)"""
    rl_rows: list[RLRow]
    scores: ScoreSection | None
    evals: dict[str, dict[str, dict[str, EvalCell]]]
    """``{split: {config: {metric: EvalCell}}}``"""


@dataclass
class ReportData:
    """The one pass over a runs folder that the report renders (DESIGN.md convention 12)."""

    runs_dir: Path
    records: list[RunRecord]
    """every run folder, with its status (``corrupt`` ones carry the reason)"""
    experiments: list[ExperimentResults]


def compute_report(runs_dir: Path) -> ReportData:
    """Read ``runs_dir`` once and compute every table of the report."""
    records = load_runs(runs_dir)
    if not records:
        raise FileNotFoundError(f"no runs (experiment/config/seed-N/config.json) under {runs_dir}")
    finished = [r for r in records if r.status == "finished"]
    rl_rows = rl_table(finished)
    evals = eval_tables(finished)
    experiments = [
        ExperimentResults(
            exp,
            protocol_of(exp),
            [r for r in finished if r.experiment == exp],
            [row for row in rl_rows if row.experiment == exp],
            score_section(exp, finished),
            evals.get(exp, {}),
        )
        for exp in sorted({r.experiment for r in records})
    ]
    return ReportData(Path(runs_dir), records, experiments)
