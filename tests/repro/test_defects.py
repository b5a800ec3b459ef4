"""Regression tests for silent wrong answers found in review (issue 16): each failed before its fix."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from repro.aggregate import compute_report, load_runs, summarize
from repro.cli import main
from repro.overrides import apply_overrides
from repro.report import fmt_cell, render
from repro.stats import iqm_estimate, performance_profile, probability_of_improvement_estimate
from repro.storage import (
    CorruptFileError,
    MetricsWriter,
    atomic_write_json,
    read_metrics,
    run_dir_for,
)
from repro.sweep import default_threads, plan_sweep, run_sweep


def test_set_splits_a_comma_separated_tuple_value() -> None:
    """``--set categories=a,b`` made ONE category named "a,b"; it now gives two, and the
    space-separated form still works; an empty element is an error naming the value."""
    from ntl.experiments.arith import CONFIGS

    base = next(iter(CONFIGS.values()))
    cats = ("numbers__place_value", "arithmetic__add_or_sub")
    assert apply_overrides(base, [f"categories={cats[0]},{cats[1]}"]).categories == cats
    assert apply_overrides(base, [f"categories={cats[0]}, {cats[1]}"]).categories == cats
    assert apply_overrides(base, [f"categories={cats[0]} {cats[1]}"]).categories == cats
    assert apply_overrides(base, [f"categories={cats[0]}"]).categories == cats[:1]
    splits = apply_overrides(base, ["eval_splits=interpolate,extrapolate"]).eval_splits
    assert splits == ("interpolate", "extrapolate")
    optional = apply_overrides(base, ["extrapolate_categories=x,y"]).extrapolate_categories
    assert optional == ("x", "y")
    with pytest.raises(ValueError, match=r"categories='a,,b': an empty element"):
        apply_overrides(base, ["categories=a,,b"])


def test_set_comma_list_of_floats_on_nested_tuple_field() -> None:
    from qa2c.experiments.cartpole import CONFIGS

    cfg = apply_overrides(CONFIGS["HQ2Q"], ["agent.obs_scale=1,1,0.5,0.5"])
    assert cfg.agent.obs_scale == (1.0, 1.0, 0.5, 0.5)


def _write_run(
    out: Path, exp: str, name: str, seed: int, config: dict[str, Any], acc: float
) -> None:
    d = run_dir_for(out, exp, name, seed)
    atomic_write_json(d / "config.json", {"seed": seed, **config})
    final = {"step": 10, "eval/heldout/accuracy": acc}
    (d / "metrics.jsonl").write_text(json.dumps(final) + "\n")
    atomic_write_json(d / "summary.json", {"status": "finished", "final": final})


def test_report_does_not_pool_seeds_run_with_different_overrides(tmp_path: Path) -> None:
    """Seeds 0-1 run with ``--set max_steps=400`` and seed 2 without, into one ``--out``: each
    run folder's own config check passes, and the report pooled all three under "ce" as one
    config (mean 0.4 over 3 seeds). Each variant is now its own row, named by what differs."""
    for seed, (steps, acc) in enumerate([(400, 0.3), (400, 0.3), (1000, 0.6)]):
        _write_run(tmp_path, "ntl-arith", "ce", seed, {"max_steps": steps, "lr": 0.1}, acc)
    _write_run(tmp_path, "ntl-arith", "ntl", 0, {"max_steps": 400, "lr": 0.1}, 0.5)
    names = {r.config: r.seed for r in load_runs(tmp_path) if r.seed == 2}
    assert names == {"ce [max_steps=1000]": 2}
    table = compute_report(tmp_path).experiments[0].evals["heldout"]
    assert sorted(table) == ["ce [max_steps=1000]", "ce [max_steps=400]", "ntl"]
    assert table["ce [max_steps=400]"]["accuracy"].n == 2
    assert table["ce [max_steps=400]"]["accuracy"].mean == pytest.approx(0.3)
    assert table["ce [max_steps=1000]"]["accuracy"].mean == pytest.approx(0.6)
    text = render(compute_report(tmp_path), tmp_path / "report")
    assert "| ce [max_steps=400] | 0,1 |" in text and "| ce [max_steps=1000] | 2 |" in text


def test_an_old_shape_config_json_is_not_a_variant(tmp_path: Path) -> None:
    """A run folder with the flat (older) QA2C config.json and one with the current nested shape
    are the same config: compared through the experiment's ``upgrade_config``, not split."""
    import dataclasses

    from qa2c.experiments.cartpole import CONFIGS
    from repro.registry import config_to_json
    from tests.repro.test_real_experiments import _FLAT_HA2Q

    cfg = dataclasses.replace(CONFIGS["HA2Q"], total_steps=96, checkpoint_every=32, engine="torch")
    flat = {k: v for k, v in _FLAT_HA2Q.items() if k != "seed"}
    _write_run(tmp_path, "qa2c-cartpole", "HA2Q", 0, flat, 0.5)
    _write_run(tmp_path, "qa2c-cartpole", "HA2Q", 1, config_to_json(cfg), 0.5)
    assert [r.config for r in load_runs(tmp_path)] == ["HA2Q", "HA2Q"]


