"""The JAX engine through the experiment's switch: rows, populations, seeds, resume."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("gymnax")
pytest.importorskip("optax")

from qa2c.experiments.cartpole import CONFIGS, JAX_CHECKPOINT, make_agent, run, run_many

# tiny runs: HQ2C (a hybrid quantum actor, a classical critic), a few episodes per agent
_CFG = dataclasses.replace(
    CONFIGS["HQ2C"], total_steps=600, checkpoint_every=250, engine="jax", dtype="float64"
)


def _same(a: list[dict[str, Any]], b: list[dict[str, Any]]) -> None:
    """Identical episodes; losses equal up to the round-off of differently batched kernels."""
    assert [{k: v for k, v in r.items() if "loss" not in k} for r in a] == [
        {k: v for k, v in r.items() if "loss" not in k} for r in b
    ]
    for x, y in zip(a, b):
        assert ("losses/actor" in x) == ("losses/actor" in y)
        for k in ("losses/actor", "losses/critic"):
            if k in x:
                assert x[k] == pytest.approx(y[k], rel=1e-9, abs=1e-12, nan_ok=True)


def _strip(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in r.items() if k != "wall_time"} for r in rows]


def _rows(cfgs: list[Any], dirs: list[Path]) -> list[list[dict[str, Any]]]:
    out: list[list[dict[str, Any]]] = [[] for _ in cfgs]
    for i, row in run_many(cfgs, dirs):
        out[i].append(row)
    return [_strip(r) for r in out]


def test_rows_protocol_population_and_seeds(tmp_path: Path) -> None:
    cfgs = [dataclasses.replace(_CFG, seed=s) for s in (0, 1)]
    pop = _rows(cfgs, [tmp_path / "p0", tmp_path / "p1"])
    for rows in pop:
        assert rows, "no episode finished"
        steps = [r["step"] for r in rows]
        assert steps == sorted(steps) and len(set(steps)) == len(steps)
        assert [r["episode"] for r in rows] == list(range(1, len(rows) + 1))
        assert all(r["charts/episodic_return"] == r["charts/episodic_length"] for r in rows)
        assert sum(r["charts/episodic_length"] for r in rows) == steps[-1]
        assert {*rows[0]} == {
            "step", "episode", "charts/episodic_return", "charts/episodic_length",
            "circuit_calls", "losses/actor", "losses/critic",
        }  # fmt: skip
    assert pop[0] != pop[1]  # different seeds, different runs
    # a population equals its members run alone; the same seed gives identical rows
    alone = _rows([cfgs[1]], [tmp_path / "a1"])
    _same(alone[0], pop[1])
    again = _rows([cfgs[1]], [tmp_path / "b1"])
    assert again == alone
    assert (tmp_path / "a1" / JAX_CHECKPOINT).exists()


def test_kill_and_resume_gives_identical_rows(tmp_path: Path) -> None:
    cfg = dataclasses.replace(_CFG, seed=3)
    full = _strip(list(run(cfg, tmp_path / "full")))
    gen = run(cfg, tmp_path / "killed")
    seen = []
    for row in gen:  # stop once the first checkpoint (after 250 steps) has been written
        seen.append(row)
        if row["step"] > 300:
            break
    gen.close()
    assert (tmp_path / "killed" / JAX_CHECKPOINT).exists()
    resumed = _strip(list(run(cfg, tmp_path / "killed")))
    assert resumed, "nothing after the checkpoint"
    assert resumed == [r for r in full if r["step"] > 250]
    # a finished run resumes to nothing
    assert list(run(cfg, tmp_path / "full")) == []


def test_bad_engine_and_env_are_rejected(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="engine"):
        list(run(dataclasses.replace(_CFG, engine="tpu"), tmp_path / "x"))
    with pytest.raises(ValueError, match="MountainCar"):
        list(run(dataclasses.replace(_CFG, env_id="MountainCar-v0"), tmp_path / "y"))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()


def test_bad_counts_and_seeds_are_rejected_as_by_the_torch_engine() -> None:
    """The engines validate alike (before: the JAX engine trained seed -1, which the torch engine
    rejects, and ran total_steps=True as one step; a float checkpoint_every failed mid-run)."""
    from qa2c.jax_engine.train import train_population

    agent = make_agent(_CFG, warn=False)
    with pytest.raises(ValueError, match=r"seeds\[0\]"):
        list(train_population([agent], [-1], 10))
    with pytest.raises(TypeError, match="total_steps"):
        list(train_population([agent], [0], True))
    with pytest.raises(TypeError, match="checkpoint_every"):
        list(train_population([agent], [0], 10, checkpoint_every=2.5))  # type: ignore[arg-type]


def test_rows_without_an_update_carry_no_losses_rather_than_nan(tmp_path: Path) -> None:
    """As the torch engine (tests/qa2c/test_train.py): a row after another one of the same update
    has no loss keys (before: NaN, read by the report as a diverged loss)."""
    from qa2c.a2c import A2CConfig

    cfg = dataclasses.replace(_CFG, a2c=A2CConfig(n_envs=4, n_steps=2, gae_lambda=0.9))
    rows = _rows([cfg], [tmp_path / "r"])[0]
    with_losses = [r for r in rows if "losses/actor" in r]
    assert 0 < len(with_losses) < len(rows)
    for r in rows:
        assert ("losses/actor" in r) == ("losses/critic" in r)
    assert all(math.isfinite(r["losses/actor"] + r["losses/critic"]) for r in with_losses)


def test_long_rollouts_get_shorter_chunks_with_the_same_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import qa2c.jax_engine.train as jt

    algo = CONFIGS["A2C-improved"].a2c  # 16 envs x 16-step rollouts
    per_iteration = 10 * (3 * algo.n_steps * algo.n_envs + 2) * 8
    cap = jt.chunk_cap(algo, 10)
    assert cap * per_iteration <= jt.RECORD_BYTES < (cap + 1) * per_iteration
    assert cap < jt.MAX_CHUNK  # the 616 MB buffer of 10,000 iterations is gone
    assert jt.chunk_cap(CONFIGS["HA2Q"].a2c, 10) >= jt.MAX_CHUNK  # the paper's loop: unchanged
    cfg = dataclasses.replace(
        CONFIGS["A2C-improved"], total_steps=3000, checkpoint_every=0, engine="jax", seed=2
    )
    ref = _rows([cfg], [tmp_path / "ref"])
    monkeypatch.setattr(jt, "RECORD_BYTES", 3 * (3 * algo.n_steps * algo.n_envs + 2) * 8)
    assert jt.chunk_cap(algo, 1) == 3
    _same(_rows([cfg], [tmp_path / "short"])[0], ref[0])
