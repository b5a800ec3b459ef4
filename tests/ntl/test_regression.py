"""ntl.experiments.regression on friedman1: the task generator, the scikit-learn baselines, the
named configs and a few training steps of each method (issue 11, point 6)."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest

from ntl.data.tokenizer import digit_tokenizer
from ntl.experiments import regression
from ntl.experiments.regression import RegressionConfig, friedman1_table, make_split


def test_friedman1_table_is_deterministic_and_shows_what_it_renders() -> None:
    from sklearn.datasets import make_friedman1

    a = friedman1_table(300, n_features=5, seed=3, feature_decimals=2, target_decimals=1)
    b = friedman1_table(300, n_features=5, seed=3, feature_decimals=2, target_decimals=1)
    assert a.texts == b.texts and a.targets == b.targets
    assert friedman1_table(300, seed=4).texts != a.texts
    # the generator's own rows, rounded as rendered
    x, y = make_friedman1(n_samples=300, n_features=5, noise=0.0, random_state=3)
    np.testing.assert_allclose(a.x, np.round(x, 2), atol=1e-12)
    np.testing.assert_allclose(a.y, np.round(y, 1), atol=1e-12)
    # fixed width: five "d.dd" fields; the target has one decimal
    assert all(len(t) == 5 * 4 + 4 for t in a.texts)
    assert a.texts[0] == " ".join(f"{v:.2f}" for v in x[0])
    assert all(t.count(".") == 1 and len(t.split(".")[1]) == 1 for t in a.targets)
    assert float(a.targets[0]) == pytest.approx(y[0], abs=0.05)
    tok = digit_tokenizer()
    ids = tok(a.texts + a.targets)["input_ids"]
    assert all(tok.unk_token_id not in row for row in ids)


def test_friedman1_table_options() -> None:
    t = friedman1_table(50, n_features=10, noise=1.0, seed=0, feature_decimals=3, target_decimals=0)
    assert t.x.shape == (50, 10) and len(t.texts[0].split()) == 10
    assert all(len(v) == 5 for v in t.texts[0].split())  # "0.123"
    assert all("." not in s for s in t.targets)


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"n_rows": 5}, "n_rows"),
        ({"n_features": 4}, "n_features"),
        ({"noise": -1.0}, "noise"),
        ({"feature_decimals": 7}, "feature_decimals"),
        ({"target_decimals": -1}, "target_decimals"),
    ],
)
def test_friedman1_table_rejects_bad_arguments(kw: dict, match: str) -> None:
    args = {"n_rows": 20, **kw}
    with pytest.raises(ValueError, match=match):
        friedman1_table(**args)


def test_split_is_a_seeded_partition() -> None:
    cfg = RegressionConfig(dataset="friedman1", n_rows=200, test_fraction=0.25, seed=1)
    train, test = make_split(cfg)
    assert (len(train.texts), len(test.texts)) == (150, 50)
    assert not set(train.texts) & set(test.texts)
    again = make_split(cfg)
    assert again[1].texts == test.texts and again[0].targets == train.targets
    other = make_split(dataclasses.replace(cfg, seed=2))[1]
    assert other.texts != test.texts


def test_sklearn_baselines_are_deterministic_and_sensible() -> None:
    cfg = RegressionConfig(dataset="friedman1", n_rows=1000, seed=0)
    train, test = make_split(cfg)
    first = regression.sklearn_baselines(train, test, seed=0)
    assert first == regression.sklearn_baselines(train, test, seed=0)
    # friedman1 is nonlinear: boosting fits it well, a linear model only in part
    assert 0.85 < first["baseline/gbr_r2"] <= 1.0
    assert 0.5 < first["baseline/linear_r2"] < first["baseline/gbr_r2"]
    # shuffled targets leave nothing to learn
    rng = np.random.default_rng(0)
    shuffled = dataclasses.replace(train, y=rng.permutation(train.y))
    assert regression.sklearn_baselines(shuffled, test, seed=0)["baseline/gbr_r2"] < 0.1


def test_friedman1_configs_differ_in_the_method_only() -> None:
    names = ["f1-head", "f1-ce", "f1-ntl-was", "f1-ntl-was-0.1", "f1-ntl-was-0.8", "f1-ntl-was-2.0"]
    configs = [regression.CONFIGS[n] for n in names]
    weights = [c.ntl_weight for c in configs[2:]]
    assert weights == [0.3, 0.1, 0.8, 2.0]
    assert [c.method for c in configs[:3]] == ["regression-head", "ce", "ntl-was"]
    base = dataclasses.asdict(configs[0])
    for cfg in configs:
        regression.PROTOCOL["validate"](cfg)
        assert cfg.dataset == "friedman1" and cfg.num_threads == 1
        diff = {k for k, v in dataclasses.asdict(cfg).items() if base[k] != v}
        assert diff <= {"method", "ntl_weight"}


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"dataset": "boston"}, "dataset"),
        ({"method": "xval"}, "method"),
        ({"ntl_weight": -0.1}, "ntl_weight"),
        ({"dataset": "friedman1", "n_features": 3}, "n_features"),
        ({"dataset": "friedman1", "target_decimals": 9}, "target_decimals"),
    ],
)
def test_config_validation(tmp_path: Path, kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        next(regression.run(RegressionConfig(**kw), tmp_path))
    assert not (tmp_path / "checkpoint.pt").exists()


@pytest.mark.parametrize("method", ["ce", "ntl-was", "regression-head"])
def test_friedman1_methods_run_and_report_the_baselines(tmp_path: Path, method: str) -> None:
    cfg = dataclasses.replace(
        regression.CONFIGS["f1-head"],
        method=method,
        ntl_weight=0.3,
        n_rows=120,
        d_model=16,
        d_ff=32,
        num_layers=1,
        num_heads=2,
        max_steps=4,
        warmup_steps=1,
        log_every=2,
        eval_every=4,
        checkpoint_every=4,
        batch_size=8,
    )
    rows = list(regression.run(cfg, tmp_path))
    assert [r["step"] for r in rows] == [2, 4]
    last = rows[-1]
    assert math.isfinite(last["losses/train"])
    train, test = make_split(cfg)
    assert last["regression/count"] == len(test.texts) == 24
    expected = regression.sklearn_baselines(train, test, cfg.seed)
    for key, value in expected.items():
        assert last[key] == value
    if math.isfinite(last["regression/r2"]):
        ratio = last["regression/r2"] / expected["baseline/gbr_r2"]
        assert last["regression/r2_over_gbr"] == pytest.approx(ratio)
    for key in ("regression/median_ae", "regression/log_ae", "regression/within_1pct"):
        assert key in last
    if method == "regression-head":
        assert last["regression/invalid_rate"] == 0.0
        assert math.isfinite(last["regression/r2"])
