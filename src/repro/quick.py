"""``repro quick``: small versions of both papers' headline experiments, then the report.

The whole plan is :data:`QUICK_PLAN` below: one entry per sweep, with the configs, seeds and
the ``--set`` overrides that shrink it. Each entry is what ``repro run`` would do with the same
arguments, so any line can be rerun (or scaled up) by hand, e.g.::

    repro run qa2c-cartpole --config HA2Q --seeds 0-1 --group-seeds --set total_steps=300000

All steps' runs share one pool of ``--workers`` processes. Runs land in
``OUT/experiment/config/seed-N``; re-running ``repro quick`` skips finished runs
and resumes interrupted ones.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

from repro.registry import ExperimentUnavailableError
from repro.report import write_report
from repro.sweep import SweepPlan, plan_sweep, run_sweep

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


# Sized for about 15 minutes on 2 idle CPU cores; all steps share one pool of workers and the
# slowest batches come first. Measured costs are in the report of issue 7.
QUICK_PLAN: tuple[QuickStep, ...] = (
    QuickStep(
        "qa2c-cartpole",
        ("HQ2Q", "HA2Q", "HQ2C", "A2C5"),
        (0, 1),
        ("total_steps=300000", "checkpoint_every=100000"),
        group_seeds=True,
        why="the paper's figure: four agents, the paper's algorithm, 30 % of its 1 M steps "
        "(the JAX engine, engine=jax)",
    ),
    QuickStep(
        "ntl-arith",
        ("laptop2-ntl-was", "laptop2-ntl-mse", "laptop2-ce"),
        (0,),
        (
            "categories=numbers__place_value",
            "max_steps=400",
            "train_size=4000",
            "warmup_steps=50",
            "eval_every=200",
            "checkpoint_every=200",
        ),
        why="CE vs CE + NTL-WAS vs CE + NTL-MSE, the laptop2 decoder-only recipe on place value "
        "(train-easy; CE reached 38 % held-out exact match in 80 CPU-seconds)",
    ),
    QuickStep(
        "qa2c-cartpole",
        ("Q2Q-improved", "A2C-improved"),
        (0, 1),
        ("total_steps=200000", "checkpoint_every=50000"),
        why="the improved pure-quantum agent (130 parameters) beside a classical one of its size",
    ),
    QuickStep(
        "ntl-regression",
        ("ntl-was", "ce", "regression-head"),
        (0, 1),
        ("max_steps=300", "eval_every=150", "checkpoint_every=150", "warmup_steps=30"),
        why="diabetes regression as text: CE vs CE + NTL-WAS vs a regression head",
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
    merged = SweepPlan("quick", [])
    unavailable: list[str] = []
    start = time.perf_counter()
    for step in QUICK_PLAN:
        try:
            plan = plan_sweep(
                step.experiment,
                step.configs,
                step.overrides,
                step.seeds,
                out,
                group_seeds=step.group_seeds,
            )
        except ExperimentUnavailableError as e:
            print(f"  skipped: {e}", file=sys.stderr)
            unavailable.append(step.experiment)
            continue
        merged.merge(plan)
    print(f"\n{merged.n_runs} runs to do, {len(merged.skipped)} finished before", flush=True)
    result = run_sweep(merged, workers=workers)
    elapsed = time.perf_counter() - start
    print(f"\nall sweeps done in {elapsed / 60:.1f} min")
    print(result.table())
    failed = len(result.failed)
    if out.is_dir() and any(out.iterdir()):
        path = write_report(out, report_dir)
        print(f"\nreport: {path}")
    if unavailable:
        print(f"unavailable experiments (not run): {', '.join(unavailable)}", file=sys.stderr)
    return 1 if failed or unavailable else 0
