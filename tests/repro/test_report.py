"""The report on a synthetic runs folder with known numbers equals a hand computation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from repro.aggregate import (
    eval_tables,
    load_runs,
    mean_std,
    protocol_of,
    rl_table,
    rolling_mean,
    seed_curves_on_grid,
    solve_steps,
)
from repro.cli import main
from repro.storage import atomic_write_json, run_dir_for


def _write_run(
    out: Path,
    exp: str,
    config: str,
    seed: int,
    rows: list[dict[str, float | int]],
    final: dict[str, float | int],
    status: str | None = "finished",
    params: int | None = None,
) -> None:
    """``final`` is logged as (or merged into) the last row, as a run logs it; the summary's
    ``final`` is the last value of every key, as the runner writes it."""
    d = run_dir_for(out, exp, config, seed)
    atomic_write_json(d / "config.json", {"seed": seed, "name": config})
    rows = [dict(r) for r in rows]
    if final and rows and rows[-1]["step"] == final["step"]:
        rows[-1].update(final)
    elif final:
        rows.append(dict(final))
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    last: dict[str, object] = {}
    for row in rows:
        last.update(row)
    if status is not None:
        summary = {"status": status, "final": last, "error": "boom", "params": params}
        atomic_write_json(d / "summary.json", summary)


def _cartpole_rows(segments: list[tuple[int, int]]) -> list[dict[str, float | int]]:
    """Episodes given as (count, return); an episode's length equals its return."""
    rows, step, episode = [], 0, 0
    for count, ret in segments:
        for _ in range(count):
            step += ret
            episode += 1
            rows.append({"step": step, "episode": episode, "charts/episodic_return": ret})
    return rows


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("runs")
    acc = {("ce", 0): 0.5, ("ce", 1): 0.6, ("ce", 2): 0.7, ("ntl-was", 0): 0.8, ("ntl-was", 1): 0.9}
    for (config, seed), a in acc.items():
        final = {
            "step": 10,
            "eval/interpolate/accuracy": a,
            "eval/interpolate/mae": 10 * a,
            "eval/extrapolate/accuracy": a / 2,
            "eval/interpolate/arithmetic__mul/accuracy": a,
            "eval/interpolate/note": "text values are ignored",
            "losses/train": 1.0,  # not an evaluation result
        }
        rows = [{"step": s, "losses/total": 1.0 / s + seed} for s in range(1, 11)]
        _write_run(out, "ntl-arith", config, seed, rows, final)
    # a failed and an interrupted run: listed, excluded from the numbers
    bad = {"step": 1, "eval/interpolate/accuracy": 0.0}
    _write_run(out, "ntl-arith", "ntl-was", 2, [{"step": 1}], bad, status="failed")
    _write_run(out, "ntl-arith", "ntl-was", 3, [{"step": 1}], bad, status=None)
    for seed, rmse in enumerate([10.0, 14.0]):
        final = {"step": 4, "regression/rmse": rmse, "regression/mae": math.nan}
        _write_run(out, "ntl-regression", "ce", seed, [{"step": 4, "charts/lr": 0.1}], final)
    # seed 0: 100 episodes of 10, then 100 of 500; seed 1: 150 of 20, then 100 of 400.
    seed0 = _cartpole_rows([(100, 10), (100, 500)])
    seed1 = _cartpole_rows([(150, 20), (100, 400)])
    _write_run(out, "qa2c-cartpole", "HA2Q", 0, seed0, {}, params=66)
    _write_run(out, "qa2c-cartpole", "HA2Q", 1, seed1, {}, params=66)
    return out


