"""Issue 15 analysis: tuning choice, the fair table (rliable IQM, CIs, P(improvement)), plots, noise.

Reads run folders written by ``repro run qa2c-fair`` (``OUT/qa2c-fair/CONFIG/seed-N/metrics.jsonl``).

    python benchmarks/qa2c_fair/analyze.py tune RUNS_TUNE --env cartpole
    python benchmarks/qa2c_fair/analyze.py table RUNS --env cartpole --plot docs/qa2c_fair_cartpole.png
    python benchmarks/qa2c_fair/analyze.py noise RUNS --env cartpole

Scores (per run): ``eval_final`` = mean greedy return of the last evaluation (10 episodes);
``eval_auc`` = mean greedy return over all evaluations (speed and level); ``train_last100`` = mean
of the last 100 training-episode returns. Solved = the 100-episode moving average of training
returns reaches the task's threshold (CartPole 475, Acrobot -100); steps to solve of an unsolved
run count as infinite in the median.
"""

from __future__ import annotations

import argparse
import json
import math
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from qa2c.experiments.cartpole import curve_stats
from qa2c.experiments.fair import TASKS, FairConfig, evaluate_noisy, fair_params
from repro.aggregate import seed_of

ENVS = {"cartpole": "CartPole-v1", "acrobot": "Acrobot-v1"}
AGENTS = ("Q2Q", "A2C")
LABELS = {"Q2Q": "quantum (Q2Q-improved)", "A2C": "classical (matched MLP)"}


