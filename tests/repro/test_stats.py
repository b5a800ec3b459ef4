"""repro.stats against the reference library, rliable (point estimates exactly; bootstrap
intervals within Monte-Carlo error: both are percentile intervals of the same resampling
scheme, drawn with different random streams)."""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
import pytest
from scipy import stats as sps

from repro.stats import (
    iqm,
    iqm_estimate,
    performance_profile,
    probability_of_improvement,
    probability_of_improvement_estimate,
)


def _import_rliable() -> tuple[Any, Any]:
    """rliable's bootstrap comes from ``arch``; arch 7.2 calls pandas' ``deprecate_kwarg`` with the
    signature of pandas < 3 (no warning class first) when it is imported. Pass pandas 3 the
    warning class it wants; the patch changes nothing for pandas' own calls (class first)."""
    import pandas.util._decorators as pd_decorators

    original = pd_decorators.deprecate_kwarg

    def compatible(*args: Any, **kwargs: Any) -> Any:
        if args and isinstance(args[0], str):
            return original(FutureWarning, *args, **kwargs)
        return original(*args, **kwargs)

    pd_decorators.deprecate_kwarg = compatible  # type: ignore[assignment]
    try:
        library = importlib.import_module("rliable.library")
    finally:
        pd_decorators.deprecate_kwarg = original
    return library, importlib.import_module("rliable.metrics")


pytest.importorskip("rliable")
rly_lib, rly_metrics = _import_rliable()

REPS = 4000


def _scores(seed: int, runs: int, tasks: int, shift: float = 0.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    heavy = rng.standard_t(3, size=(runs, tasks))  # heavy tails: where IQM and mean differ
    return np.round(10 * heavy + 50 + shift + 5 * np.arange(tasks), 1)  # ties after rounding


@pytest.mark.parametrize(("runs", "tasks"), [(1, 1), (4, 1), (5, 3), (10, 2), (7, 4)])
def test_iqm_equals_rliable_and_trimmed_mean(runs: int, tasks: int) -> None:
    x = _scores(runs * 10 + tasks, runs, tasks)
    assert iqm(x) == pytest.approx(rly_metrics.aggregate_iqm(x), rel=1e-12)
    assert iqm(x) == pytest.approx(sps.trim_mean(x, 0.25, axis=None), rel=1e-12)


def test_iqm_interval_matches_rliable_stratified_bootstrap() -> None:
    x = _scores(3, 10, 3)
    np.random.seed(0)  # rliable draws from numpy's global generator
    points, cis = rly_lib.get_interval_estimates(
        {"a": x}, lambda s: np.array([rly_metrics.aggregate_iqm(s)]), reps=REPS
    )
    ours = iqm_estimate(x, reps=REPS, seed=1)
    assert ours.value == pytest.approx(points["a"][0])
    (lo,), (hi,) = cis["a"]
    width = hi - lo
    assert width > 0 and ours.low <= ours.value <= ours.high
    assert abs(ours.low - lo) < 0.1 * width and abs(ours.high - hi) < 0.1 * width


def test_performance_profile_matches_rliable() -> None:
    x = _scores(4, 8, 2)
    taus = np.linspace(x.min() - 1, x.max() + 1, 25)
    np.random.seed(0)
    profiles, cis = rly_lib.create_performance_profile({"a": x}, taus, reps=REPS)
    prof, low, high = performance_profile(x, taus, reps=REPS, seed=2)
    np.testing.assert_allclose(prof, profiles["a"])
    # a fraction of 16 scores: the interval ends sit on multiples of 1/16; allow one step
    assert np.max(np.abs(low - cis["a"][0])) <= 1 / 16 + 1e-9
    assert np.max(np.abs(high - cis["a"][1])) <= 1 / 16 + 1e-9
    assert prof[0] == 1.0 and prof[-1] == 0.0


def test_probability_of_improvement_matches_rliable() -> None:
    x, y = _scores(5, 9, 2, shift=8.0), _scores(6, 7, 2)
    assert probability_of_improvement(x, y) == pytest.approx(
        rly_metrics.probability_of_improvement(x, y), rel=1e-12
    )
    assert probability_of_improvement(x, x) == pytest.approx(0.5)  # ties count one half
    np.random.seed(0)
    points, cis = rly_lib.get_interval_estimates(
        {"x,y": [x, y]},
        lambda a, b: np.array([rly_metrics.probability_of_improvement(a, b)]),
        reps=REPS // 2,  # rliable loops over replicates in Python: the slow side
    )
    ours = probability_of_improvement_estimate(x, y, reps=REPS, seed=3)
    assert ours.value == pytest.approx(points["x,y"][0])
    (lo,), (hi,) = cis["x,y"]
    assert abs(ours.low - lo) < 0.1 * (hi - lo) and abs(ours.high - hi) < 0.1 * (hi - lo)


def test_bad_scores_are_refused() -> None:
    with pytest.raises(ValueError, match="NaN"):
        iqm_estimate(np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match="runs, tasks"):
        iqm_estimate(np.zeros((0, 2)))
    with pytest.raises(ValueError, match="same tasks"):
        probability_of_improvement(np.zeros((3, 2)), np.zeros((3, 1)))
