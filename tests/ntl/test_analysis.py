"""ntl.experiments.analysis on hand-made run folders."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from ntl.experiments.analysis import (
    bootstrap_ci,
    first_step_reaching,
    format_report,
    load_curves,
    main,
    paired_difference,
    plot_curves,
)

M = "eval/heldout/accuracy"
TOY_M = "eval/train/mae"
"""A metric of the toy experiment (tests/repro/toy_experiments.py), logged at every step."""


def _toy_runs(out: Path, seeds: str, *sets: str, config: str = "small") -> Path:
    """Real run folders, written by repro's runner for its toy experiment; -> ROOT = out/toy."""
    from repro.cli import main as repro_main
    from tests.repro.toy_experiments import register

    register()
    argv = ["run", "toy", "--config", config, "--seeds", seeds, "--out", str(out)]
    for s in sets:
        argv += ["--set", s]
    flags = ["--workers", "1", "--threads", "1", "--no-progress", "--no-tensorboard"]
    assert repro_main([*argv, *flags]) in (0, 1)  # 1: a run failed on purpose (fail_at_step)
    return out / "toy"


def _write(
    root: Path, config: str, seed: int, rows: list[dict[str, float]], finished: bool = True
) -> None:
    d = root / config / f"seed-{seed}"
    d.mkdir(parents=True)
    (d / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if finished:  # as repro's runner ends a run
        (d / "summary.json").write_text(json.dumps({"status": "finished"}))


@pytest.fixture
def root(tmp_path: Path) -> Path:
    # ce reaches 0.5 at step 200 on every seed; ntl is +0.1 better on seeds 0-2 at the end.
    for seed, end in enumerate([0.6, 0.7, 0.8]):
        _write(
            tmp_path,
            "ce",
            seed,
            [
                {"step": 50, "losses/train": 2.0},
                {"step": 100, M: 0.1},
                {"step": 200, M: 0.5},
                {"step": 300, M: end},
            ],
        )
        _write(
            tmp_path,
            "ntl-was",
            seed,
            [
                {"step": 100, M: 0.5},
                {"step": 200, M: 0.6},
                {"step": 300, M: end + 0.1},
            ],
        )
    _write(tmp_path, "ntl-was", 3, [{"step": 100, M: 0.9}], finished=False)  # unpaired
    (tmp_path / "ce" / "seed-2" / "metrics.jsonl").open("a").write('{"step": 400, "eval')  # torn
    return tmp_path


def test_load_curves(root: Path) -> None:
    curves = load_curves(root, M)
    assert sorted(curves) == ["ce", "ntl-was"]
    assert curves["ce"][1] == {100: 0.1, 200: 0.5, 300: 0.7}
    assert curves["ntl-was"][3] == {100: 0.9}
    with pytest.raises(FileNotFoundError, match="not a directory"):
        load_curves(root / "nope", M)


def test_bootstrap_ci_hand_cases() -> None:
    est = bootstrap_ci([0.3, 0.3, 0.3])
    assert (est.mean, est.lo, est.hi, est.n) == (
        pytest.approx(0.3),
        pytest.approx(0.3),
        pytest.approx(0.3),
        3,
    )
    est = bootstrap_ci([0.0, 1.0], n_boot=20_000)
    # resamples of two values: means 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4
    assert est.mean == 0.5 and est.lo == 0.0 and est.hi == 1.0
    est = bootstrap_ci(list(np.linspace(0, 1, 50)))
    assert est.lo < 0.5 < est.hi and est.hi - est.lo < 0.3
    assert bootstrap_ci([]).n == 0 and math.isnan(bootstrap_ci([]).mean)
    assert str(bootstrap_ci([0.123456, 0.123456])) == "0.123 [0.123, 0.123] (n=2)"


def test_paired_difference_uses_common_seeds(root: Path) -> None:
    curves = load_curves(root, M)
    end = paired_difference(curves, "ce", "ntl-was")
    # seed 3 of ntl-was has no ce partner: left out; every pair differs by exactly +0.1
    assert end.n == 3 and end.mean == pytest.approx(0.1)
    assert end.lo == pytest.approx(0.1) and end.hi == pytest.approx(0.1)
    at100 = paired_difference(curves, "ce", "ntl-was", step=100)
    assert at100.mean == pytest.approx(0.4) and at100.n == 3


def test_first_step_reaching() -> None:
    assert first_step_reaching({100: 0.1, 200: 0.5, 300: 0.4}, 0.5) == 200
    assert first_step_reaching({100: 0.1}, 0.5) is None
    assert first_step_reaching({100: 3.0, 200: 0.9}, 1.0, higher_is_better=False) == 200


def test_report_and_plot(root: Path, tmp_path: Path) -> None:
    curves = load_curves(root, M)
    text = format_report(curves, M, base="ce", budgets=[200], threshold=0.5)
    # "end" is step 300; ntl-was's seed 3 stopped at step 100 and is left out there
    assert "| ntl-was | 0.8 [0.7, 0.9] (n=3) |" in text
    assert "| ce | 0.7 [0.6, 0.8] (n=3) | 0.5 [0.5, 0.5] (n=3) |" in text
    assert "| ntl-was | 0.1 [0.1, 0.1] (n=3) | 0.1 [0.1, 0.1] (n=3) |" in text
    assert "| ce | 200 | 200, 200, 200 |" in text
    assert "| ntl-was | 100 | 100, 100, 100 |" in text  # seed 3 is unfinished
    png = plot_curves(curves, M, tmp_path / "plot" / "curves.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_one_seed_has_no_confidence_interval(root: Path) -> None:
    """One seed gave the "CI" [x, x] (zero width, reads as certainty), in the tables and as a
    paired difference over one common seed; now the ends are NaN and the table says so."""
    est = bootstrap_ci([0.7])
    assert est.mean == 0.7 and math.isnan(est.lo) and math.isnan(est.hi) and est.n == 1
    assert str(est) == "0.7 (no CI: n=1)"
    curves = load_curves(root, M)
    one = paired_difference({c: {0: curves[c][0]} for c in curves}, "ce", "ntl-was")
    assert one.n == 1 and math.isnan(one.lo)
    text = format_report({c: {0: curves[c][0]} for c in curves}, M, base="ce")
    assert "| ntl-was | 0.7 (no CI: n=1) |" in text  # the end, and the paired difference:
    assert "| ntl-was | 0.1 (no CI: n=1) |" in text


def test_a_bad_line_inside_a_log_is_an_error_not_skipped(root: Path) -> None:
    """Every unparsable line was skipped, not only a torn last one, and a repeated step
    replaced the first value: rows vanished from the analysis without a word."""
    log = root / "ce" / "seed-1" / "metrics.jsonl"
    good = log.read_text()
    log.write_text(good.replace('{"step": 200', 'garbage\n{"step": 200'))
    with pytest.raises(ValueError, match=r"seed-1/metrics.jsonl: line 3 is not a metric row"):
        load_curves(root, M)
    log.write_text(good + json.dumps({"step": 300, M: 0.0}) + "\n")
    with pytest.raises(ValueError, match="line 5 has step 300 after step 300"):
        load_curves(root, M)


def test_seeds_of_different_configs_in_one_folder_are_refused(root: Path) -> None:
    """ce's seeds 0-1 run with max_steps=300 and seed 2 with 1000 (``--set`` into one
    ``--out``) were averaged as one config's seeds; now it is an error naming what differs."""
    for seed, steps in enumerate([300, 300, 1000]):
        config = {"seed": seed, "max_steps": steps, "lr": 0.001}
        (root / "ce" / f"seed-{seed}" / "config.json").write_text(json.dumps(config))
    with pytest.raises(
        ValueError,
        match=r"ce holds runs of different configs "
        r"\(seed-0: max_steps=300; seed-2: max_steps=1000\)",
    ):
        load_curves(root, M)
    (root / "ce" / "seed-2" / "config.json").write_text(
        json.dumps({"seed": 2, "max_steps": 300, "lr": 0.001})
    )
    assert sorted(load_curves(root, M)["ce"]) == [0, 1, 2]


def test_cli_names_a_base_or_config_that_has_no_runs(
    root: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """``--base CE`` (a typo) printed the tables without the paired differences, and
    ``--configs ce,ntl-wass`` silently showed ce alone; both are now usage errors."""
    for argv in ([str(root), "--base", "CE"], [str(root), "--configs", "ce,ntl-wass"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert "configs found: ce, ntl-was" in capsys.readouterr().err
    main([str(root), "--configs", "ntl-was"])  # no base wanted: no paired differences
    assert "| ntl-was |" in capsys.readouterr().out


def test_a_seed_folder_not_named_as_the_runner_names_it_is_an_error(tmp_path: Path) -> None:
    """``seed-01`` (an old copy of seed-1) was read as seed 1 too, and replaced seed-1's curve
    without a word (the last folder read won); ``1`` next to ``seed-1`` did the same."""
    root = _toy_runs(tmp_path, "0-1", "total_steps=4")
    assert sorted(load_curves(root, TOY_M)["small"]) == [0, 1]
    copy = root / "small" / "seed-01"
    shutil.copytree(root / "small" / "seed-1", copy)
    with pytest.raises(ValueError, match=r"small/seed-01: not a run folder name the runner"):
        load_curves(root, TOY_M)
    copy.rename(root / "small" / "1")
    with pytest.raises(ValueError, match=r"small/1 and .*small/seed-1 are both seed 1 of small"):
        load_curves(root, TOY_M)


def test_unfinished_seeds_are_left_out_and_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """ "end" was the last step any run reached: fast-lr's two seeds, which crashed at step 5 of
    6 after logging step 4, were compared at "end" (step 4) with small's finished seeds, with
    nothing said. Runs whose summary.json does not say finished are now left out, named, and
    the report says which step "end" is."""
    _toy_runs(tmp_path, "0-1", "total_steps=4")
    root = _toy_runs(tmp_path, "0-1", "total_steps=6", "fail_at_step=5", config="fast-lr")
    assert {s: max(c) for s, c in load_curves(root, TOY_M)["fast-lr"].items()} == {0: 4, 1: 4}
    capsys.readouterr()
    main([str(root), "--metric", TOY_M, "--base", "small"])
    out = capsys.readouterr().out
    assert out.startswith(
        "Left out, not finished (summary.json): "
        "fast-lr seed 0 (status failed); fast-lr seed 1 (status failed).\n"
    )
    assert "end = step 4, the last step any run reached." in out
    assert re.search(r"\| small \| [\d.]+ \[[\d.]+, [\d.]+\] \(n=2\) \|", out)
    assert "| fast-lr |" not in out and "Paired" not in out
    (root / "small" / "seed-1" / "summary.json").unlink()  # as a killed run leaves it
    main([str(root), "--metric", TOY_M, "--base", "small"])
    out = capsys.readouterr().out
    assert "small seed 1 (no summary.json: still running, or killed)." in out
    assert "(no CI: n=1) |" in out
    main([str(root), "--metric", TOY_M, "--configs", "small"])  # names only configs asked for
    out = capsys.readouterr().out
    assert "small seed 1 (no summary.json" in out and "fast-lr" not in out
    with pytest.raises(SystemExit):  # only unfinished runs of the config asked for
        main([str(root), "--metric", TOY_M, "--configs", "fast-lr"])
    assert "no finished runs of config 'fast-lr'" in capsys.readouterr().err
