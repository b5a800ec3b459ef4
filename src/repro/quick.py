"""``repro quick``: small versions of both papers' headline experiments, then the report.

The whole plan is :data:`QUICK_PLAN` below: one entry per sweep, with the configs, seeds and
the ``--set`` overrides that shrink it. Each entry is what ``repro run`` would do with the same
arguments, so any line can be rerun (or scaled up) by hand, e.g.::

    repro run qa2c-cartpole --config HA2Q --seeds 0-1 --group-seeds --set total_steps=20000

Runs land in ``OUT/experiment/config/seed-N``; re-running ``repro quick`` skips finished runs
and resumes interrupted ones.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from repro.registry import ExperimentUnavailableError
from repro.report import write_report
from repro.sweep import SweepResult, default_threads, plan_sweep, run_sweep

__all__ = ["QUICK_PLAN", "QuickStep", "run_quick"]


@dataclass(frozen=True)
class QuickStep:
    """One sweep of the quick plan: ``repro run EXPERIMENT --config ... --seeds ... --set ...``."""

    experiment: str
    configs: tuple[str, ...]
    seeds: tuple[int, ...]
    overrides: tuple[str, ...]
    group_seeds: bool = False
    why: str = ""

    def command(self, out: Path) -> str:
        parts = ["repro run", self.experiment]
        parts += [f"--config {c}" for c in self.configs]
        parts.append(f"--seeds {','.join(map(str, self.seeds))}")
        parts += [f"--set {o}" for o in self.overrides]
        if self.group_seeds:
            parts.append("--group-seeds")
        return " ".join([*parts, f"--out {out}"])


# Sized for about 15 minutes on 2 CPU cores (see the report of issue 7 for measured times).
QUICK_PLAN: tuple[QuickStep, ...] = (
    QuickStep(
        "qa2c-cartpole",
        ("A2C5", "HA2Q", "HQ2C", "HQ2Q"),
        (0, 1),
        ("total_steps=20000", "checkpoint_every=5000"),
        group_seeds=True,
        why="the paper's figure: four agents, faithful algorithm, far shorter than its 1 M steps",
    ),
    QuickStep(
        "qa2c-cartpole",
        ("Q2Q-improved",),
        (0, 1),
        ("total_steps=40000", "checkpoint_every=10000"),
        group_seeds=True,
        why="the improved pure-quantum agent (re-uploading, scaling, 8 envs, GAE)",
    ),
    QuickStep(
        "ntl-arith",
        ("ce", "ntl-was", "ntl-mse"),
        (0, 1),
        (
            "max_steps=300",
            "train_size=2000",
            "eval_size=50",
            "log_every=25",
            "eval_every=300",
            "checkpoint_every=100",
            "warmup_steps=30",
        ),
        why="CE vs CE + NTL-WAS vs CE + NTL-MSE on mathematics arithmetic, tiny T5",
    ),
)


def run_quick(
    out: Path, report_dir: Path, *, workers: int | None = None, dry_run: bool = False
) -> int:
    """Run :data:`QUICK_PLAN` into ``out`` and write the report; return the exit status."""
    out, report_dir = Path(out), Path(report_dir)
    print(f"repro quick: {len(QUICK_PLAN)} sweeps into {out}, report into {report_dir}")
    for i, step in enumerate(QUICK_PLAN, 1):
        print(f"  [{i}] {step.command(out)}\n      ({step.why})")
    if dry_run:
        return 0
    results: list[SweepResult] = []
    unavailable: list[str] = []
    start = time.perf_counter()
    for i, step in enumerate(QUICK_PLAN, 1):
        print(f"\n[{i}/{len(QUICK_PLAN)}] {step.experiment}: {', '.join(step.configs)}", flush=True)
        try:
            plan = plan_sweep(
                step.experiment,
                step.configs,
                step.overrides,
                step.seeds,
                out,
                group_seeds=step.group_seeds,
                threads=default_threads(workers),
            )
        except ExperimentUnavailableError as e:
            print(f"  skipped: {e}", file=sys.stderr)
            unavailable.append(step.experiment)
            continue
        results.append(run_sweep(plan, workers=workers))
    elapsed = time.perf_counter() - start
    print(f"\nall sweeps done in {elapsed / 60:.1f} min")
    for r in results:
        print(r.table())
    failed = sum(len(r.failed) for r in results)
    if out.is_dir() and any(out.iterdir()):
        path = write_report(out, report_dir)
        print(f"\nreport: {path}")
    if unavailable:
        print(f"unavailable experiments (not run): {', '.join(unavailable)}", file=sys.stderr)
    return 1 if failed or unavailable else 0
