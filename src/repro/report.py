"""``repro report``: a Markdown report with PNG plots, aggregated over seeds.

Sections (each only when the runs carry the data, and as the experiment's ``PROTOCOL``
declares it): run status; per-episode score curves (150-episode rolling mean, mean ± std over
seeds, the declared random-policy line) with a steps-to-solve and parameter-count table;
statistics of the declared score (IQM with 95 % stratified-bootstrap CIs, performance profiles,
probability of improvement: :mod:`repro.stats`); evaluation tables (``eval/<split>/<metric>``
finals, mean ± std over seeds); training curves, one panel per metric, titled by its key.
"""

from __future__ import annotations

import dataclasses
import math
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from repro.aggregate import (
    EvalCell,
    ReportData,
    RLRow,
    RunRecord,
    ScoreSection,
    compute_report,
    rolling_mean,
    score_curve,
    seed_curves_on_grid,
)
from repro.registry import Protocol
from repro.storage import atomic_write_text

__all__ = [
    "MIXED_STEPS",
    "ROLLING_WINDOW",
    "fmt_cell",
    "fmt_num",
    "mixed_steps_note",
    "render",
    "render_report",
    "write_report",
]

ROLLING_WINDOW = 150
GRID_POINTS = 400
# robust number errors first (a few runaway outputs dominate mae/rmse/r2; those follow, and
# fmt_cell flags an outlier-dominated spread instead of printing it)
_METRIC_ORDER = (
    "accuracy",
    "token_accuracy",
    "median_ae",
    "log_ae",
    "within_1pct",
    "within_one_digit",
    "invalid_rate",
    "mae",
    "rmse",
    "r2",
)
_CURVE_PREFIXES = ("losses/", "train/loss")
_MAX_CURVES = 6


def fmt_num(value: float) -> str:
    """Three significant digits."""
    return f"{value:.3g}"


def fmt_cell(cell: EvalCell) -> str:
    """``mean ± std`` (three significant digits; ``mean`` alone for one seed), how many seeds
    were NaN, and the median and range instead when outliers dominate the spread or a value is
    ±inf (no mean ± std exists then)."""
    nan = f" ({cell.nan} NaN)" if cell.nan else ""
    if cell.n == 0:
        return f"–{nan}"
    median = f"median {fmt_num(cell.median)}"
    span = f"range {fmt_num(cell.low)} to {fmt_num(cell.high)}"
    if cell.n > 1 and not (math.isfinite(cell.mean) and math.isfinite(cell.std)):
        return f"{median}, {span} (non-finite values){nan}"
    if cell.outliers:
        return f"{median}, outlier-dominated ({span}){nan}"
    if math.isnan(cell.std):
        return f"{fmt_num(cell.mean)}{nan}"
    return f"{fmt_num(cell.mean)} ± {fmt_num(cell.std)}{nan}"


def _steps(value: float | None) -> str:
    if value is None:
        return "–"
    return f"{value / 1e6:.3g} M" if value >= 1e5 else f"{value:,.0f}"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def _figure(nrows: int, ncols: int, figsize: tuple[float, float], sharey: bool = False):  # type: ignore[no-untyped-def]
    """A matplotlib Figure and its (nrows, ncols) axes, without pyplot (no global backend state)."""
    try:
        from matplotlib.figure import Figure
    except ImportError as e:  # pragma: no cover - depends on the installed extras
        raise ImportError(f'repro report needs the cli extra: pip install -e ".[cli]" ({e})') from e
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, sharey=sharey, squeeze=False)


def _colors() -> list[str]:
    import matplotlib

    return list(matplotlib.rcParams["axes.prop_cycle"].by_key()["color"])


