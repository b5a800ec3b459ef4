"""``repro quick``: the plan is valid for the real experiments, and the driver runs a plan end to end."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from repro import quick
from repro.cli import main
from repro.overrides import apply_overrides
from repro.quick import QUICK_PLAN, QuickStep
from repro.registry import load_experiment
from repro.storage import run_state
from repro.sweep import plan_sweep


def test_quick_drives_sweeps_and_writes_report(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    plan = (
        QuickStep("toy", ("small",), (0, 1), ("total_steps=6",), why="two seeds"),
        QuickStep("toy", ("fast-lr",), (0, 1), ("total_steps=4",), group_seeds=True),
    )
    monkeypatch.setattr(quick, "QUICK_PLAN", plan)
    out, rep = tmp_path / "runs", tmp_path / "rep"
    assert main(["quick", "--out", str(out), "-o", str(rep), "--workers", "1"]) == 0
    text = capsys.readouterr().out
    assert "repro run toy --config small --seeds 0,1 --set total_steps=6 --out" in text
    for config, seed in [("small", 0), ("small", 1), ("fast-lr", 0), ("fast-lr", 1)]:
        assert run_state(out / "toy" / config / f"seed-{seed}").status == "finished"
    assert "| fast-lr | 2 |" in (rep / "report.md").read_text()
    # a plan step whose experiment cannot be imported is reported, and the exit status says so
    monkeypatch.setattr(quick, "QUICK_PLAN", (QuickStep("toy-missing", ("x",), (0,), ()),))
    assert main(["quick", "--out", str(out), "-o", str(rep), "--workers", "1"]) == 1
    assert "toy-missing" in capsys.readouterr().err


@pytest.mark.parametrize("step", QUICK_PLAN, ids=lambda s: f"{s.experiment}:{'+'.join(s.configs)}")
def test_quick_plan_is_valid_for_the_real_experiments(step: QuickStep, tmp_path: Path) -> None:
    """Every config name and override of the plan resolves (nothing runs).

    Overrides pin the quick sizes explicitly, even where they equal today's defaults.
    """
    plan = plan_sweep(
        step.experiment,
        step.configs,
        step.overrides,
        step.seeds,
        tmp_path,
        group_seeds=step.group_seeds,
    )
    assert plan.n_runs == len(step.configs) * len(step.seeds)
    exp = load_experiment(step.experiment)
    for batch in plan.batches:
        for task in batch.tasks:
            expected = apply_overrides(exp.configs[task.config_name], step.overrides)
            assert task.config == dataclasses.replace(expected, seed=task.seed)
    assert not any(tmp_path.iterdir())
