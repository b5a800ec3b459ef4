"""The experiment runner and the ``repro`` command line for both papers.

Sweeps run every (config, seed) pair of a registered experiment into run folders
``OUT/experiment/config/seed-N/`` (``config.json``, ``metrics.jsonl``, ``summary.json``,
TensorBoard events, the experiment's ``checkpoint.pt``), locally or on Ray, resuming
interrupted runs; :func:`write_report` aggregates a runs folder over seeds.
"""

from repro.registry import (
    EXPERIMENTS,
    ExperimentSpec,
    ExperimentUnavailableError,
    Protocol,
    load_experiment,
    register_experiment,
)
from repro.report import write_report
from repro.runner import ConfigMismatchError, RunResult
from repro.sweep import SweepPlan, SweepResult, plan_sweep, run_sweep

__all__ = [
    "EXPERIMENTS",
    "ConfigMismatchError",
    "ExperimentSpec",
    "ExperimentUnavailableError",
    "Protocol",
    "RunResult",
    "SweepPlan",
    "SweepResult",
    "load_experiment",
    "plan_sweep",
    "register_experiment",
    "run_sweep",
    "write_report",
]