def band_stats(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ok (G,), mean, std) of ``values`` (S, G) over seeds (std with ddof = 1, 0 for one seed),
    at the grid points ``ok`` where every seed that has data anywhere has data: the number of
    seeds behind a curve is constant, so it does not jump where the seeds' last episodes end at
    slightly different steps."""
    n_all = np.sum(~np.isnan(values), axis=0)  # (G,)
    ok = (n_all > 0) & (n_all == n_all.max(initial=0))
    v = values[:, ok]
    n = np.sum(~np.isnan(v), axis=0)
    mean = np.nanmean(v, axis=0) if v.size else np.zeros(0)
    sq = np.nansum((v - mean) ** 2, axis=0)
    std = np.sqrt(np.divide(sq, n - 1, out=np.zeros_like(sq), where=n > 1))
    return ok, mean, std


def _band(ax, grid: np.ndarray, values: np.ndarray, label: str, color: object) -> None:  # type: ignore[no-untyped-def]
    """Mean ± std over the rows of ``values`` (S, G); see ``band_stats``."""
    ok, mean, std = band_stats(values)
    if not ok.any():
        return
    ax.plot(grid[ok], mean, label=label, color=color, lw=1.5)
    ax.fill_between(grid[ok], mean - std, mean + std, color=color, alpha=0.2, lw=0)


def _score_axes(ax, max_step: float, protocol: Protocol) -> None:  # type: ignore[no-untyped-def]
    from matplotlib.ticker import EngFormatter

    if protocol.random_score is not None:
        ax.axhline(protocol.random_score, color="gray", ls="--", lw=1, label="random policy")
    ax.set_xlim(0, max_step)
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    if protocol.max_score is not None:
        ax.set_ylim(min(0.0, protocol.random_score or 0.0), 1.02 * protocol.max_score)
    ax.set_xlabel(protocol.progress_unit + "s")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")


def plot_scores(
    experiment: str, runs: Sequence[RunRecord], protocol: Protocol, out_dir: Path
) -> list[Path]:
    """Per-episode scores: the rolling mean over ``ROLLING_WINDOW`` episodes, mean ± std over
    seeds, all configs in one panel; and one panel per config that also shows the raw score."""
    by_config: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for r in runs:
        curve = score_curve(r, protocol)
        if curve is not None:
            by_config.setdefault(r.config, []).append(curve)
    if not by_config or protocol.score is None:
        return []
    score = protocol.score
    max_step = max(float(s[-1]) for curves in by_config.values() for s, _ in curves)
    grid = np.linspace(0.0, max_step, GRID_POINTS)
    n = len(by_config)
    ncols = min(n, 4)
    nrows = -(-n // ncols)
    fig, ax_grid = _figure(1, 1, (7.5, 4.5))
    ax_all = ax_grid[0, 0]
    fig_cfg, axes = _figure(nrows, ncols, (4 * ncols, 3.2 * nrows), sharey=True)  # own x ranges
    colors = _colors()
    for i, (config, curves) in enumerate(sorted(by_config.items())):
        color = colors[i % len(colors)]
        own_max = max(float(s[-1]) for s, _ in curves)
        own_grid = np.linspace(0.0, own_max, GRID_POINTS)
        smoothed = [(s, rolling_mean(r, ROLLING_WINDOW)) for s, r in curves]
        raw = seed_curves_on_grid(curves, own_grid)  # (S, G)
        smooth = seed_curves_on_grid(smoothed, own_grid)  # (S, G)
        ax = axes[i // ncols, i % ncols]
        with warnings.catch_warnings():  # grid points before any seed's first episode
            warnings.simplefilter("ignore", RuntimeWarning)
            raw_mean = np.nanmean(raw, axis=0)
        ax.plot(own_grid, raw_mean, color=color, alpha=0.25, lw=0.6, label="per episode (mean)")
        _band(ax, own_grid, smooth, f"MA{ROLLING_WINDOW} (n={len(curves)})", color)
        ax.set_title(f"{config}: {score}", fontsize=9)
        _score_axes(ax, own_max, protocol)
        common = seed_curves_on_grid(smoothed, grid)  # (S, G) on the common grid
        _band(ax_all, grid, common, f"{config} (n={len(curves)})", color)
    for j in range(n, nrows * ncols):
        axes[j // ncols, j % ncols].set_visible(False)
    _score_axes(ax_all, max_step, protocol)
    ax_all.set_title(
        f"{experiment}: {score}, {ROLLING_WINDOW}-episode rolling mean, mean ± std over seeds",
        fontsize=9,
    )
    ax_all.set_ylabel(score)
    paths = [
        out_dir / f"{_slug(experiment)}_rewards.png",
        out_dir / f"{_slug(experiment)}_rewards_per_config.png",
    ]
    for f, path in zip((fig, fig_cfg), paths):
        f.tight_layout()
        f.savefig(path, dpi=90)
    return paths


def plot_profiles(section: ScoreSection, out_dir: Path) -> Path | None:
    """Performance profiles: the fraction of runs whose score exceeds τ, with 95 % CIs."""
    if not section.profiles or len(section.taus) < 2:
        return None
    fig, axes = _figure(1, 1, (6.5, 4.0))
    ax = axes[0, 0]
    colors = _colors()
    for i, (config, (prof, low, high)) in enumerate(sorted(section.profiles.items())):
        color = colors[i % len(colors)]
        n = next(len(r.scores) for r in section.rows if r.config == config)
        ax.plot(section.taus, prof, color=color, lw=1.5, label=f"{config} (n={n})")
        ax.fill_between(section.taus, low, high, color=color, alpha=0.2, lw=0)
    ax.set_xlabel(f"score τ ({section.protocol.score})")
    ax.set_ylabel("fraction of runs with score > τ")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    ax.set_title(f"{section.experiment}: performance profiles (95 % bootstrap CIs)", fontsize=9)
    fig.tight_layout()
    path = out_dir / f"{_slug(section.experiment)}_profiles.png"
    fig.savefig(path, dpi=90)
    return path


def _curve_keys(runs: Sequence[RunRecord]) -> list[str]:
    keys: dict[str, None] = {}
    for r in runs:
        keys.update({k: None for k in r.series() if k.startswith(_CURVE_PREFIXES)})
    return list(keys)[:_MAX_CURVES]


def plot_training_curves(
    experiment: str, runs: Sequence[RunRecord], protocol: Protocol, out_dir: Path
) -> Path | None:
    """Training curves (``losses/*`` keys, at most six), mean ± std over seeds per config; each
    panel is titled by the metric it shows."""
    keys = _curve_keys(runs)
    if not keys:
        return None
    fig, axes = _figure(1, len(keys), (4.5 * len(keys), 3.4))
    colors = _colors()
    configs = sorted({r.config for r in runs})
    for ax, key in zip(axes[0], keys):
        for i, config in enumerate(configs):
            curves = [r.series()[key] for r in runs if r.config == config and key in r.series()]
            if not curves:
                continue
            grid = np.linspace(0.0, max(float(x[-1]) for x, _ in curves), GRID_POINTS)
            _band(ax, grid, seed_curves_on_grid(curves, grid), config, colors[i % len(colors)])
        ax.set_title(key)
        ax.set_ylabel(key.rsplit("/", 1)[-1])
        ax.set_xlabel(protocol.progress_unit + "s")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{experiment}: training curves (mean ± std over seeds)", fontsize=10)
    fig.tight_layout()
    path = out_dir / f"{_slug(experiment)}_losses.png"  # name kept: docs link it
    fig.savefig(path, dpi=90)
    return path


_STATUSES = ("finished", "failed", "incomplete", "corrupt")


def _status_section(records: Sequence[RunRecord]) -> list[str]:
    lines = ["## Runs", "", "| experiment | config | seeds | " + " | ".join(_STATUSES) + " |"]
    lines.append("|---|---|---|" + "---|" * len(_STATUSES))
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for r in records:
        groups.setdefault((r.experiment, r.config), []).append(r)
    problems = []
    for (exp, config), runs in groups.items():
        count = [str(sum(r.status == s for r in runs)) for s in _STATUSES]
        seeds = ",".join(str(r.seed) for r in runs)
        lines.append(f"| {exp} | {config} | {seeds} | " + " | ".join(count) + " |")
        for r in runs:
            if r.status == "failed":
                problems.append(f"- {exp}/{config}/seed-{r.seed}: {r.summary.get('error', '?')}")
            elif r.status == "corrupt":
                problems.append(f"- {exp}/{config}/seed-{r.seed} (not used): {r.error}")
    if problems:
        lines += ["", "Failed or unreadable runs:", *problems]
    return [*lines, ""]


def _rl_section(rows: Sequence[RLRow], protocol: Protocol) -> list[str]:
    head = ["config", "seeds"]
    if protocol.max_score is not None:
        head += [
            f"first {fmt_num(protocol.max_score)} (median)",
            f"reached {fmt_num(protocol.max_score)}",
        ]
    if protocol.solve_threshold is not None:
        head += [
            f"solved (MA{protocol.solve_window} ≥ {fmt_num(protocol.solve_threshold)}, median)",
            "seeds solved",
        ]
    head += [f"score (last {protocol.score_window} episodes)", "max steps", "params"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        cells = [r.config, str(r.seeds)]
        if protocol.max_score is not None:
            cells += [_steps(r.median_first_max), f"{r.reached_max}/{r.seeds}"]
        if protocol.solve_threshold is not None:
            cells += [_steps(r.median_solved), f"{r.solved}/{r.seeds}"]
        params = "–" if r.params is None else f"{r.params:g}"
        cells += [fmt_cell(r.final_score), _steps(r.max_step), params]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _ci(value: float, low: float, high: float) -> str:
    if math.isnan(low) or math.isnan(high):
        return f"{fmt_num(value)} (no CI: < 2 runs)"
    return f"{fmt_num(value)} [{fmt_num(low)}, {fmt_num(high)}]"


def _statistics_section(section: ScoreSection, out_dir: Path) -> list[str]:
    p = section.protocol
    what = (
        f"the mean of its last {p.score_window} episodes' `{p.score}`"
        if p.score_per == "episode"
        else f"its final `{p.score}`"
    )
    lines = [
        f"### Statistics of the score (`{p.score}`)",
        "",
        f"A run's score is {what}. IQM: interquartile mean over runs, with a 95 % "
        "stratified-bootstrap confidence interval (percentile, 2000 resamples; rliable's "
        "protocol). Seeds whose score is NaN are counted, not used.",
        "",
        "| config | runs | NaN | IQM [95 % CI] | mean ± std |",
        "|---|---|---|---|---|",
    ]
    notes: list[str] = []
    for row in section.rows:
        iqm = "–" if row.iqm is None else _ci(row.iqm.value, row.iqm.low, row.iqm.high)
        cell = fmt_cell(dataclasses.replace(row.cell, nan=0))
        config = _marked(row.config, row.config, row.cell, notes)
        lines.append(f"| {config} | {len(row.scores)} | {row.nan} | {iqm} | {cell} |")
    lines += ["", *notes, ""] if notes else [""]
    plot = plot_profiles(section, out_dir)
    if plot is not None:
        lines += [f"![{plot.stem}]({plot.name})", ""]
    configs = [r.config for r in section.rows if len(r.scores)]
    if len(configs) >= 2 and section.improvement:
        lines += [
            "Probability of improvement P(X > Y): a run of the row's config X scores above a run "
            "of the column's config Y (ties count one half), with its 95 % CI:",
            "",
            "| X \\ Y | " + " | ".join(configs) + " |",
            "|---|" + "---|" * len(configs),
        ]
        for x in configs:
            cells = []
            for y in configs:
                est = section.improvement.get((x, y))
                cells.append("–" if est is None else _ci(est.value, est.low, est.high))
            lines.append(f"| {x} | " + " | ".join(cells) + " |")
        lines.append("")
    return lines


MIXED_STEPS = "†"
"""Marks a value pooled over runs whose final values come from different steps."""


def mixed_steps_note(what: str, cell: EvalCell) -> str | None:
    """A footnote (a Markdown list item) naming the steps, and their seeds, of ``cell``'s runs'
    final values when they differ: such a cell pools different points of training."""
    if len(cell.steps) < 2:
        return None
    parts = []
    for step in cell.steps:
        seeds = [str(seed) for seed, s in cell.ends if s == step]
        label = "seeds" if len(seeds) > 1 else "seed"
        parts.append(f"step {step:,.0f} ({label} {', '.join(seeds)})")
    return f"- {MIXED_STEPS} {what}: final values from different steps: {'; '.join(parts)}"


def _marked(text: str, what: str, cell: EvalCell, notes: list[str]) -> str:
    """``text``, marked with :data:`MIXED_STEPS` when ``cell`` pools different steps (its
    footnote is appended to ``notes``)."""
    note = mixed_steps_note(what, cell)
    if note is None:
        return text
    notes.append(note)
    return f"{text} {MIXED_STEPS}"


def _eval_section(split: str, table: dict[str, dict[str, EvalCell]]) -> list[str]:
    found = {m for cells in table.values() for m in cells}
    metrics = [m for m in _METRIC_ORDER if m in found] + sorted(found - set(_METRIC_ORDER))
    lines = [f"**{split}** (mean ± std over seeds)", ""]
    lines.append("| config | seeds | " + " | ".join(metrics) + " |")
    lines.append("|---|---|" + "---|" * len(metrics))
    notes: list[str] = []
    for config, cells in sorted(table.items()):
        n = max(c.n + c.nan for c in cells.values())
        row = [
            _marked(fmt_cell(cells[m]), f"{config}, {m}", cells[m], notes) if m in cells else "–"
            for m in metrics
        ]
        lines.append(f"| {config} | {n} | " + " | ".join(row) + " |")
    if notes:
        lines += ["", *notes]
    return [*lines, ""]


def render_report(runs_dir: Path, out_dir: Path) -> str:
    """Build the Markdown text; plots are written into ``out_dir``."""
    return render(compute_report(runs_dir), out_dir)


def render(data: ReportData, out_dir: Path) -> str:
    """The Markdown of computed results (:func:`repro.aggregate.compute_report`); the plots are
    drawn from the same data into ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# Report: {data.runs_dir}",
        "",
        "mean ± std: mean and sample standard deviation (ddof = 1) over the finished seeds; "
        "numbers with three significant digits.",
        "",
        *_status_section(data.records),
    ]
    for res in data.experiments:
        exp, protocol = res.experiment, res.protocol
        lines += [f"## {exp}", ""]
        if res.rl_rows:
            for plot in plot_scores(exp, res.runs, protocol, out_dir):
                lines += [f"![{plot.stem}]({plot.name})", ""]
            lines += [
                f"Steps to solve ({protocol.progress_unit}s; medians over the seeds that got "
                "there):",
                "",
            ]
            lines += [*_rl_section(res.rl_rows, protocol), ""]
        if res.scores is not None:
            lines += _statistics_section(res.scores, out_dir)
        main = [s for s in res.evals if "/" not in s]
        detail = [s for s in res.evals if "/" in s]
        for split in sorted(main):
            lines += _eval_section(split, res.evals[split])
        if detail:
            lines += ["<details><summary>per-category results</summary>", ""]
            for split in sorted(detail):
                lines += _eval_section(split, res.evals[split])
            lines += ["</details>", ""]
        curves = plot_training_curves(exp, res.runs, protocol, out_dir)
        if curves is not None:
            lines += [f"![{exp} training curves]({curves.name})", ""]
    return "\n".join(lines)


def write_report(runs_dir: Path, out_dir: Path) -> Path:
    """Write ``out_dir/report.md`` (and its PNG plots); return the report's path."""
    out_dir = Path(out_dir)
    text = render_report(Path(runs_dir), out_dir)
    path = out_dir / "report.md"
    atomic_write_text(path, text)
    return path
