"""Training loop: rows, population ≡ individual, determinism, checkpoint/resume."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from qa2c.a2c import A2CConfig
from qa2c.agents import build_agent
from qa2c.train import load_checkpoint, train, train_population

F64 = torch.float64
IMPROVED = A2CConfig(
    n_envs=2,
    n_steps=3,
    gae_lambda=0.9,
    ent_coef=0.01,
    normalize_advantage=True,
    max_grad_norm=0.5,
    lr_actor=3e-3,
    lr_critic=3e-3,
    discount_actor=False,
)


def _strip(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != "wall_time"}


def _rows(
    name: str, seed: int, steps: int, config: A2CConfig | None = None, **kw: Any
) -> list[dict[str, Any]]:
    agent = build_agent(name, seed=seed, dtype=F64)
    return [_strip(r) for r in train(agent, steps, seed=seed, config=config, **kw)]


def _assert_rows_equal(a: list[dict[str, Any]], b: list[dict[str, Any]], rtol: float = 0.0) -> None:
    assert len(a) == len(b) > 0
    for ra, rb in zip(a, b):
        assert ra.keys() == rb.keys()
        for k in ra:
            if isinstance(ra[k], float) and rtol:
                assert ra[k] == pytest.approx(rb[k], rel=rtol, abs=1e-12) or (
                    math.isnan(ra[k]) and math.isnan(rb[k])
                ), k
            else:
                assert ra[k] == rb[k] or (math.isnan(ra[k]) and math.isnan(rb[k])), (
                    k,
                    ra[k],
                    rb[k],
                )


def test_rows_follow_protocol() -> None:
    rows = _rows("A2C", 0, 600)
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps)) and steps[-1] <= 600
    assert [r["episode"] for r in rows] == list(range(1, len(rows) + 1))
    assert all(r["charts/episodic_return"] == r["charts/episodic_length"] for r in rows)
    assert steps[0] == rows[0]["charts/episodic_length"]
    assert all(
        isinstance(r["losses/actor"], float) and math.isfinite(r["losses/critic"]) for r in rows
    )
    # step = cumulative episode lengths with one environment
    cum = 0
    for r in rows:
        cum += r["charts/episodic_length"]
        assert r["step"] == cum


@pytest.mark.parametrize("config", [None, IMPROVED], ids=["paper", "improved"])
def test_population_equals_individual(config: A2CConfig | None) -> None:
    seeds = [0, 3, 7]
    agents = [build_agent("A2C", seed=s, dtype=F64) for s in seeds]
    pop: dict[int, list[dict[str, Any]]] = {i: [] for i in range(3)}
    for i, row in train_population(agents, seeds, 500, config):
        pop[i].append(_strip(row))
    # the paper's algorithm: bitwise (per-agent slices of the same kernels); the improved one
    # has reductions over (T, E) whose summation order may depend on A: float tolerance
    rtol = 0.0 if config is None else 1e-9
    for i, s in enumerate(seeds):
        _assert_rows_equal(pop[i], _rows("A2C", s, 500, config), rtol=rtol)


def test_deterministic_and_seed_dependent() -> None:
    a, b = _rows("A2C5", 1, 500), _rows("A2C5", 1, 500)
    _assert_rows_equal(a, b)
    c = _rows("A2C5", 2, 500)
    assert [r["charts/episodic_length"] for r in a] != [r["charts/episodic_length"] for r in c]


@pytest.mark.parametrize("config", [None, IMPROVED], ids=["paper", "improved"])
def test_resume_gives_identical_curve(tmp_path: Path, config: A2CConfig | None) -> None:
    full = _rows("A2C", 4, 800, config)
    ckpt = tmp_path / "checkpoint.pt"
    agent = build_agent("A2C", seed=4, dtype=F64)
    first = []
    for row in train(agent, 800, seed=4, config=config, checkpoint_path=ckpt, checkpoint_every=200):
        first.append(_strip(row))
        if row["step"] > 500:
            break  # "killed" mid-run
    saved = load_checkpoint(ckpt)
    done_steps = saved["vec_steps"] * (config.n_envs if config else 1)
    assert 200 <= done_steps <= 500
    resumed = [
        _strip(r)
        for r in train(
            agent, 800, seed=4, config=config, checkpoint_path=ckpt, checkpoint_every=200
        )
    ]
    assert resumed and resumed[0]["step"] > done_steps
    tail = [r for r in full if r["step"] > done_steps]
    _assert_rows_equal(resumed, tail)
    # nothing left to do after the end
    assert list(train(agent, 800, seed=4, config=config, checkpoint_path=ckpt)) == []


def test_population_checkpoint_resumes_each_member_alone(tmp_path: Path) -> None:
    seeds = [1, 2]
    agents = [build_agent("A2C", seed=s, dtype=F64) for s in seeds]
    paths = [tmp_path / f"{s}.pt" for s in seeds]
    for _ in train_population(
        agents, seeds, 400, None, checkpoint_paths=paths, checkpoint_every=100
    ):
        pass
    rows = _rows("A2C", 2, 800)
    resumed = [_strip(r) for r in train(agents[1], 800, seed=2, checkpoint_path=paths[1])]
    _assert_rows_equal(resumed, [r for r in rows if r["step"] > 400])


def test_rows_without_an_update_carry_no_losses_rather_than_nan() -> None:
    """With several environments, several episodes can end between two updates: the first row
    after an update carries the mean losses since the agent's previous row, the others carry no
    loss keys. Before: they carried NaN, the value of a diverged loss; the report's loss curves
    of the improved configs (16 environments, about 3 rows in 4 NaN) dropped every grid point
    where a seed's last row was NaN and drew 5 of 200 points."""
    cfg = A2CConfig(n_envs=4, n_steps=2, gae_lambda=0.9)
    rows = _rows("A2C", 0, 600, cfg)
    with_losses = [r for r in rows if "losses/actor" in r]
    assert 0 < len(with_losses) < len(rows)  # both kinds occur
    for r in rows:
        assert ("losses/actor" in r) == ("losses/critic" in r)
    assert all(math.isfinite(r["losses/actor"] + r["losses/critic"]) for r in with_losses)


