"""Command-line parsing, overrides and errors."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from repro.cli import _split_multi, main
from repro.overrides import apply_overrides, config_keys, parse_seeds
from tests.repro.toy_experiments import CONFIGS, ToyConfig


def test_list_shows_registered_experiments_and_configs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in ("ntl-arith", "ntl-regression", "qa2c-cartpole", "toy"):
        assert name in out
    assert "configs: small, fast-lr" in out
    assert "toy-missing" in out and "unavailable" in out
    assert main(["list", "toy"]) == 0
    out = capsys.readouterr().out
    assert "total_steps: int = 30  -- SGD steps; one metric row per step." in out
    assert "config small: (the defaults)" in out
    assert "config fast-lr: total_steps=20, lr=0.3" in out


def test_list_shows_nested_keys_with_docs_and_defaults(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "qa2c-cartpole"]) == 0
    out = capsys.readouterr().out
    assert "  agent.*  -- the agent: one of the paper's eight architectures" in out
    assert "  agent.n_layers: int = 2  -- circuit layers of the quantum heads" in out
    assert "  a2c.n_envs: int = 1  -- environments per agent" in out
    assert "config HA2Q: (the defaults)" in out
    assert "config A2C-improved: agent.name='A2C', agent.hidden=10, a2c.lr_actor=0.01," in out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["run", "nope"],
            "unknown experiment 'nope'; valid experiments: ntl-arith, ntl-regression",
        ),
        (["run", "toy-missing"], "experiment 'toy-missing' is not available: cannot import"),
        (
            ["run", "toy", "--config", "big"],
            "unknown config 'big' for toy; valid configs: small, fast-lr",
        ),
        (
            ["run", "toy", "--set", "lrr=1"],
            "unknown config key 'lrr' for ToyConfig; valid keys: batch,",
        ),
        (["run", "toy", "--set", "lr"], "--set expects key=value, got 'lr'"),
        (
            ["run", "toy", "--set", "total_steps=ten"],
            "--set total_steps='ten': cannot parse as int",
        ),
        (["run", "toy", "--set", "fast=maybe"], "--set fast='maybe': expected a bool"),
        (["run", "toy", "--set", "seed=3"], "choose seeds with --seeds"),
        (["run", "toy", "--seeds", "3-1"], "--seeds: cannot parse '3-1'"),
        (["run", "toy", "--seeds", "a"], "--seeds: cannot parse 'a'"),
        (["run", "toy", "--workers", "0"], "workers must be >= 1, got 0"),
        (["run", "toy", "--threads", "0"], "threads must be an int >= 1, got 0"),
    ],
)
def test_run_errors_name_the_bad_value(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*argv, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("repro: error: ") and message in err
    assert not any(tmp_path.iterdir())  # nothing touched


def test_unknown_option_exits_with_usage_error() -> None:
    with pytest.raises(SystemExit) as exc:
        main(["run", "toy", "--bogus"])
    assert exc.value.code == 2


def test_overrides_are_typed_and_do_not_mutate() -> None:
    base = CONFIGS["small"]
    before = dataclasses.asdict(base)
    cfg = apply_overrides(base, ["lr=0.5", "total_steps=7", "fast=true", "label=a b", "sleep-s=0"])
    assert cfg == dataclasses.replace(base, lr=0.5, total_steps=7, fast=True, label="a b")
    assert isinstance(cfg.total_steps, int) and isinstance(cfg.lr, float)
    assert dataclasses.asdict(base) == before and cfg is not base
    assert apply_overrides(base, ["fast=False"]).fast is False
    assert set(config_keys(ToyConfig)) >= {"seed", "lr", "total_steps", "fast", "label"}
    with pytest.raises(TypeError, match="dataclass instance"):
        apply_overrides(ToyConfig, [])


def test_seeds_and_multi_value_flags() -> None:
    assert parse_seeds("0-3") == [0, 1, 2, 3]
    assert parse_seeds("5,0,3") == [0, 3, 5]
    assert parse_seeds("0-2,7,1") == [0, 1, 2, 7]
    argv = ["run", "toy", "--config", "a", "b", "--set", "x=1", "y=2", "--seeds", "0-1"]
    assert _split_multi(argv) == [
        *("run", "toy", "--config", "a", "--config", "b"),
        *("--set", "x=1", "--set", "y=2", "--seeds", "0-1"),
    ]


def test_overrides_reach_nested_fields() -> None:
    """``--set`` on the real QA2C config: dotted keys reach the nested agent and algorithm."""
    from qa2c.experiments.cartpole import CONFIGS as QA2C

    base = QA2C["HQ2Q"]
    sets = ["a2c.n_envs=8", "a2c.discount_actor=false", "agent.n_layers=3", "total_steps=100"]
    cfg = apply_overrides(base, [*sets, "agent.obs_scale=1 1 0.5 0.5"])
    assert cfg.a2c == dataclasses.replace(base.a2c, n_envs=8, discount_actor=False)
    assert cfg.agent == dataclasses.replace(base.agent, n_layers=3, obs_scale=(1, 1, 0.5, 0.5))
    assert cfg.total_steps == 100 and base.a2c.n_envs == 1 and base.agent.n_layers == 2
    assert "agent.n_layers" in config_keys(type(base)) and "n_layers" not in config_keys(type(base))


@pytest.mark.parametrize(
    ("key", "message"),
    [
        (
            "a2c.n_env",
            "unknown config key 'a2c.n_env' for CartPoleConfig; valid keys: a2c.adam_eps",
        ),
        ("n_envs", "unknown config key 'n_envs' for CartPoleConfig; did you mean a2c.n_envs?"),
        (
            "agent",
            "unknown config key 'agent' for CartPoleConfig; it is a group of keys: agent.name",
        ),
    ],
)
def test_unknown_nested_key_is_named(
    key: str, message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["run", "qa2c-cartpole", "--set", f"{key}=2", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())  # nothing touched