def load(run_dir: Path) -> list[dict[str, Any]]:
    with open(run_dir / "metrics.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]


def run_scores(rows: list[dict[str, Any]], threshold: float) -> dict[str, Any]:
    train = [r for r in rows if "charts/episodic_return" in r]
    evals = [r for r in rows if "eval/return_mean" in r]
    st = curve_stats(train, threshold=threshold)
    rets = [float(r["charts/episodic_return"]) for r in train]
    return {
        "solved_step": st["solved_step"],
        "train_last100": float(np.mean(rets[-100:])),
        "eval_final": float(evals[-1]["eval/return_mean"]),
        "eval_auc": float(np.mean([r["eval/return_mean"] for r in evals])),
        "eval_curve": [(int(r["step"]), float(r["eval/return_mean"])) for r in evals],
        "train_curve": [(int(r["step"]), float(r["charts/episodic_return"])) for r in train],
    }


def config_runs(root: Path, config: str) -> dict[int, Path]:
    base = root / "qa2c-fair" / config
    out = {}
    for d in sorted(base.glob("seed-*")):
        seed = seed_of(d)  # seed-01 is not a second seed 1
        if seed is None:
            warnings.warn(
                f"{d}: not a run folder name the runner writes (seed-N); skipped", stacklevel=2
            )
            continue
        summary = d / "summary.json"  # finished runs only
        if summary.exists() and json.loads(summary.read_text()).get("status") == "finished":
            out[seed] = d
    return out


def read_config(run_dir: Path) -> FairConfig:
    cfg = json.loads((run_dir / "config.json").read_text())
    cfg = cfg.get("config", cfg)
    return FairConfig(**{k: v for k, v in cfg.items() if k in FairConfig.__dataclass_fields__})


def collect(root: Path, env: str, seeds: range) -> dict[str, list[dict[str, Any]]]:
    thr = TASKS[ENVS[env]].solve_threshold
    out: dict[str, list[dict[str, Any]]] = {}
    for agent in AGENTS:
        runs = config_runs(root, f"{env}-{agent}")
        missing = [s for s in seeds if s not in runs]
        if missing:
            raise SystemExit(f"{root}: {env}-{agent} lacks seeds {missing}")
        out[agent] = [run_scores(load(runs[s]), thr) for s in seeds]
    return out


def tune(root: Path, env: str) -> None:
    """Print each trial's tuning score (seeds 0-9) and the pick per agent (highest eval_auc)."""
    thr = TASKS[ENVS[env]].solve_threshold
    print(
        "| trial | agent | mean greedy return over evaluations (eval_auc) | solved | median solve step |"
    )
    print("|---|---|---|---|---|")
    best: dict[str, tuple[float, str]] = {}
    for trial in sorted(p for p in root.iterdir() if p.is_dir()):
        for agent in AGENTS:
            runs = config_runs(trial, f"{env}-{agent}")
            if sorted(runs) != list(range(10)):
                continue
            sc = [run_scores(load(runs[s]), thr) for s in range(10)]
            auc = float(np.mean([s["eval_auc"] for s in sc]))
            solved = [s["solved_step"] for s in sc if s["solved_step"] is not None]
            med = _median_solve([s["solved_step"] for s in sc])
            print(f"| {trial.name} | {agent} | {auc:.1f} | {len(solved)}/10 | {med} |")
            if agent not in best or auc > best[agent][0]:
                best[agent] = (auc, trial.name)
    for agent, (auc, name) in best.items():
        print(f"pick {agent}: {name} (eval_auc {auc:.1f})")


def _median_solve(steps: list[int | None]) -> str:
    vals = sorted(math.inf if s is None else float(s) for s in steps)
    med = float(np.median(vals))
    return "not reached" if math.isinf(med) else f"{med / 1000:.0f}k"


def bootstrap(
    samples: tuple[np.ndarray, ...], func: Any, reps: int, rng: np.random.RandomState
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Point estimate and 95 % percentile CI of ``func(*samples)`` by a stratified bootstrap.

    Each sample ``(runs, tasks)`` is resampled with replacement over runs, separately per task
    (rliable's ``StratifiedBootstrap``; ``rliable.library`` itself does not import in this venv:
    its ``arch`` dependency is incompatible with the installed pandas).
    """
    point = np.asarray(func(*samples))
    draws = []
    for _ in range(reps):
        res = []
        for x in samples:
            idx = rng.randint(0, x.shape[0], size=x.shape)  # per task column
            res.append(np.take_along_axis(x, idx, 0))
        draws.append(np.asarray(func(*res)))
    d = np.stack(draws)
    return point, np.percentile(d, 2.5, axis=0), np.percentile(d, 97.5, axis=0)


def table(root: Path, env: str, plot: Path | None, reps: int) -> None:
    from rliable import metrics

    seeds = range(10, 30)
    data = collect(root, env, seeds)
    params = {a: fair_params(read_config(config_runs(root, f"{env}-{a}")[10])) for a in AGENTS}
    rng = np.random.RandomState(0)
    keys = ("eval_final", "eval_auc", "train_last100")
    scores = {k: {a: np.array([[s[k]] for s in data[a]]) for a in AGENTS} for k in keys}
    iqm: dict[str, dict[str, tuple[float, float, float]]] = {}
    for k in keys:
        iqm[k] = {}
        for a in AGENTS:
            pt, lo, hi = bootstrap((scores[k][a],), metrics.aggregate_iqm, reps, rng)
            iqm[k][a] = (float(pt), float(lo), float(hi))
    poi = {}
    for k in keys:
        pair = (scores[k]["Q2Q"], scores[k]["A2C"])
        pt, lo, hi = bootstrap(pair, metrics.probability_of_improvement, reps // 5, rng)
        poi[k] = (float(pt), float(lo), float(hi))
    n = len(seeds)
    print(f"{ENVS[env]}, held-out seeds 10-29 (n = {n} per agent)\n")
    print(
        "| agent | params | solved | median steps to solve | IQM greedy return, final "
        "[95 % CI] | IQM greedy return, mean over evaluations [95 % CI] | IQM training "
        "return, last 100 episodes [95 % CI] |"
    )
    print("|---|---|---|---|---|---|---|")
    for a in AGENTS:
        solved = sum(s["solved_step"] is not None for s in data[a])
        med = _median_solve([s["solved_step"] for s in data[a]])
        cells = [f"{iqm[k][a][0]:.1f} [{iqm[k][a][1]:.1f}, {iqm[k][a][2]:.1f}]" for k in keys]
        print(f"| {LABELS[a]} | {params[a]} | {solved}/{n} | {med} | " + " | ".join(cells) + " |")
    print(
        "\nP(quantum > classical) [95 % CI]: "
        + "; ".join(f"{k}: {poi[k][0]:.2f} [{poi[k][1]:.2f}, {poi[k][2]:.2f}]" for k in keys)
    )
    if plot is not None:
        _plot(data, env, plot, rng)


def _plot(data: dict[str, list[dict[str, Any]]], env: str, path: Path, rng: Any) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from rliable import metrics

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for a, color in zip(AGENTS, ("tab:purple", "tab:green")):
        # greedy evaluations: IQM over seeds with 95 % bootstrap CI at each evaluation step
        steps = [s for s, _ in data[a][0]["eval_curve"]]
        mat = np.array([[v for _, v in d["eval_curve"]] for d in data[a]])  # (runs, points)
        pt, lo, hi = bootstrap(
            (mat,),
            lambda x: np.array([metrics.aggregate_iqm(x[:, j : j + 1]) for j in range(x.shape[1])]),
            2000,
            rng,
        )
        axes[1].plot(steps, pt, color=color, label=LABELS[a])
        axes[1].fill_between(steps, lo, hi, color=color, alpha=0.2)
        # training returns: per run, mean return of episodes ending in each 10k-step bin
        edges = np.arange(0, steps[-1] + 10_000, 10_000)
        binned = []
        for d in data[a]:
            st = np.array([s for s, _ in d["train_curve"]])
            rt = np.array([r for _, r in d["train_curve"]])
            idx = np.digitize(st, edges[1:], right=True)
            binned.append(
                [rt[idx == j].mean() if (idx == j).any() else np.nan for j in range(len(edges) - 1)]
            )
        b = np.array(binned)
        q25, q50, q75 = np.nanpercentile(b, [25, 50, 75], axis=0)
        mid = edges[1:] - 5_000
        axes[0].plot(mid, q50, color=color, label=LABELS[a])
        axes[0].fill_between(mid, q25, q75, color=color, alpha=0.2)
    thr = TASKS[ENVS[env]].solve_threshold
    axes[0].set_title(f"{ENVS[env]}: training return (median, IQR over 20 held-out seeds)")
    axes[1].set_title("greedy evaluation return (IQM, 95 % CI)")
    for ax in axes:
        ax.axhline(thr, color="grey", ls=":", lw=1)
        ax.set_xlabel("environment steps")
        ax.legend(loc="lower right", fontsize=8)
    axes[0].set_ylabel("return")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"plot: {path}")


def noise(root: Path, env: str, episodes: int) -> None:
    runs = config_runs(root, f"{env}-Q2Q")
    dirs = [runs[s] for s in range(10, 30)]
    greedy = evaluate_noisy(dirs, episodes=episodes)
    sampled = evaluate_noisy(dirs, episodes=episodes, sample=True)
    print(f"{ENVS[env]}: trained quantum agents (seeds 10-29), {episodes} episodes each\n")
    print(
        "| circuit | greedy: mean return | greedy: lost vs exact | sampled policy: mean return "
        "| sampled: lost vs exact |"
    )
    print("|---|---|---|---|---|")
    g0, s0 = greedy["exact"].mean(), sampled["exact"].mean()
    for name in greedy:
        g, s = greedy[name].mean(), sampled[name].mean()
        print(f"| {name} | {g:.1f} | {g0 - g:.1f} | {s:.1f} | {s0 - s:.1f} |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("tune", "table", "noise"))
    p.add_argument("root", type=Path)
    p.add_argument("--env", choices=tuple(ENVS), default="cartpole")
    p.add_argument("--plot", type=Path, default=None)
    p.add_argument("--reps", type=int, default=5_000)
    p.add_argument("--episodes", type=int, default=10)
    args = p.parse_args()
    if args.what == "tune":
        tune(args.root, args.env)
    elif args.what == "table":
        table(args.root, args.env, args.plot, args.reps)
    else:
        noise(args.root, args.env, args.episodes)


if __name__ == "__main__":
    main()