def test_eval_table_equals_hand_computation(runs: Path) -> None:
    tables = eval_tables(load_runs(runs))["ntl-arith"]
    ce, was = tables["interpolate"]["ce"], tables["interpolate"]["ntl-was"]
    assert ce["accuracy"].n == 3 and was["accuracy"].n == 2
    assert ce["accuracy"].mean == pytest.approx(0.6)
    assert ce["accuracy"].std == pytest.approx(0.1)  # sqrt((0.01 + 0 + 0.01) / 2)
    assert was["accuracy"].mean == pytest.approx(0.85)
    assert was["accuracy"].std == pytest.approx(math.sqrt(2 * 0.05**2))
    assert ce["mae"].mean == pytest.approx(6.0) and ce["mae"].std == pytest.approx(1.0)
    assert tables["extrapolate"]["ce"]["accuracy"].mean == pytest.approx(0.3)
    assert tables["interpolate/arithmetic__mul"]["ntl-was"]["accuracy"].mean == pytest.approx(0.85)
    assert "note" not in ce and set(tables) == {
        "interpolate",
        "extrapolate",
        "interpolate/arithmetic__mul",
    }
    reg = eval_tables(load_runs(runs))["ntl-regression"]["regression"]["ce"]
    assert (reg["rmse"].mean, reg["rmse"].std, reg["rmse"].n) == (12.0, math.sqrt(8.0), 2)
    assert reg["mae"].n == 0  # NaN values are left out


def test_rl_table_equals_hand_computation(runs: Path) -> None:
    (row,) = rl_table([r for r in load_runs(runs) if r.status == "finished"])
    assert (row.config, row.seeds, row.params) == ("HA2Q", 2, 66.0)
    # seed 0: first 500 at 100*10 + 500; MA100 >= 475 needs 95 episodes of 500:
    # (95*500 + 5*10)/100 = 475.5, at step 1000 + 95*500. Seed 1 never gets there.
    assert (row.reached_max, row.median_first_max) == (1, 1500.0)
    assert (row.solved, row.median_solved) == (1, 1000.0 + 95 * 500)
    assert row.final_score.mean == pytest.approx(450.0)
    assert row.final_score.std == pytest.approx(math.sqrt(2 * 50.0**2))
    assert row.max_step == 1000 + 100 * 500


