"""Issue 15: the matched-baseline options of the classical heads and the qa2c-fair experiment."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from qa2c.agents import MLPHead, ScaledHead, build_agent
from qa2c.experiments.fair import (
    CONFIGS,
    TUNING_GRID,
    evaluate_greedy,
    evaluate_noisy,
    fair_params,
    grid,
    make_agent,
    run,
    run_many,
    validate_config,
)


@pytest.mark.parametrize("env", ["cartpole", "acrobot"])
def test_parameter_budgets_match_within_5_percent(env: str) -> None:
    q = fair_params(CONFIGS[f"{env}-Q2Q"])
    c = fair_params(CONFIGS[f"{env}-A2C"])
    assert abs(c - q) <= 0.05 * q, (q, c)
    if env == "cartpole":
        assert q == 130  # the improved pure-quantum agent of the README


def test_classical_agent_gets_every_non_quantum_trick() -> None:
    ag = make_agent(CONFIGS["cartpole-A2C"], warn=False)
    for head in (ag.actor, ag.critic):
        assert isinstance(head, ScaledHead) and isinstance(head.inner, MLPHead)
        assert head.input_map == "cartpole_paper"
        assert head.input_weights is not None and head.output_scale is not None
    assert ag.actor.output_scale is not None and ag.critic.output_scale is not None
    assert ag.actor.output_scale.item() == 4.0 and ag.critic.output_scale.item() == 50.0


def test_defaults_unchanged() -> None:
    ag = build_agent("A2C", 3, warn=False)
    assert isinstance(ag.actor, MLPHead) and isinstance(ag.critic, MLPHead)
    assert ag.num_parameters() == 4 * 4 + 4 + 4 * 2 + 2 + 4 * 4 + 4 + 4 + 1
    assert ag.options == {}


def test_output_scale_fixed_and_trainable() -> None:
    x = torch.randn(7, 4)
    plain = build_agent("A2C", 1, warn=False)
    fixed = build_agent("A2C", 1, mlp_actor_scale=3.0, mlp_critic_scale=-2.0, warn=False)
    torch.testing.assert_close(fixed.actor(x), 3.0 * plain.actor(x))
    torch.testing.assert_close(fixed.critic(x), -2.0 * plain.critic(x))
    assert fixed.num_parameters() == plain.num_parameters()
    assert fixed.critic.output_range() == (-math.inf, math.inf)
    train = build_agent(
        "A2C", 1, mlp_actor_scale=3.0, mlp_critic_scale=-2.0, mlp_trainable_scale=True, warn=False
    )
    assert train.num_parameters() == plain.num_parameters() + 2
    torch.testing.assert_close(train.actor(x), fixed.actor(x))
    with torch.no_grad():
        train.actor.output_scale.fill_(5.0)  # type: ignore[union-attr]
    torch.testing.assert_close(train.actor(x), 5.0 * plain.actor(x))


def test_input_scaling_map_and_obs_scale() -> None:
    x = torch.randn(5, 4)
    plain = build_agent("A2C", 2, warn=False)
    scaled = build_agent("A2C", 2, mlp_input_scaling=True, warn=False)
    assert scaled.num_parameters() == plain.num_parameters() + 8  # one weight per input and head
    torch.testing.assert_close(scaled.actor(x), plain.actor(x))  # λ starts at 1
    with torch.no_grad():
        scaled.actor.input_weights.copy_(torch.tensor([2.0, 0.0, 1.0, -1.0]))  # type: ignore[union-attr]
    lam = torch.tensor([2.0, 0.0, 1.0, -1.0])
    torch.testing.assert_close(scaled.actor(x), plain.actor(x * lam))
    mapped = build_agent("A2C", 2, mlp_input_map="cartpole_paper", warn=False)
    angles = torch.stack(
        [
            x[:, 0] * math.pi / 4.8,
            2 * torch.atan(x[:, 1]),
            x[:, 2] * math.pi / 0.418,
            2 * torch.atan(x[:, 3]),
        ],
        -1,
    )
    torch.testing.assert_close(mapped.critic(x), plain.critic(angles))
    c = (0.5, 1.0, 2.0, -1.0)
    obs = build_agent("A2C", 2, obs_scale=c, warn=False)
    torch.testing.assert_close(obs.actor(x), plain.actor(x * torch.tensor(c)))
    q_plain = build_agent("Q2Q", 2, warn=False)
    q_obs = build_agent("Q2Q", 2, obs_scale=(1.0, 1.0, 1.0, 1.0), warn=False)
    torch.testing.assert_close(q_obs.actor(x), q_plain.actor(x))
    assert q_obs.num_parameters() == q_plain.num_parameters()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"name": "Q2Q", "mlp_actor_scale": 2.0}, "mlp_actor_scale"),
        ({"name": "HQ2Q", "mlp_input_scaling": True}, "mlp_input_scaling"),
        ({"name": "A2C", "mlp_critic_scale": math.nan}, "mlp_critic_scale"),
        ({"name": "A2C", "mlp_input_map": "atari"}, "mlp_input_map"),
        ({"name": "A2C", "obs_scale": (1.0, 2.0)}, "obs_scale"),
        ({"name": "A2C", "n_obs": 6, "mlp_input_map": "cartpole_paper"}, "n_obs=4"),
    ],
)
def test_bad_options_raise(kwargs: dict[str, object], match: str) -> None:
    kwargs = dict(kwargs)
    name = kwargs.pop("name")
    with pytest.raises(ValueError, match=match):
        build_agent(name, **kwargs)  # type: ignore[arg-type]


def test_grid_is_the_same_for_both_agents() -> None:
    n = math.prod(len(v) for v in TUNING_GRID.values())
    for name in ("cartpole-Q2Q", "cartpole-A2C"):
        trials = grid(CONFIGS[name])
        assert len(trials) == n
        assert {(t.lr, t.critic_scale) for t in trials} == {
            (lr, cs) for lr in TUNING_GRID["lr"] for cs in TUNING_GRID["critic_scale"]
        }


def test_quantum_agent_is_the_readme_q2q_improved(tmp_path: Path) -> None:
    """Same agent, algorithm and seed: the same training episodes as cartpole's Q2Q-improved."""
    from qa2c.experiments import cartpole

    ref = dataclasses.replace(
        cartpole.CONFIGS["Q2Q-improved"], seed=3, total_steps=400, engine="torch"
    )
    cfg = dataclasses.replace(CONFIGS["cartpole-Q2Q"], seed=3, total_steps=400, eval_every=400)
    want = [(r["step"], r["charts/episodic_return"]) for r in cartpole.run(ref, tmp_path / "a")]
    got = [
        (r["step"], r["charts/episodic_return"])
        for r in run(cfg, tmp_path / "b")
        if "charts/episodic_return" in r
    ]
    assert got == want and len(got) > 5


