"""Regression tests for silent wrong answers found in review (issue 16): each failed before its fix."""

from __future__ import annotations

import pytest

from repro.overrides import apply_overrides


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
