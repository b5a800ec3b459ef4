"""``repro report``: a Markdown report with PNG plots, aggregated over seeds.

Sections (each only when the runs carry the data): run status; RL reward curves like the QA2C
paper's figure (per-episode return, 150-episode rolling mean, mean ± std over seeds against
environment steps, random-agent line) with a steps-to-solve and parameter-count table;
evaluation tables (``eval/<split>/<metric>`` finals, mean ± std over seeds); training-loss curves.
"""

from __future__ import annotations

import math
import re
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from repro.aggregate import (
    EvalCell,
    RLRow,
    RunRecord,
    episode_returns,
    eval_tables,
    load_runs,
    rl_table,
    rolling_mean,
    seed_curves_on_grid,
)
from repro.storage import atomic_write_text

__all__ = ["RANDOM_AGENT_RETURN", "ROLLING_WINDOW", "fmt_cell", "render_report", "write_report"]

ROLLING_WINDOW = 150
RANDOM_AGENT_RETURN = 22.0
"""Mean CartPole-v1 return of a uniformly random policy (the QA2C paper's reference line)."""
GRID_POINTS = 400
_METRIC_ORDER = ("accuracy", "token_accuracy", "mae", "rmse", "r2", "median_ae", "invalid_rate")
_LOSS_PREFIXES = ("losses/", "train/loss")


def fmt_cell(cell: EvalCell) -> str:
    """``mean ± std`` with 4 significant digits (``mean`` alone for one seed)."""
    if cell.n == 0 or math.isnan(cell.mean):
        return "–"
    if math.isnan(cell.std):
        return f"{cell.mean:.4g}"
    return f"{cell.mean:.4g} ± {cell.std:.2g}"


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


def _reward_axes(ax, max_step: float) -> None:  # type: ignore[no-untyped-def]
    from matplotlib.ticker import EngFormatter

    ax.axhline(RANDOM_AGENT_RETURN, color="gray", ls="--", lw=1, label="random agent")
    ax.set_xlim(0, max_step)
    ax.xaxis.set_major_formatter(EngFormatter(sep=""))
    ax.set_ylim(0, 510)
    ax.set_xlabel("environment steps")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left")