def test_no_confidence_interval_from_a_single_run(tmp_path: Path) -> None:
    """One finished seed gave an IQM "CI" [x, x] (zero width, looks like certainty), and so did
    P(X > Y) and the performance profile band; now the ends are NaN and the report says so."""
    one = np.array([0.7])
    three = np.array([0.2, 0.4, 0.9])
    est = iqm_estimate(one)
    assert est.value == 0.7 and math.isnan(est.low) and math.isnan(est.high)
    assert not math.isnan(iqm_estimate(three).low)
    poi = probability_of_improvement_estimate(one, three)
    assert poi.value == pytest.approx(2 / 3) and math.isnan(poi.low) and math.isnan(poi.high)
    _, low, high = performance_profile(one, np.array([0.0, 0.5, 1.0]))
    assert np.isnan(low).all() and np.isnan(high).all()
    for seed, acc in enumerate([0.2, 0.4, 0.9]):
        _write_run(tmp_path, "ntl-arith", "ce", seed, {}, acc)
    _write_run(tmp_path, "ntl-arith", "ntl", 0, {}, 0.7)
    for run_dir in tmp_path.glob("ntl-arith/*/seed-*"):  # the declared score key, logged
        summary = json.loads((run_dir / "summary.json").read_text())
        summary["final"]["eval/interpolate/accuracy"] = summary["final"]["eval/heldout/accuracy"]
        atomic_write_json(run_dir / "summary.json", summary)
        (run_dir / "metrics.jsonl").write_text(json.dumps(summary["final"]) + "\n")
    text = render(compute_report(tmp_path), tmp_path / "report")
    assert "| ntl | 1 | 0 | 0.7 (no CI: < 2 runs) |" in text
    assert "| ntl | 0.667 (no CI: < 2 runs) | – |" in text


def test_a_step_yielded_twice_is_an_error_not_a_lost_row(tmp_path: Path) -> None:
    """The writer dropped EVERY row whose step was <= the last one, so an experiment that
    yielded an eval row at the same step as its train row lost the eval row without a word.
    Only a resumed run's replay (before its first new row) is dropped now."""
    path = tmp_path / "metrics.jsonl"
    with MetricsWriter(path) as w:
        assert w.append({"step": 1, "loss": 0.5})
        with pytest.raises(ValueError, match="strictly increase: 1 after 1"):
            w.append({"step": 1, "eval/accuracy": 0.9})
        assert w.append({"step": 2, "loss": 0.4})
    with MetricsWriter(path) as w:  # resumed: the replay of steps 1-2 is dropped
        assert not w.append({"step": 1, "loss": 0.5})
        assert not w.append({"step": 2, "loss": 0.4})
        assert w.append({"step": 3, "loss": 0.3})
        with pytest.raises(ValueError, match="strictly increase: 2 after 3"):
            w.append({"step": 2, "loss": 0.4})
    assert [r["step"] for r in read_metrics(path)] == [1, 2, 3]