def test_greedy_evaluation_is_deterministic() -> None:
    ag = make_agent(CONFIGS["cartpole-Q2Q"], warn=False)
    params = {n: p.unsqueeze(0) for n, p in ag.actor.named_parameters()}
    a = evaluate_greedy(ag.actor, params, "CartPole-v1", [10], 3, 4, 2)
    b = evaluate_greedy(ag.actor, params, "CartPole-v1", [10], 3, 4, 2)
    assert a.shape == (1, 3) and (a >= 1).all()
    np.testing.assert_array_equal(a, b)
    s1 = evaluate_greedy(ag.actor, params, "CartPole-v1", [10], 3, 4, 2, sample_seed=5)
    s2 = evaluate_greedy(ag.actor, params, "CartPole-v1", [10], 3, 4, 2, sample_seed=5)
    np.testing.assert_array_equal(s1, s2)  # a seeded sampled policy is reproducible too


@pytest.mark.parametrize("name", ["cartpole-Q2Q", "cartpole-A2C", "acrobot-A2C"])
def test_tiny_run_yields_training_and_eval_rows(name: str, tmp_path: Path) -> None:
    cfg = dataclasses.replace(CONFIGS[name], total_steps=768, eval_every=512, eval_episodes=2)
    if name.startswith("acrobot"):  # Acrobot episodes last 500 steps at first: 2 envs x 512
        cfg = dataclasses.replace(cfg, total_steps=1024, n_envs=2, n_steps=4)
    rows = list(run(cfg, tmp_path))
    steps = [r["step"] for r in rows]
    assert steps == sorted(set(steps))  # strictly increasing
    evals = [r for r in rows if "eval/return_mean" in r]
    assert [r["step"] for r in evals] == [0, 512, cfg.total_steps]
    assert any("charts/episodic_return" in r for r in rows)
    # 16 environments: many rows share an update; those carry no losses, never NaN
    losses = [v for r in rows for k, v in r.items() if k.startswith("losses/")]
    assert losses and all(math.isfinite(v) for v in losses)
    assert (tmp_path / "final.pt").exists()


def test_noise_evaluation_of_trained_quantum_runs(tmp_path: Path) -> None:
    cfg = dataclasses.replace(
        CONFIGS["cartpole-Q2Q"], total_steps=256, eval_every=256, eval_episodes=2
    )
    dirs = [tmp_path / "10", tmp_path / "11"]
    rows = list(run_many([dataclasses.replace(cfg, seed=s) for s in (10, 11)], dirs))
    last = {i: r["eval/return_mean"] for i, r in rows if "eval/return_mean" in r}
    res = evaluate_noisy(dirs, episodes=2, settings=["exact", "depolarizing 0.01", "shots 100"])
    assert set(res) == {"exact", "depolarizing 0.01", "shots 100"}
    assert all(r.shape == (2, 2) for r in res.values())
    np.testing.assert_allclose(res["exact"].mean(1), [last[0], last[1]])  # same as training's
    with pytest.raises(ValueError, match="settings"):
        evaluate_noisy(dirs, settings=["thermal"])


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"n_envs": 0}, "n_envs"),
        ({"n_steps": 0}, "n_steps"),
        ({"gae_lambda": 1.5}, "gae_lambda"),
        ({"lr": 0.0}, "lr"),
        ({"max_grad_norm": -1.0}, "max_grad_norm"),
        ({"n_envs": 1, "n_steps": 1, "gae_lambda": 1.0}, "normalize_advantage"),
    ],
)
def test_validate_config_rejects_a_bad_algorithm_setting(
    change: dict[str, object], match: str
) -> None:
    """The runner validates every config before it writes any run folder; an algorithm setting
    that the learner rejects must be rejected there (before: only once the run had started,
    after its folder and config.json existed, which then mismatched the corrected config)."""
    with pytest.raises(ValueError, match=match):
        validate_config(dataclasses.replace(CONFIGS["cartpole-A2C"], **change))  # type: ignore[arg-type]
