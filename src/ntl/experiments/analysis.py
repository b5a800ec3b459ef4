"""Seeds -> decisions: bootstrap CIs, paired per-seed differences, sample efficiency, curves.

Reads run folders ``ROOT/<config>/seed-<N>/metrics.jsonl`` (the layout of ``repro run --out OUT``
with ``ROOT = OUT/ntl-arith``; ``ROOT/<config>/<N>/`` works too) and answers, per metric:

- the mean over seeds at the end (or at a fixed step) with a 95 % percentile-bootstrap CI;
- paired differences ``other − base`` per seed (same seed = same data, data order and
  initialisation across losses) with a 95 % bootstrap CI;
- the first evaluated step at which the seed-mean curve (and each seed) reaches a threshold;
- a plot of the seed-mean curves with 95 % bootstrap bands.

Runs that did not finish (their ``summary.json``, which repro's runner writes when a run ends,
says ``failed``, or there is none yet: still running or killed) are left out, and named.

    python -m ntl.experiments.analysis runs/ntl/ntl-arith --base ce \\
        --metric eval/heldout/accuracy --budgets 500,1000 --plot docs/ntl_arith_curves.png

Tables print three significant digits.
"""

from __future__ import annotations

import argparse
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "Estimate",
    "bootstrap_ci",
    "final_step",
    "finished_runs",
    "first_step_reaching",
    "format_report",
    "load_curves",
    "paired_difference",
    "plot_curves",
    "unfinished_runs",
    "value_at",
    "without",
]

Curves = dict[str, dict[int, dict[int, float]]]  # {config: {seed: {step: value}}}

_SEED_DIR = re.compile(r"(?:seed-)?(0|[1-9][0-9]*)")
"""A run folder's name: ``seed-N`` as the runner writes it (or plain ``N``), N >= 0."""
_SEED_LIKE = re.compile(r"(?:seed-?)?[-+ _0-9]+")
"""Names that look like a seed's folder; one that is not exactly ``_SEED_DIR`` is an error."""


def _seed_of(run_dir: Path) -> int | None:
    """The seed of ``run_dir``; None for a folder that is not a run's. A name that looks like
    a seed but is not written as the runner writes it (``seed-01``: a copy of seed-1?) is a
    ValueError naming the folder, rather than read as seed 1 a second time."""
    match = _SEED_DIR.fullmatch(run_dir.name)
    if match is not None:
        return int(match.group(1))
    if _SEED_LIKE.fullmatch(run_dir.name):
        raise ValueError(
            f"{run_dir}: not a run folder name the runner writes (seed-<N>, no leading zeros); "
            "rename it, or move it out of the runs folder"
        )
    return None


@dataclass(frozen=True)
class Estimate:
    """A mean over ``n`` seeds with its 95 % bootstrap interval [lo, hi]."""

    mean: float
    lo: float
    hi: float
    n: int

    def __str__(self) -> str:
        if self.n == 0:
            return "—"
        if self.n < 2:
            return f"{_g(self.mean)} (no CI: n={self.n})"
        return f"{_g(self.mean)} [{_g(self.lo)}, {_g(self.hi)}] (n={self.n})"


def _g(x: float) -> str:
    return f"{x:.3g}" if math.isfinite(x) else str(x)