def test_report_markdown_and_plots(runs: Path, tmp_path: Path) -> None:
    assert main(["report", str(runs), "-o", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "| ce | 3 | 0.6 ± 0.1 | 6 ± 1 |" in text
    assert "| ntl-was | 2 | 0.85 ± 0.0707 | 8.5 ± 0.707 |" in text  # 3 significant digits
    assert "| ntl-arith | ntl-was | 0,1,2,3 | 2 | 1 | 1 | 0 |" in text
    assert "ntl-arith/ntl-was/seed-2: boom" in text
    assert "| ce | 2 | – (2 NaN) | 12 ± 2.83 |" in text  # ntl-regression: mae (all NaN), rmse
    head = "| config | seeds | first 500 (median) | reached 500 | solved (MA100 ≥ 475, median) |"
    assert head in text  # labels from what qa2c-cartpole declares
    assert "| HA2Q | 2 | 1,500 | 1/2 | 48,500 | 1/2 | 450 ± 70.7 | 51,000 | 66 |" in text
    # statistics of the declared score: IQM of 3 runs cuts floor(0.75) = 0 runs per end
    assert "### Statistics of the score (`eval/interpolate/accuracy`)" in text
    assert "| ce | 3 | 0 | 0.6 [0.5, 0.7] | 0.6 ± 0.1 |" in text
    assert "| ntl-was | 1 [1, 1] | – |" in text  # P(ntl-was > ce): every pair
    assert "| HA2Q | 2 | 0 | 450 [400, 500] | 450 ± 70.7 |" in text
    pngs = sorted(p.name for p in (tmp_path / "rep").glob("*.png"))
    assert pngs == [
        "ntl-arith_losses.png",
        "ntl-arith_profiles.png",
        "qa2c-cartpole_profiles.png",
        "qa2c-cartpole_rewards.png",
        "qa2c-cartpole_rewards_per_config.png",
    ]
    assert all((tmp_path / "rep" / p).stat().st_size > 5000 for p in pngs)


def test_report_errors(tmp_path: Path) -> None:
    assert main(["report", str(tmp_path / "missing")]) == 2
    assert main(["report", str(tmp_path)]) == 2  # exists but holds no runs


def test_rolling_mean_and_solve_against_loops() -> None:
    rng = np.random.default_rng(0)
    values = rng.integers(0, 501, size=300).astype(float)
    for window in (1, 7, 150):
        naive = [values[max(0, i - window + 1) : i + 1].mean() for i in range(len(values))]
        np.testing.assert_allclose(rolling_mean(values, window), naive)
    with pytest.raises(ValueError, match="window"):
        rolling_mean(values, 0)
    steps = np.cumsum(np.maximum(values, 1))
    returns = np.concatenate([values[:150], np.full(150, 500.0)])
    first, solved = solve_steps(steps, returns, protocol_of("qa2c-cartpole"))
    i500 = next(i for i, r in enumerate(returns) if r >= 500)
    isolve = next(i for i in range(99, 300) if returns[i - 99 : i + 1].mean() >= 475)
    assert (first, solved) == (steps[i500], steps[isolve])


def test_seed_curves_on_grid_and_mean_std() -> None:
    curves = [(np.array([1.0, 3.0]), np.array([10.0, 30.0])), (np.array([2.0]), np.array([5.0]))]
    got = seed_curves_on_grid(curves, np.array([0.0, 1.0, 2.0, 3.0, 4.0]))
    nan = np.nan
    np.testing.assert_array_equal(got, [[nan, 10, 10, 30, nan], [nan, nan, 5, nan, nan]])
    assert mean_std([1.0, 2.0, 3.0]) == (2.0, 1.0, 3)
    m, s, n = mean_std([4.0])
    assert (m, n) == (4.0, 1) and math.isnan(s)


def test_solve_steps_agree_with_qa2c_curve_stats() -> None:
    """The report's steps-to-solve, from what qa2c-cartpole declares, equal the experiment's own
    paper-table numbers."""
    from qa2c.experiments.cartpole import curve_stats

    rng = np.random.default_rng(1)
    for _ in range(20):
        n = int(rng.integers(50, 400))
        returns = np.minimum(500.0, np.maximum(8.0, rng.normal(np.linspace(20, 520, n), 60)))
        returns = np.round(returns)
        steps = np.cumsum(returns)
        rows = [
            {"step": int(s), "charts/episodic_return": float(r)} for s, r in zip(steps, returns)
        ]
        ref = curve_stats(rows)
        first, solved = solve_steps(steps, returns, protocol_of("qa2c-cartpole"))
        assert (first, solved) == (ref["first_500_step"], ref["solved_step"])


def test_reward_band_keeps_the_number_of_seeds_constant() -> None:
    """A seed whose last episode ends a little earlier must not leave a one-seed tail (a jump)."""
    from repro.report import band_stats

    nan = np.nan
    values = np.array(
        [
            [nan, 1.0, 2.0, 3.0, 4.0],
            [nan, 3.0, 4.0, 5.0, nan],  # its last episode ended before the last grid point
            [nan, 5.0, 6.0, 7.0, nan],
        ]
    )
    ok, mean, std = band_stats(values)
    assert ok.tolist() == [False, True, True, True, False]
    np.testing.assert_allclose(mean, [3.0, 4.0, 5.0])
    np.testing.assert_allclose(std, [2.0, 2.0, 2.0])
    ok1, mean1, std1 = band_stats(values[:1])  # one seed: its own values, std 0
    assert ok1.tolist() == [False, True, True, True, True] and std1.tolist() == [0.0] * 4
    assert mean1.tolist() == [1.0, 2.0, 3.0, 4.0]


def test_nan_seeds_are_counted_and_outliers_flagged(tmp_path: Path) -> None:
    """Issue 16.12: NaN seeds vanished from mean ± std; one diverged seed printed 1e+31."""
    from repro.aggregate import summarize
    from repro.report import fmt_cell

    cell = summarize([0.5, math.nan, 0.7])
    assert (cell.n, cell.nan) == (2, 1) and fmt_cell(cell) == "0.6 ± 0.141 (1 NaN)"
    spread = summarize([1.0, 1.1, 0.9, 1.05, 1e31])
    assert spread.outliers
    assert fmt_cell(spread) == "median 1.05, outlier-dominated (range 0.9 to 1e+31)"
    assert not summarize([1.0, 2.0, 3.0, 4.0]).outliers
    out = tmp_path / "runs"
    for seed, acc in enumerate([0.5, math.nan, 0.7, 0.6]):
        final = {"step": 1, "eval/interpolate/accuracy": acc}
        _write_run(out, "ntl-arith", "ce", seed, [{"step": 1}], final)
    assert main(["report", str(out), "-o", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "| ce | 3 | 1 | 0.6 [0.5, 0.7] | 0.6 ± 0.1 |" in text  # statistics: 1 NaN seed
    assert "| ce | 4 | 0.6 ± 0.1 (1 NaN) |" in text  # the evaluation table


def test_corrupt_run_is_listed_with_its_line_and_left_out(tmp_path: Path) -> None:
    """Issue 16.7: a corrupt middle line made the report use 99 of 529 rows, silently."""
    out = tmp_path / "runs"
    rows = _cartpole_rows([(30, 20)])
    for seed in (0, 1):
        _write_run(out, "qa2c-cartpole", "A2C", seed, rows, {}, params=10)
    log = out / "qa2c-cartpole" / "A2C" / "seed-1" / "metrics.jsonl"
    lines = log.read_text().splitlines(keepends=True)
    lines[9] = "{not json\n"
    log.write_text("".join(lines))
    records = load_runs(out)
    assert [r.status for r in records] == ["finished", "corrupt"]
    assert "line 10 is not a metric row" in records[1].error
    assert main(["report", str(out), "-o", str(tmp_path / "rep")]) == 0
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "| qa2c-cartpole | A2C | 0,1 | 1 | 0 | 0 | 1 |" in text
    assert "seed-1 (not used): " in text and "line 10 is not a metric row" in text
    assert "| A2C | 1 |" in text  # one seed behind the numbers


def test_report_data_is_computed_in_one_pass_before_rendering(runs: Path) -> None:
    """Convention 12: the numbers are a plain data structure; Markdown and plots only read it."""
    from repro.aggregate import compute_report

    data = compute_report(runs)
    assert [e.experiment for e in data.experiments] == [
        "ntl-arith",
        "ntl-regression",
        "qa2c-cartpole",
    ]
    arith, regression, cartpole = data.experiments
    assert arith.scores is not None and [r.config for r in arith.scores.rows] == ["ce", "ntl-was"]
    assert arith.scores.improvement[("ntl-was", "ce")].value == 1.0
    assert regression.scores is None  # its declared score (r2) is not in these runs
    assert cartpole.rl_rows[0].params == 66.0 and len(cartpole.runs) == 2
    assert arith.evals["interpolate"]["ce"]["accuracy"].mean == pytest.approx(0.6)


def test_eval_keys_with_one_slash_are_an_eval_split(tmp_path: Path) -> None:
    """qa2c-fair logs its greedy evaluation as ``eval/return_mean``: it must reach the report."""
    for seed, ret in enumerate([480.0, 500.0]):
        final = {"step": 100, "eval/return_mean": ret, "charts/episodic_return": 9.0}
        _write_run(tmp_path, "qa2c-fair", "Q2Q", seed, [{"step": 50}], final)
    greedy = eval_tables(load_runs(tmp_path))["qa2c-fair"]
    assert set(greedy) == {"eval"} and set(greedy["eval"]["Q2Q"]) == {"return_mean"}
    assert greedy["eval"]["Q2Q"]["return_mean"].mean == pytest.approx(490.0)
