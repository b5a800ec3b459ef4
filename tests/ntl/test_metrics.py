"""ntl.metrics.number_metrics on hand-computed cases."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ntl.metrics import number_metrics, parse_number


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("3.5", Fraction(7, 2)),
        ("3.50", Fraction(7, 2)),
        (" -12 ", Fraction(-12)),
        ("+4", Fraction(4)),
        (".5", Fraction(1, 2)),
        ("8/91", Fraction(8, 91)),
        ("-16/182", Fraction(-8, 91)),
        ("0", Fraction(0)),
    ],
)
def test_parse_number(text: str, value: Fraction) -> None:
    assert parse_number(text) == value


@pytest.mark.parametrize("text", ["", "True", "1e5", "3, 5", "1/0", "--1", "1.2.3", "inf", "x"])
def test_parse_number_rejects(text: str) -> None:
    assert parse_number(text) is None


def test_hand_case() -> None:
    preds = ["3.50", "8/91", "x", "10", "-2"]
    targets = ["3.5", "16/182", "4", "12", "1"]
    m = number_metrics(preds, targets)
    assert m["accuracy"] == pytest.approx(2 / 5)
    assert m["invalid_rate"] == pytest.approx(1 / 5)
    # valid errors: 0, 0, 2, 3 (the invalid "x" is excluded)
    assert m["mae"] == pytest.approx(5 / 4)
    assert m["rmse"] == pytest.approx(math.sqrt(13 / 4))
    assert m["median_ae"] == pytest.approx(1.0)
    ys = [3.5, 8 / 91, 12.0, 1.0]
    mean = sum(ys) / 4
    ss_tot = sum((y - mean) ** 2 for y in ys)
    assert m["r2"] == pytest.approx(1 - 13 / ss_tot)
    # characters equal at the same position / target characters:
    # "3.50"|"3.5": 3/3, "8/91"|"16/182": 1/6 (only the 4th characters "1" agree),
    # "x"|"4": 0/1, "10"|"12": 1/2, "-2"|"1": 0/1
    assert m["token_accuracy"] == pytest.approx((3 + 1 + 0 + 1 + 0) / (3 + 6 + 1 + 2 + 1))
    assert m["sequence_accuracy"] == 0.0
    assert m["count"] == 5.0


def test_all_invalid_gives_nan_errors() -> None:
    m = number_metrics(["a", "b"], ["1", "2"])
    assert m["accuracy"] == 0.0 and m["invalid_rate"] == 1.0
    assert all(math.isnan(m[k]) for k in ("mae", "rmse", "median_ae", "r2"))


def test_constant_targets_r2_nan_but_errors_defined() -> None:
    m = number_metrics(["1", "3"], ["2", "2"])
    assert math.isnan(m["r2"])
    assert m["mae"] == 1.0 and m["accuracy"] == 0.0


@given(st.lists(st.integers(-(10**12), 10**12), min_size=2, max_size=20))
def test_perfect_predictions(values: list[int]) -> None:
    texts = [str(v) for v in values]
    m = number_metrics(texts, texts)
    assert m["accuracy"] == 1.0 and m["mae"] == 0.0 and m["invalid_rate"] == 0.0
    assert m["token_accuracy"] == 1.0 and m["sequence_accuracy"] == 1.0
    assert math.isnan(m["r2"]) or m["r2"] == 1.0


@pytest.mark.parametrize(
    ("preds", "targets", "exc", "match"),
    [
        (["1"], ["1", "2"], ValueError, "same length"),
        ([], [], ValueError, "must not be empty"),
        (["1"], ["yes"], ValueError, r"targets\[0\]"),
        ([1], ["1"], TypeError, r"predictions\[0\]"),
        ("1", ["1"], TypeError, "predictions must be a list"),
    ],
)
def test_bad_input(preds: object, targets: object, exc: type, match: str) -> None:
    with pytest.raises(exc, match=match):
        number_metrics(preds, targets)  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["٣", "۱۲", "３", "1٣", "٣/4", "𝟕"])
def test_parse_number_rejects_non_ascii_digits(text: str) -> None:
    # ntl.vocab never makes "٣" a number token; the metrics must not parse it as 3 either.
    assert parse_number(text) is None


def test_whitespace_agrees_between_accuracy_and_token_accuracy() -> None:
    m = number_metrics([" 7", "12 ", " 3.5"], ["7", " 12", "3.5"])
    assert m["accuracy"] == 1.0
    assert m["token_accuracy"] == 1.0
    assert m["sequence_accuracy"] == 1.0


def test_robust_errors_hand_case() -> None:
    preds = ["100", "99", "1000000000000000000000000000000", "0", "x", "101", "5"]
    targets = ["100", "100", "100", "0", "3", "102", "50"]
    m = number_metrics(preds, targets)
    # valid |errors|: 0, 1, 1e30 - 100, 0, 1, 45 (the invalid "x" is left out)
    logs = [0.0, math.log10(2), 30.0, 0.0, math.log10(2), math.log10(46)]
    assert m["log_ae"] == pytest.approx(sum(logs) / 6, rel=1e-12)
    assert m["median_ae"] == pytest.approx(1.0)
    # within 1 % of |y|: 100, 99, 0 (exact), 101 (1/102 < 1 %) -> 4 of all 7
    assert m["within_1pct"] == pytest.approx(4 / 7)
    # same length and <= 1 character off: "100", "0", "101"|"102" ("99" is shorter) -> 3 of 7
    assert m["within_one_digit"] == pytest.approx(3 / 7)
    assert m["mae"] > 1e28  # the paper's MAE stays in the JSON: a runaway dominates it


def test_log_ae_of_huge_exact_error_does_not_overflow() -> None:
    m = number_metrics(["1" + "0" * 400], ["0"])
    assert m["log_ae"] == pytest.approx(400.0)