def load_curves(root: Path, metric: str) -> Curves:
    """``{config: {seed: {step: value}}}`` of ``metric`` from every run folder under ``root``.

    Non-finite values are kept (a run whose metric is nan at a step says so). A torn last line
    is skipped; a bad line before it, or a step that does not increase, is a ValueError naming
    the file and line.
    """
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"no run folders: {root} is not a directory")
    out: Curves = {}
    folders: dict[tuple[str, int], Path] = {}
    for path in sorted(root.glob("*/*/metrics.jsonl")):
        seed = _seed_of(path.parent)
        if seed is None:
            continue
        config = path.parent.parent.name
        other = folders.setdefault((config, seed), path.parent)
        if other != path.parent:
            raise ValueError(
                f"{other} and {path.parent} are both seed {seed} of {config}; keep one of them"
            )
        curve: dict[int, float] = {}
        lines = path.read_text().splitlines()
        last: int | None = None
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                step = int(row["step"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                if number == len(lines):  # a torn last line of an interrupted run
                    continue
                raise ValueError(
                    f"{path}: line {number} is not a metric row: {line[:60]!r}"
                ) from None
            if last is not None and step <= last:
                raise ValueError(
                    f"{path}: line {number} has step {step} after step {last}; a repeated row "
                    "would replace the first silently"
                )
            last = step
            if metric in row:
                curve[step] = float(row[metric])
        if curve:
            out.setdefault(config, {})[seed] = curve
    for config in out:
        _check_one_config(root / config)
    return out


def _check_one_config(folder: Path) -> None:
    """The seeds of one config folder must share one config (their ``config.json`` files, the
    seed left out): seeds run with different ``--set`` values are not one config's seeds."""
    seen: dict[str, tuple[str, dict[str, object]]] = {}
    for path in sorted(folder.glob("*/config.json")):
        try:
            config = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise ValueError(f"{path} is not valid JSON ({e})") from None
        if isinstance(config, dict):
            config.pop("seed", None)
            seen.setdefault(json.dumps(config, sort_keys=True), (path.parent.name, config))
    if len(seen) > 1:
        runs = list(seen.values())
        keys = sorted(
            {k for _, c in runs for k in c if len({repr(c2.get(k)) for _, c2 in runs}) > 1}
        )
        which = "; ".join(
            f"{name}: " + ", ".join(f"{k}={c.get(k)!r}" for k in keys) for name, c in runs
        )
        raise ValueError(
            f"{folder} holds runs of different configs ({which}); analyse each in its own folder"
        )


def unfinished_runs(root: Path) -> dict[str, dict[int, str]]:
    """``{config: {seed: why}}`` of the run folders under ``root`` that did not finish: their
    ``summary.json`` (repro's runner writes it when a run ends) says ``failed``, or there is
    none yet (the run is still going, or was killed), or it cannot be read."""
    out: dict[str, dict[int, str]] = {}
    for run_dir in sorted(p.parent for p in Path(root).glob("*/*/metrics.jsonl")):
        seed = _seed_of(run_dir)
        if seed is None:
            continue
        path = run_dir / "summary.json"
        if not path.exists():
            why = "no summary.json: still running, or killed"
        else:
            try:
                summary = json.loads(path.read_text())
            except json.JSONDecodeError:
                summary = None
            status = summary.get("status") if isinstance(summary, dict) else None
            if status == "finished":
                continue
            why = f"status {status}" if isinstance(status, str) else "unreadable summary.json"
        out.setdefault(run_dir.parent.name, {})[seed] = why
    return out


def without(curves: Curves, runs: Mapping[str, Mapping[int, object]]) -> Curves:
    """``curves`` less the ``{config: {seed: ...}}`` runs (configs left with no seed go too)."""
    out: Curves = {}
    for config, per_seed in curves.items():
        kept = {s: c for s, c in per_seed.items() if s not in runs.get(config, {})}
        if kept:
            out[config] = kept
    return out


def bootstrap_ci(
    values: Sequence[float],
    *,
    n_boot: int = 10_000,
    seed: int = 0,
    stat: Callable[[np.ndarray], np.ndarray] | None = None,
) -> Estimate:
    """The mean of ``values`` and a 95 % percentile-bootstrap interval of it (resampling seeds).

    ``stat`` maps an (n_boot, n) array of resamples to (n_boot,) statistics (default: mean).
    One value has nothing to resample (its interval would be the value itself, zero width):
    ``lo`` and ``hi`` are NaN then.
    """
    x = np.asarray(values, dtype=float)
    if x.ndim != 1:
        raise ValueError(f"values must be one-dimensional, got shape {x.shape}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if len(x) == 0:
        return Estimate(math.nan, math.nan, math.nan, 0)
    f = stat if stat is not None else (lambda a: a.mean(axis=-1))
    if len(x) < 2:
        return Estimate(float(f(x[None, :])[0]), math.nan, math.nan, len(x))
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(x), size=(n_boot, len(x)))
    boots = f(x[idx])
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return Estimate(float(f(x[None, :])[0]), float(lo), float(hi), len(x))


def value_at(curve: Mapping[int, float], step: int | None) -> float | None:
    """The value at ``step`` (``None``: the last step); ``None`` if the run has no such row."""
    if not curve:
        return None
    key = max(curve) if step is None else step
    return curve.get(key)


def final_step(curves: Curves) -> int | None:
    """The last step any run reached: "the end"; runs that stopped earlier are unfinished."""
    steps = [max(c) for per_seed in curves.values() for c in per_seed.values() if c]
    return max(steps) if steps else None


def _finished_at(curves: Curves, config: str, step: int | None) -> dict[int, float]:
    """``{seed: value at step}``; ``step=None``: at :func:`final_step` (unfinished runs left out)."""
    if step is None:
        step = final_step(curves)
    out: dict[int, float] = {}
    for seed, curve in curves.get(config, {}).items():
        value = value_at(curve, step)
        if value is not None:
            out[seed] = value
    return out


def paired_difference(
    curves: Curves, base: str, other: str, step: int | None = None, *, n_boot: int = 10_000
) -> Estimate:
    """Mean over the seeds both configs have of ``other − base`` at ``step`` (None: the end,
    :func:`final_step`)."""
    a = _finished_at(curves, base, step)
    b = _finished_at(curves, other, step)
    seeds = sorted(set(a) & set(b))
    return bootstrap_ci([b[s] - a[s] for s in seeds], n_boot=n_boot)


def first_step_reaching(
    curve: Mapping[int, float], threshold: float, higher_is_better: bool = True
) -> int | None:
    """The first step whose value reaches ``threshold``; ``None`` if none does."""
    for step in sorted(curve):
        value = curve[step]
        if (value >= threshold) if higher_is_better else (value <= threshold):
            return step
    return None


def finished_runs(curves: Curves) -> Curves:
    """Only the runs that reached :func:`final_step` (for curves and first-step statistics)."""
    end = final_step(curves)
    out: Curves = {}
    for config, per_seed in curves.items():
        done = {seed: c for seed, c in per_seed.items() if c and max(c) == end}
        if done:
            out[config] = done
    return out


def _end_note(curves: Curves) -> str:
    """Which step "end" is, and which runs stop before it (left out at the end)."""
    end = final_step(curves)
    if end is None:
        return "end: no run has this metric"
    short = [
        f"{config} seed {seed} (step {max(c)})"
        for config, per_seed in sorted(curves.items())
        for seed, c in sorted(per_seed.items())
        if max(c) != end
    ]
    stop = f"; runs that stop earlier are left out there: {', '.join(short)}" if short else ""
    return f"end = step {end}, the last step any run reached{stop}."


def _mean_curve(per_seed: Mapping[int, Mapping[int, float]]) -> dict[int, list[float]]:
    """Steps every seed has -> the seeds' values."""
    if not per_seed:
        return {}
    steps = set.intersection(*(set(c) for c in per_seed.values()))
    return {s: [c[s] for c in per_seed.values()] for s in sorted(steps)}


def format_report(
    curves: Curves,
    metric: str,
    *,
    base: str,
    budgets: Sequence[int] = (),
    threshold: float | None = None,
    higher_is_better: bool = True,
) -> str:
    """Markdown: per config the final mean [95 % CI]; paired differences vs ``base`` at the end
    and at each budget; the first step the seed-mean curve reaches ``threshold``."""
    configs = sorted(curves, key=lambda c: (c != base, c))
    cols = ["end", *[f"step {b}" for b in budgets]]
    lines = [f"**{metric}** — mean over seeds [95 % bootstrap CI]", "", _end_note(curves), ""]
    lines.append("| config | " + " | ".join(cols) + " |")
    lines.append("|---" * (len(cols) + 1) + "|")
    for c in configs:
        cells = [
            str(bootstrap_ci(list(_finished_at(curves, c, s).values()))) for s in (None, *budgets)
        ]
        lines.append(f"| {c} | " + " | ".join(cells) + " |")
    if base in curves and len(configs) > 1:
        lines += ["", f"Paired per-seed difference (config − {base}) [95 % bootstrap CI]", ""]
        lines.append("| config | " + " | ".join(cols) + " |")
        lines.append("|---" * (len(cols) + 1) + "|")
        for c in configs:
            if c == base:
                continue
            cells = [str(paired_difference(curves, base, c, s)) for s in (None, *budgets)]
            lines.append(f"| {c} | " + " | ".join(cells) + " |")
    if threshold is not None:
        curves = finished_runs(curves)
        configs = [c for c in configs if c in curves]
        lines += ["", f"First evaluated step reaching {_g(threshold)} (finished runs)", ""]
        lines.append("| config | seed-mean curve | per seed |")
        lines.append("|---|---|---|")
        for c in configs:
            mean_curve = {s: float(np.mean(v)) for s, v in _mean_curve(curves[c]).items()}
            first = first_step_reaching(mean_curve, threshold, higher_is_better)
            per_seed = [
                first_step_reaching(curves[c][seed], threshold, higher_is_better)
                for seed in sorted(curves[c])
            ]
            per = ", ".join("never" if f is None else str(f) for f in per_seed)
            lines.append(f"| {c} | {'never' if first is None else first} | {per} |")
    return "\n".join(lines)


def plot_curves(
    curves: Curves, metric: str, path: Path, *, configs: Sequence[str] | None = None
) -> Path:
    """Seed-mean curve of each config with its 95 % bootstrap band, saved as a PNG at ``path``.

    Only finished runs (:func:`finished_runs`) are drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves = finished_runs(curves)
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    for c in configs if configs is not None else sorted(curves):
        mean_curve = _mean_curve(curves.get(c, {}))
        if not mean_curve:
            continue
        steps = list(mean_curve)
        ests = [bootstrap_ci(v, n_boot=2000) for v in mean_curve.values()]
        n = len(curves[c])
        (line,) = ax.plot(steps, [e.mean for e in ests], label=f"{c} (n={n})")
        ax.fill_between(
            steps, [e.lo for e in ests], [e.hi for e in ests], color=line.get_color(), alpha=0.2
        )
    ax.set_xlabel("optimiser step")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("root", type=Path, help="OUT/ntl-arith of a repro sweep")
    parser.add_argument("--metric", action="append", default=None)
    parser.add_argument("--base", default="ce")
    parser.add_argument("--configs", default=None, help="comma-separated subset")
    parser.add_argument("--budgets", default="", help="comma-separated steps")
    parser.add_argument("--threshold", type=float, default=0.5)
    parser.add_argument("--plot", type=Path, default=None, help="PNG of the first metric")
    args = parser.parse_args(argv)
    metrics = args.metric or ["eval/heldout/accuracy"]
    budgets = [int(b) for b in args.budgets.split(",") if b.strip()]
    keep = args.configs.split(",") if args.configs else None
    unfinished = unfinished_runs(args.root)
    names = [
        f"{config} seed {seed} ({why})"
        for config, per_seed in sorted(unfinished.items())
        for seed, why in sorted(per_seed.items())
        if keep is None or config in keep
    ]
    if names:
        print(f"Left out, not finished (summary.json): {'; '.join(names)}.\n")
    for i, metric in enumerate(metrics):
        curves = without(load_curves(args.root, metric), unfinished)
        wanted = keep if keep is not None else [args.base]  # --configs without the base:
        missing = [c for c in wanted if c not in curves]  # no paired differences wanted
        if missing:
            parser.error(
                f"no finished runs of config {missing[0]!r} with {metric!r} under {args.root}; "
                f"configs found: {', '.join(sorted(curves)) or 'none'}"
            )
        if keep is not None:
            curves = {c: curves[c] for c in keep}
        higher = "accuracy" in metric or "within" in metric
        print(
            format_report(
                curves,
                metric,
                base=args.base,
                budgets=budgets,
                threshold=args.threshold if metric.endswith("/accuracy") else None,
                higher_is_better=higher,
            )
        )
        print()
        if i == 0 and args.plot is not None:
            print(f"plot: {plot_curves(curves, metric, args.plot, configs=keep)}")


if __name__ == "__main__":
    main()