def test_bad_input() -> None:
    agent = build_agent("A2C")
    with pytest.raises(ValueError, match="total_steps"):
        list(train(agent, 0))
    with pytest.raises(ValueError, match="one architecture"):
        list(train_population([agent, build_agent("A2C5")], [0, 1], 10))
    with pytest.raises(ValueError, match="distinct"):
        list(train_population([agent, agent], [0, 0], 10))


def test_resume_from_checkpoint_without_newer_config_fields(tmp_path: Path) -> None:
    """A checkpoint written before a config field existed resumes if the field has its default."""
    ckpt = tmp_path / "checkpoint.pt"
    agent = build_agent("A2C", seed=1, dtype=F64)
    for _ in train(agent, 200, seed=1, checkpoint_path=ckpt):
        pass
    state = load_checkpoint(ckpt)
    del state["config"]["lr_anneal_steps"]
    torch.save(state, ckpt)
    resumed = [_strip(r) for r in train(agent, 400, seed=1, checkpoint_path=ckpt)]
    assert resumed == [r for r in _rows("A2C", 1, 400) if r["step"] > state["vec_steps"]]


def test_checkpoint_of_another_environment_is_refused(tmp_path: Path) -> None:
    """A checkpoint names its environment and resumes only into that one (the JAX engine's does
    too). Before: a CartPole-v1 checkpoint resumed silently into CartPole-v0 (same physics and
    sizes, a 200-step time limit instead of 500) and the run went on in the other task."""
    ckpt = tmp_path / "checkpoint.pt"
    agent = build_agent("A2C", seed=1, dtype=F64)
    for _ in train(agent, 100, seed=1, checkpoint_path=ckpt):
        pass
    before = ckpt.read_bytes()
    with pytest.raises(ValueError, match="CartPole-v0"):
        list(train(agent, 300, seed=1, env_id="CartPole-v0", checkpoint_path=ckpt))
    assert ckpt.read_bytes() == before


def test_checkpoint_of_another_dtype_is_refused(tmp_path: Path) -> None:
    """Before: a float32 run's checkpoint resumed silently into float64 agents (its weights cast)
    and the run went on in the other precision."""
    ckpt = tmp_path / "checkpoint.pt"
    for _ in train(build_agent("A2C", seed=1), 100, seed=1, checkpoint_path=ckpt):
        pass
    with pytest.raises(ValueError, match="float32"):
        list(train(build_agent("A2C", seed=1, dtype=F64), 300, seed=1, checkpoint_path=ckpt))
