"""Number-prediction metrics for generated answers (the paper's evaluation).

:func:`number_metrics` compares predicted answer strings with target strings:

- ``accuracy``: exact-number accuracy, numeric equality after parsing ("3.50" == "3.5",
  "-8/91" == "-16/182"); an unparseable prediction counts as wrong;
- ``mae``, ``rmse``, ``median_ae``, ``r2``: over the *valid* (parseable) predictions only;
  ``nan`` when there are none (``r2`` also when the valid targets have zero variance);
- ``invalid_rate``: the fraction of predictions that do not parse as a number;
- robust errors, which a few runaway outputs ("1000000000000…") cannot dominate:
  ``log_ae`` = mean ``log10(1 + |ŷ − y|)`` over the valid predictions (``median_ae`` is robust
  too); ``within_1pct`` = share of *all* predictions with ``|ŷ − y| <= 0.01·|y|`` (exact when
  ``y = 0``); ``within_one_digit`` = share of all predictions with as many characters as the
  target and at most one character different (an invalid prediction counts as a miss);
- ``token_accuracy``: characters (= tokens of the digit tokenizer) equal at the same position,
  summed over examples and divided by the summed target length (greedy output, not teacher
  forced; a missing or extra character counts as wrong). Surrounding whitespace is stripped
  first, as for ``accuracy`` (``" 7"`` vs ``"7"`` is fully correct for both);
- ``sequence_accuracy``: exact string equality;
- ``count``: the number of examples.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

__all__ = ["number_metrics", "parse_number"]

# ASCII digits only (like ntl.vocab, which never treats "٣" or "３" as a number token).
_NUMBER = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)")
_FRACTION = re.compile(r"([+-]?[0-9]+)/([+-]?[0-9]+)")


def parse_number(text: str) -> Fraction | None:
    """The exact value of ``text`` (an integer, a decimal, or a fraction ``a/b``), else ``None``.

    Surrounding whitespace is ignored; anything else (words, lists, ``1e5``, ``b/0``, digits
    other than ASCII ``0-9`` such as ``"٣"``) is ``None``.
    """
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    s = text.strip()
    if _NUMBER.fullmatch(s):
        return Fraction(s)
    match = _FRACTION.fullmatch(s)
    if match:
        den = int(match.group(2))
        return None if den == 0 else Fraction(int(match.group(1)), den)
    return None


def _token_matches(pred: str, target: str) -> int:
    return sum(a == b for a, b in zip(pred.strip(), target.strip()))


def _within_one_digit(pred: str, target: str) -> bool:
    p, t = pred.strip(), target.strip()
    if parse_number(p) is None:
        return False
    return len(p) == len(t) and sum(a != b for a, b in zip(p, t)) <= 1


def _float(x: Fraction) -> float:
    """``float(x)``, or ±inf where the value exceeds the float range (runaway outputs)."""
    try:
        return float(x)
    except OverflowError:
        return math.inf if x > 0 else -math.inf


def _log10_1p(x: Fraction) -> float:
    """``log10(1 + x)`` for an exact ``x >= 0`` of any size (no float overflow)."""
    if x < 10**15:
        return math.log10(1.0 + float(x))
    return math.log10(x.numerator) - math.log10(x.denominator)  # 1 is negligible here


def number_metrics(predictions: list[str], targets: list[str]) -> dict[str, float]:
    """Exact-number accuracy, error metrics and invalid rate of ``predictions`` vs ``targets``.

    Args:
        predictions: generated answers, one string per example.
        targets: the reference answers; each must parse as a number.

    Returns:
        ``{"accuracy", "mae", "rmse", "median_ae", "r2", "log_ae", "within_1pct",
        "within_one_digit", "invalid_rate", "token_accuracy", "sequence_accuracy", "count"}``
        as floats (see the module docstring).
    """
    for name, seq in (("predictions", predictions), ("targets", targets)):
        if not isinstance(seq, list | tuple):
            raise TypeError(f"{name} must be a list of str, got {type(seq).__name__}")
        for i, item in enumerate(seq):
            if not isinstance(item, str):
                raise TypeError(f"{name}[{i}] must be a str, got {type(item).__name__}")
    if len(predictions) != len(targets):
        raise ValueError(
            f"predictions and targets must have the same length, got {len(predictions)} "
            f"and {len(targets)}"
        )
    if not targets:
        raise ValueError("predictions and targets must not be empty")
    target_values: list[Fraction] = []
    for i, t in enumerate(targets):
        value = parse_number(t)
        if value is None:
            raise ValueError(f"targets[{i}] = {t!r} is not a number")
        target_values.append(value)

    n = len(targets)
    correct = 0
    errors: list[float] = []  # |pred - target| over valid predictions
    log_errors: list[float] = []
    valid_targets: list[float] = []
    squared: list[float] = []
    close = 0
    for p, y in zip(predictions, target_values):
        value = parse_number(p)
        if value is None:
            continue
        correct += value == y
        exact_diff = abs(value - y)
        close += exact_diff <= abs(y) / 100
        log_errors.append(_log10_1p(exact_diff))
        diff = _float(value - y)
        errors.append(abs(diff))
        squared.append(diff * diff)
        valid_targets.append(float(y))

    nan = float("nan")
    mae = rmse = median_ae = r2 = log_ae = nan
    if errors:
        mae = math.fsum(errors) / len(errors)
        rmse = math.sqrt(math.fsum(squared) / len(squared))
        ordered = sorted(errors)
        mid = len(ordered) // 2
        median_ae = ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])
        mean_y = math.fsum(valid_targets) / len(valid_targets)
        ss_tot = math.fsum((y - mean_y) ** 2 for y in valid_targets)
        if ss_tot > 0:
            r2 = 1.0 - math.fsum(squared) / ss_tot
        log_ae = math.fsum(log_errors) / len(log_errors)

    matched = sum(_token_matches(p, t) for p, t in zip(predictions, targets))
    total = sum(len(t.strip()) for t in targets)
    return {
        "accuracy": correct / n,
        "mae": mae,
        "rmse": rmse,
        "median_ae": median_ae,
        "r2": r2,
        "log_ae": log_ae,
        "within_1pct": close / n,
        "within_one_digit": sum(_within_one_digit(p, t) for p, t in zip(predictions, targets)) / n,
        "invalid_rate": (n - len(errors)) / n,
        "token_accuracy": matched / total if total else nan,
        "sequence_accuracy": sum(p.strip() == t.strip() for p, t in zip(predictions, targets)) / n,
        "count": float(n),
    }