def test_a_duplicated_row_in_metrics_jsonl_is_corruption_not_counted_twice(tmp_path: Path) -> None:
    """A metrics.jsonl with a repeated step (a row appended twice) was read as two episodes:
    the report's curves and episode scores counted it twice. It is now a corrupt run, listed
    with the line, left out of the numbers."""
    path = tmp_path / "metrics.jsonl"
    rows = [{"step": 10, "r": 1.0}, {"step": 20, "r": 2.0}, {"step": 20, "r": 2.0}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(CorruptFileError, match="line 3 has step 20 after step 20"):
        list(read_metrics(path))
    with pytest.raises(CorruptFileError, match="line 3"):
        MetricsWriter(path)
    _write_run(tmp_path / "runs", "ntl-arith", "ce", 0, {}, 0.5)
    bad = run_dir_for(tmp_path / "runs", "ntl-arith", "ce", 0) / "metrics.jsonl"
    bad.write_text(path.read_text())
    (record,) = load_runs(tmp_path / "runs")
    assert record.status == "corrupt" and "line 3 has step 20" in record.error


def test_infinite_final_values_are_shown_not_crashing_or_blank() -> None:
    """An inf metric (a diverged loss, a runaway number's error) crashed statistics.stdev in the
    report, and +inf with -inf printed '–' as if no run had the metric."""
    inf = math.inf
    cell = summarize([inf, 1.0, 2.0])
    assert cell.n == 3 and cell.mean == inf and math.isnan(cell.std)
    assert fmt_cell(cell) == "median 2, range 1 to inf (non-finite values)"
    both = fmt_cell(summarize([inf, -inf]))
    assert "-inf to inf" in both and not both.startswith("–")
    assert fmt_cell(summarize([inf])) == "inf"
    assert fmt_cell(summarize([1.0, 2.0])) == "1.5 ± 0.707"


TOY = ("--workers", "1", "--threads", "1", "--no-progress", "--no-tensorboard")


def _toy_runs(
    out: Path, seeds: str, *sets: str, config: str = "small", flags: tuple[str, ...] = TOY
) -> None:
    """Real runs of the toy experiment (tests/repro/toy_experiments.py) by the runner."""
    argv = ["run", "toy", "--config", config, "--seeds", seeds, "--out", str(out)]
    for s in sets:
        argv += ["--set", s]
    assert main([*argv, *flags]) in (0, 1)  # 1: a run failed on purpose (fail_at_step)


def test_a_seed_folder_not_named_as_the_runner_names_it_is_not_a_second_seed(
    tmp_path: Path,
) -> None:
    """``seed-01`` (a copy of seed-1) parsed as seed 1 as well: seed 1 was counted twice in
    every table. Only ``seed-<N>`` as the runner writes it is a run; others are skipped, named."""
    _toy_runs(tmp_path, "0-1", "total_steps=6")
    small = tmp_path / "toy" / "small"
    shutil.copytree(small / "seed-1", small / "seed-01")
    shutil.copytree(small / "seed-1", small / "seed-+1")
    with pytest.warns(UserWarning) as caught:
        runs = load_runs(tmp_path)
    named = sorted(str(w.message).split("/")[-1].split(" ")[0] for w in caught)
    assert named == ["seed-+1", "seed-01"]
    assert "is not a run folder name the runner writes" in str(caught[0].message)
    assert [(r.config, r.seed, r.run_dir.name) for r in runs] == [
        ("small", 0, "seed-0"),
        ("small", 1, "seed-1"),
    ]
    with pytest.warns(UserWarning):
        table = compute_report(tmp_path).experiments[0].evals["train"]
    assert table["small"]["mae"].n == 2


def test_plan_sweep_and_repro_run_default_to_the_same_threads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``plan_sweep`` defaulted to 1 torch thread per run, ``repro run`` to cores // workers:
    the same sweep ran with other thread counts (and float results) from Python than from the
    CLI. One default now, chosen by run_sweep from its workers."""
    import torch

    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the runner sets it in-process
    before = torch.get_num_threads()
    try:
        no_threads = ("--workers", "1", "--no-progress", "--no-tensorboard")
        _toy_runs(tmp_path / "cli", "0", "total_steps=2", "log_threads=true", flags=no_threads)
        plan = plan_sweep("toy", ["small"], ["total_steps=2", "log_threads=true"], [0], tmp_path)
        run_sweep(plan, workers=1, progress=False)
    finally:
        torch.set_num_threads(before)
    logs = [
        run_dir_for(out, "toy", "small", 0) / "metrics.jsonl"
        for out in (tmp_path / "cli", tmp_path)
    ]
    threads = [[r["params/threads"] for r in read_metrics(log)] for log in logs]
    assert threads[0] == threads[1] == [default_threads(1)] * 2


def _log_run(
    out: Path,
    exp: str,
    name: str,
    seed: int,
    rows: list[dict[str, Any]],
    status: str = "finished",
    config: dict[str, Any] | None = None,
) -> None:
    """A run folder as the runner leaves it: rows through MetricsWriter, and a summary.json
    whose ``final`` and ``last_step`` are the writer's."""
    d = run_dir_for(out, exp, name, seed)
    atomic_write_json(d / "config.json", {"seed": seed, **(config or {})})
    with MetricsWriter(d / "metrics.jsonl") as w:
        for row in rows:
            w.append(row)
    summary = {"status": status, "last_step": w.last_step, "rows": len(rows), "final": w.final}
    atomic_write_json(d / "summary.json", summary)


def test_iqm_cis_of_equal_size_configs_come_from_independent_resamples(tmp_path: Path) -> None:
    """Every config's IQM CI (and profile band) was bootstrapped with seed 0: configs with as
    many runs shared their resample indices, so their intervals erred together (here one
    config's scores are 0.5 x the other's + 0.1 and its CI was exactly 0.5 x the other's CI +
    0.1). Each config now has its own fixed seed; the report stays deterministic."""
    score = "eval/interpolate/accuracy"  # ntl-arith's declared score, one value per run
    ce = [0.1, 0.25, 0.3, 0.55, 0.6, 0.9]
    for seed, a in enumerate(ce):
        _log_run(tmp_path, "ntl-arith", "ce", seed, [{"step": 10, score: a}])
        _log_run(tmp_path, "ntl-arith", "ntl", seed, [{"step": 10, score: 0.5 * a + 0.1}])
    section = compute_report(tmp_path).experiments[0].scores
    assert section is not None
    rows = {row.config: row.iqm for row in section.rows}
    a, b = rows["ce"], rows["ntl"]
    assert a is not None and b is not None
    assert b.value == pytest.approx(0.5 * a.value + 0.1)  # the point estimates are affine
    shared = (b.low, b.high) == pytest.approx((0.5 * a.low + 0.1, 0.5 * a.high + 0.1))
    assert not shared, "the two configs' CIs come from the same resamples"
    again = compute_report(tmp_path).experiments[0].scores
    assert again is not None and [r.iqm for r in again.rows] == [a, b]


def test_final_values_from_different_steps_are_not_pooled_silently(tmp_path: Path) -> None:
    """The report's final value of a metric was its last logged value, whatever the step: seed
    2, whose last row lacks the evaluation, was pooled at step 100 with seeds 0-1 at step 200,
    in the evaluation tables and the score statistics, with nothing said. A run's final value
    is its value at its last step that has the metric; where the seeds' steps differ the cell
    is marked and a note names the steps and their seeds."""
    acc, mae, score = "eval/heldout/accuracy", "eval/heldout/mae", "eval/interpolate/accuracy"
    for seed, (a, e) in enumerate([(0.5, 3.0), (0.6, 2.0)]):
        rows = [{"step": 100, acc: 0.0, mae: 9.0}, {"step": 200, acc: a, mae: e, score: a}]
        _log_run(tmp_path, "ntl-arith", "ce", seed, rows)
    late = [{"step": 100, acc: 0.1, mae: 4.0, score: 0.1}, {"step": 200, "losses/train": 1.0}]
    _log_run(tmp_path, "ntl-arith", "ce", 2, late)
    for seed in (0, 1):  # the same step on every seed: no mark
        _log_run(tmp_path, "ntl-arith", "ntl", seed, [{"step": 200, acc: 0.6, score: 0.6}])
    data = compute_report(tmp_path)
    text = render(data, tmp_path / "report")
    assert "| ce | 3 | 0.4 ± 0.265 † | 3 ± 1 † |" in text
    steps = "final values from different steps: step 100 (seed 2); step 200 (seeds 0, 1)"
    assert f"- † ce, accuracy: {steps}" in text and f"- † ce, mae: {steps}" in text
    assert "| ce † | 3 | 0 |" in text and f"- † ce: {steps}" in text  # the score statistics
    assert "| ntl | 2 | 0.6 ± 0 | – |" in text and "| ntl | 2 | 0 |" in text
    assert text.count("†") == 8  # and the interpolate table's accuracy
    cell = data.experiments[0].evals["heldout"]["ce"]["accuracy"]
    assert cell.ends == ((0, 200.0), (1, 200.0), (2, 100.0)) and cell.steps == [100.0, 200.0]


def test_the_fair_analysis_does_not_read_seed_01_as_seed_1(tmp_path: Path) -> None:
    """benchmarks/qa2c_fair/analyze.py parsed ``seed-01`` as seed 1 (and ``seed-1_0`` as 10),
    so a stray copy stood in for a missing seed; such folders are now skipped, named."""
    import importlib.util

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "qa2c_fair" / "analyze.py"
    spec = importlib.util.spec_from_file_location("qa2c_fair_analyze", path)
    assert spec is not None and spec.loader is not None
    analyze = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(analyze)
    rows = [{"step": 10, "charts/episodic_return": 9.0}]
    for seed in (0, 1):
        _log_run(tmp_path, "qa2c-fair", "cartpole-A2C", seed, rows)
    base = tmp_path / "qa2c-fair" / "cartpole-A2C"
    (base / "seed-1").rename(base / "seed-01")
    shutil.copytree(base / "seed-0", base / "seed-1_0")
    with pytest.warns(UserWarning) as caught:
        runs = analyze.config_runs(tmp_path, "cartpole-A2C")
    assert runs == {0: base / "seed-0"}
    assert sorted(str(w.message).split("/")[-1].split(":")[0] for w in caught) == [
        "seed-01",
        "seed-1_0",
    ]
