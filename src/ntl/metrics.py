"""Number-prediction metrics for generated answers (the paper's evaluation).

:func:`number_metrics` compares predicted answer strings with target strings:

- ``accuracy``: exact-number accuracy, numeric equality after parsing ("3.50" == "3.5",
  "-8/91" == "-16/182"); an unparseable prediction counts as wrong;
- ``mae``, ``rmse``, ``median_ae``, ``r2``: over the *valid* (parseable) predictions only;
  ``nan`` when there are none (``r2`` also when the valid targets have zero variance);
- ``invalid_rate``: the fraction of predictions that do not parse as a number;
- ``token_accuracy``: characters (= tokens of the digit tokenizer) equal at the same position,
  summed over examples and divided by the summed target length (greedy output, not teacher
  forced; a missing or extra character counts as wrong);
- ``sequence_accuracy``: exact string equality;
- ``count``: the number of examples.
"""

from __future__ import annotations

import math
import re
from fractions import Fraction

__all__ = ["number_metrics", "parse_number"]

_NUMBER = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)")
_FRACTION = re.compile(r"([+-]?\d+)/([+-]?\d+)")


def parse_number(text: str) -> Fraction | None:
    """The exact value of ``text`` (an integer, a decimal, or a fraction ``a/b``), else ``None``.

    Surrounding whitespace is ignored; anything else (words, lists, ``1e5``, ``b/0``) is ``None``.
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
    return sum(a == b for a, b in zip(pred, target))


def number_metrics(predictions: list[str], targets: list[str]) -> dict[str, float]:
    """Exact-number accuracy, error metrics and invalid rate of ``predictions`` vs ``targets``.

    Args:
        predictions: generated answers, one string per example.
        targets: the reference answers; each must parse as a number.

    Returns:
        ``{"accuracy", "mae", "rmse", "median_ae", "r2", "invalid_rate", "token_accuracy",
        "sequence_accuracy", "count"}`` as floats (see the module docstring).
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
    valid_targets: list[float] = []
    squared: list[float] = []
    for p, y in zip(predictions, target_values):
        value = parse_number(p)
        if value is None:
            continue
        correct += value == y
        diff = float(value - y)
        errors.append(abs(diff))
        squared.append(diff * diff)
        valid_targets.append(float(y))

    nan = float("nan")
    mae = rmse = median_ae = r2 = nan
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

    matched = sum(_token_matches(p, t) for p, t in zip(predictions, targets))
    total = sum(len(t) for t in targets)
    return {
        "accuracy": correct / n,
        "mae": mae,
        "rmse": rmse,
        "median_ae": median_ae,
        "r2": r2,
        "invalid_rate": (n - len(errors)) / n,
        "token_accuracy": matched / total if total else nan,
        "sequence_accuracy": sum(p.strip() == t.strip() for p, t in zip(predictions, targets)) / n,
        "count": float(n),
    }