def plot_rewards(experiment: str, runs: Sequence[RunRecord], out_dir: Path) -> list[Path]:
    """The paper's figure: 150-episode rolling mean of the return, mean ± std over seeds, all
    configs in one panel; and one panel per config that also shows the raw per-episode return."""
    by_config: dict[str, list[tuple[np.ndarray, np.ndarray]]] = {}
    for r in runs:
        curve = episode_returns(r.series())
        if curve is not None:
            by_config.setdefault(r.config, []).append(curve)
    if not by_config:
        return []
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
        ax.plot(own_grid, raw_mean, color=color, alpha=0.25, lw=0.6, label="return (mean of seeds)")
        _band(ax, own_grid, smooth, f"MA{ROLLING_WINDOW} (n={len(curves)})", color)
        ax.set_title(config)
        _reward_axes(ax, own_max)
        common = seed_curves_on_grid(smoothed, grid)  # (S, G) on the common grid
        _band(ax_all, grid, common, f"{config} (n={len(curves)})", color)
    for j in range(n, nrows * ncols):
        axes[j // ncols, j % ncols].set_visible(False)
    _reward_axes(ax_all, max_step)
    ax_all.set_title(f"{experiment}: {ROLLING_WINDOW}-episode rolling mean, mean ± std over seeds")
    ax_all.set_ylabel("episode return")
    paths = [
        out_dir / f"{_slug(experiment)}_rewards.png",
        out_dir / f"{_slug(experiment)}_rewards_per_config.png",
    ]
    for f, path in zip((fig, fig_cfg), paths):
        f.tight_layout()
        f.savefig(path, dpi=90)
    return paths


def _loss_keys(runs: Sequence[RunRecord]) -> list[str]:
    keys: dict[str, None] = {}
    for r in runs:
        keys.update({k: None for k in r.series() if k.startswith(_LOSS_PREFIXES)})
    return list(keys)[:4]


def plot_losses(experiment: str, runs: Sequence[RunRecord], out_dir: Path) -> Path | None:
    """Training-loss curves (up to four ``losses/*`` keys), mean ± std over seeds per config."""
    keys = _loss_keys(runs)
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
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{experiment}: training losses (mean ± std over seeds)", fontsize=10)
    fig.tight_layout()
    path = out_dir / f"{_slug(experiment)}_losses.png"
    fig.savefig(path, dpi=90)
    return path


def _status_section(records: Sequence[RunRecord]) -> list[str]:
    lines = ["## Runs", "", "| experiment | config | seeds | finished | failed | incomplete |"]
    lines.append("|---|---|---|---|---|---|")
    groups: dict[tuple[str, str], list[RunRecord]] = {}
    for r in records:
        groups.setdefault((r.experiment, r.config), []).append(r)
    failures = []
    for (exp, config), runs in groups.items():
        count = {s: sum(r.status == s for r in runs) for s in ("finished", "failed", "incomplete")}
        seeds = ",".join(str(r.seed) for r in runs)
        lines.append(
            f"| {exp} | {config} | {seeds} | {count['finished']} | {count['failed']} | {count['incomplete']} |"
        )
        failures += [
            f"- {exp}/{config}/seed-{r.seed}: {r.summary.get('error', '?')}"
            for r in runs
            if r.status == "failed"
        ]
    if failures:
        lines += ["", "Failed runs:", *failures]
    return [*lines, ""]


def _rl_section(rows: Sequence[RLRow]) -> list[str]:
    lines = [
        "| config | seeds | first 500 (median) | reached 500 | solved (MA100 ≥ 475, median) "
        "| seeds solved | MA100 at end | max steps | params |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        params = "–" if r.params is None else f"{r.params:g}"
        lines.append(
            f"| {r.config} | {r.seeds} | {_steps(r.median_first_500)} | {r.reached_500}/{r.seeds} "
            f"| {_steps(r.median_solved)} | {r.solved}/{r.seeds} | {fmt_cell(r.final_ma100)} "
            f"| {_steps(r.max_step)} | {params} |"
        )
    return lines


def _eval_section(split: str, table: dict[str, dict[str, EvalCell]]) -> list[str]:
    found = {m for cells in table.values() for m in cells}
    metrics = [m for m in _METRIC_ORDER if m in found] + sorted(found - set(_METRIC_ORDER))
    lines = [f"**{split}** (mean ± std over seeds)", ""]
    lines.append("| config | seeds | " + " | ".join(metrics) + " |")
    lines.append("|---|---|" + "---|" * len(metrics))
    for config, cells in sorted(table.items()):
        n = max(c.n for c in cells.values())
        row = [fmt_cell(cells[m]) if m in cells else "–" for m in metrics]
        lines.append(f"| {config} | {n} | " + " | ".join(row) + " |")
    return [*lines, ""]


def render_report(runs_dir: Path, out_dir: Path) -> str:
    """Build the Markdown text; plots are written into ``out_dir``."""
    records = load_runs(runs_dir)
    if not records:
        raise FileNotFoundError(f"no runs (experiment/config/seed-N/config.json) under {runs_dir}")
    out_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# Report: {runs_dir}",
        "",
        "mean ± std: mean and sample standard deviation (ddof = 1) over the finished seeds.",
        "",
        *_status_section(records),
    ]
    rl_rows = rl_table([r for r in records if r.status == "finished"])
    evals = eval_tables(records)
    for exp in sorted({r.experiment for r in records}):
        runs = [r for r in records if r.experiment == exp and r.status == "finished"]
        lines += [f"## {exp}", ""]
        exp_rl = [r for r in rl_rows if r.experiment == exp]
        if exp_rl:
            for plot in plot_rewards(exp, runs, out_dir):
                lines += [f"![{plot.stem}]({plot.name})", ""]
            lines += [
                "Steps to solve (environment steps; medians over the seeds that got there):",
                "",
            ]
            lines += [*_rl_section(exp_rl), ""]
        splits = evals.get(exp, {})
        main = [s for s in splits if "/" not in s]
        detail = [s for s in splits if "/" in s]
        for split in sorted(main):
            lines += _eval_section(split, splits[split])
        if detail:
            lines += ["<details><summary>per-category results</summary>", ""]
            for split in sorted(detail):
                lines += _eval_section(split, splits[split])
            lines += ["</details>", ""]
        loss_plot = plot_losses(exp, runs, out_dir)
        if loss_plot is not None:
            lines += [f"![{exp} losses]({loss_plot.name})", ""]
    return "\n".join(lines)


def write_report(runs_dir: Path, out_dir: Path) -> Path:
    """Write ``out_dir/report.md`` (and its PNG plots); return the report's path."""
    out_dir = Path(out_dir)
    text = render_report(Path(runs_dir), out_dir)
    path = out_dir / "report.md"
    atomic_write_text(path, text)
    return path
