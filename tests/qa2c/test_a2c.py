"""The A2C algorithm: the paper's update by hand, truncation vs termination, improvements."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from qa2c.a2c import A2C, A2CConfig
from qa2c.agents import build_agent
from qa2c.envs import EnvPool

F64 = torch.float64


def _transition(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "obs": rng.normal(size=(1, 1, 1, 4)) * 0.1,
        "actions": np.array([[[1]]]),
        "rewards": np.array([[[1.0]]]),
        "next_obs": rng.normal(size=(1, 1, 1, 4)) * 0.1,
        "terminated": np.array([[[False]]]),
        "truncated": np.array([[[False]]]),
        "episode_steps": np.array([[[7]]]),
    }


def _paper_update(agent, tr, gamma=0.99, lr=1e-4, steps=1):  # type: ignore[no-untyped-def]
    """The paper's update written out with torch.optim.Adam on the agent's own modules."""
    actor, critic = copy.deepcopy(agent.actor), copy.deepcopy(agent.critic)
    opt_a = torch.optim.Adam(actor.parameters(), lr=lr)
    opt_c = torch.optim.Adam(critic.parameters(), lr=lr)
    s = torch.as_tensor(tr["obs"][0, 0], dtype=F64)  # (1, 4)
    s2 = torch.as_tensor(tr["next_obs"][0, 0], dtype=F64)
    a = int(tr["actions"][0, 0, 0])
    term = float(tr["terminated"][0, 0, 0])
    i_factor = gamma ** int(tr["episode_steps"][0, 0, 0])
    for _ in range(steps):
        v = critic(s).flatten()
        with torch.no_grad():
            target = float(tr["rewards"][0, 0, 0]) + gamma * (1 - term) * critic(s2).flatten()
        delta = target - v
        log_prob = torch.log(torch.softmax(actor(s), -1).flatten()[a])
        opt_a.zero_grad()
        (-i_factor * delta.detach() * log_prob).sum().backward()
        opt_a.step()
        opt_c.zero_grad()
        (delta**2).sum().backward()
        opt_c.step()
    return actor, critic, float(delta.detach())


@pytest.mark.parametrize("name", ["A2C", "A2C5"])
def test_faithful_update_matches_paper_loop(name: str) -> None:
    agent = build_agent(name, seed=3, dtype=F64)
    tr = _transition()
    ref_actor, ref_critic, _ = _paper_update(agent, tr, steps=3)
    learner = A2C([agent], [0], A2CConfig())
    for _ in range(3):
        learner.learn(**tr)
    for role, ref in (("actor", ref_actor), ("critic", ref_critic)):
        for n, p in ref.named_parameters():
            got = getattr(learner, f"{role}_params")[n][0]
            torch.testing.assert_close(got, p.detach(), rtol=1e-12, atol=1e-14)


def test_first_update_by_hand() -> None:
    """Adam's first step moves every weight by lr·sign(g): check the output biases by hand."""
    agent = build_agent("A2C", seed=1, dtype=F64)
    tr = _transition(1)
    s = torch.as_tensor(tr["obs"][0, 0, 0], dtype=F64)
    s2 = torch.as_tensor(tr["next_obs"][0, 0, 0], dtype=F64)
    with torch.no_grad():
        v, v2 = agent.critic(s).item(), agent.critic(s2).item()
        pi = torch.softmax(agent.actor(s), -1)
    delta = 1.0 + 0.99 * v2 - v
    i_factor = 0.99**7
    # d(δ²)/d b_critic = -2δ ; d(-I δ log π_a)/d b_k = -I δ (1[k=a] - π_k)
    g_critic_bias = -2 * delta
    g_actor_bias = -i_factor * delta * (torch.tensor([0.0, 1.0], dtype=F64) - pi)
    learner = A2C([agent], [0], A2CConfig())
    a_loss, c_loss = learner.learn(**tr)
    assert c_loss.item() == pytest.approx(delta**2, rel=1e-12)
    log_pi = torch.log(pi[1]).item()
    assert a_loss.item() == pytest.approx(-i_factor * delta * log_pi, rel=1e-12)
    new_cb = learner.critic_params["l2.bias"][0]
    old_cb = agent.critic.l2.bias.detach()
    torch.testing.assert_close(
        new_cb - old_cb,
        -1e-4 * torch.sign(torch.tensor([g_critic_bias], dtype=F64)),
        rtol=1e-6,
        atol=0,
    )
    new_ab = learner.actor_params["l2.bias"][0]
    torch.testing.assert_close(
        new_ab - agent.actor.l2.bias.detach(), -1e-4 * torch.sign(g_actor_bias), rtol=1e-6, atol=0
    )
    # the caller's agent is untouched
    assert torch.equal(agent.critic.l2.bias.detach(), old_cb)


def test_truncation_bootstraps_termination_does_not() -> None:
    agent = build_agent("A2C", seed=0, dtype=F64)
    tr = _transition(2)
    with torch.no_grad():
        v = agent.critic(torch.as_tensor(tr["obs"][0, 0, 0], dtype=F64)).item()
        v2 = agent.critic(torch.as_tensor(tr["next_obs"][0, 0, 0], dtype=F64)).item()
    losses = {}
    for kind in ("none", "terminated", "truncated"):
        t = dict(tr)
        t["terminated"] = np.array([[[kind == "terminated"]]])
        t["truncated"] = np.array([[[kind == "truncated"]]])
        losses[kind] = A2C([agent], [0], A2CConfig()).learn(**t)[1].item()
    assert losses["truncated"] == pytest.approx((1 + 0.99 * v2 - v) ** 2, rel=1e-12)
    assert losses["none"] == losses["truncated"]
    assert losses["terminated"] == pytest.approx((1 - v) ** 2, rel=1e-12)


def test_env_pool_truncates_at_time_limit() -> None:
    pool = EnvPool("CartPole-v1", [0], 1, 4, 2)
    assert pool.max_episode_steps == 500
    obs = pool.reset()
    pool.max_episode_steps = 5  # a short limit for the test
    flags = []
    for _ in range(5):
        nxt, final, _, term, trunc = pool.step(np.array([[0]]))
        flags.append((bool(term[0, 0]), bool(trunc[0, 0])))
    assert flags[-1] == (False, True) and not any(t or u for t, u in flags[:-1])
    assert not np.array_equal(nxt, final)  # reset observation vs true last state
    assert pool.elapsed[0, 0] == 0
    del obs


def test_nstep_gae_against_loop() -> None:
    """GAE(λ) advantages vs a per-step Python reference, with a termination and a truncation."""
    cfg = A2CConfig(n_steps=4, gae_lambda=0.9, n_envs=1, discount_actor=False, lr_critic=1e-4)
    agent = build_agent("A2C", seed=5, dtype=F64)
    rng = np.random.default_rng(0)
    obs = rng.normal(size=(1, 4, 1, 4)) * 0.1
    nxt = rng.normal(size=(1, 4, 1, 4)) * 0.1
    term = np.array([False, True, False, False]).reshape(1, 4, 1)
    trunc = np.array([False, False, True, False]).reshape(1, 4, 1)
    rew = np.ones((1, 4, 1))
    with torch.no_grad():
        v = agent.critic(torch.as_tensor(obs[0, :, 0], dtype=F64)).flatten().numpy()
        v2 = agent.critic(torch.as_tensor(nxt[0, :, 0], dtype=F64)).flatten().numpy()
    adv, run = np.zeros(4), 0.0
    for k in range(3, -1, -1):
        d = 1 + 0.99 * (1 - term[0, k, 0]) * v2[k] - v[k]
        run = d + 0.99 * 0.9 * (1 - (term[0, k, 0] or trunc[0, k, 0])) * run
        adv[k] = run
    expected_critic = float(np.mean(adv**2))
    learner = A2C([agent], [0], cfg)
    _, c_loss = learner.learn(obs, np.zeros((1, 4, 1)), rew, nxt, term, trunc, np.zeros((1, 4, 1)))
    assert c_loss.item() == pytest.approx(expected_critic, rel=1e-12)


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="normalize_advantage"):
        A2CConfig(normalize_advantage=True).validate()
    with pytest.raises(ValueError, match="gae_lambda"):
        A2CConfig(gae_lambda=0.9).validate()
    with pytest.raises(ValueError, match="gamma"):
        A2CConfig(gamma=1.5).validate()
    with pytest.raises(ValueError, match="n_envs"):
        A2CConfig(n_envs=0).validate()


def test_env_with_other_sizes_is_rejected() -> None:
    agent = build_agent("A2C", seed=0)
    with pytest.raises(ValueError, match="observation space"):
        A2C([agent], [0], A2CConfig(), env_id="MountainCar-v0")
    with pytest.raises(ValueError, match="action space"):
        A2C([build_agent("A2C", n_obs=4, n_actions=3)], [0], A2CConfig())


def test_lr_annealing_reaches_zero() -> None:
    """With lr_anneal_steps = 1 the first update uses the full lr and every later one lr 0."""
    agent = build_agent("A2C", seed=0, dtype=F64)
    learner = A2C([agent], [0], A2CConfig(lr_anneal_steps=1))
    learner.iterate()
    after_first = {n: p.detach().clone() for n, p in learner.actor_params.items()}
    assert any(
        not torch.equal(after_first[n], agent.actor.get_parameter(n)[None]) for n in after_first
    )
    learner.iterate()
    for n, p in learner.actor_params.items():
        assert torch.equal(p.detach(), after_first[n])


def test_learn_anneals_and_counts_like_iterate() -> None:
    """``learn`` (one update from given transitions) anneals by the updates made, as ``iterate``
    and the JAX engine do: with lr_anneal_steps = 1 the first update uses the configured lr (the
    same weights as no annealing) and every later one lr 0. Before: it read the environment steps,
    which ``learn`` never advances, so every update ran at lr·(1 + T·E / lr_anneal_steps)
    (here twice the configured lr) and never annealed. It also counts the actor's circuit
    executions as ``iterate`` does (before: only the critic's)."""
    tr = _transition()
    agent = build_agent("A2C", seed=0, dtype=F64)
    plain = A2C([agent], [0], A2CConfig())
    annealed = A2C([agent], [0], A2CConfig(lr_anneal_steps=1))
    plain.learn(**tr)
    annealed.learn(**tr)
    for n, p in plain.actor_params.items():
        assert torch.equal(annealed.actor_params[n].detach(), p.detach()), n
    after_first = {n: p.detach().clone() for n, p in annealed.actor_params.items()}
    annealed.learn(**tr)
    for n, p in annealed.actor_params.items():
        assert torch.equal(p.detach(), after_first[n]), n
    q2q = build_agent("Q2Q", seed=0, dtype=F64)
    stepped, learned = A2C([q2q], [0], A2CConfig()), A2C([q2q], [0], A2CConfig())
    stepped.iterate()
    learned.learn(**tr)
    assert learned.circuit_calls == stepped.circuit_calls == 3  # actor 1, critic 2 (s and s')


def test_env_pool_matches_gymnasium_sync_vector_env() -> None:
    """EnvPool == SyncVectorEnv(autoreset_mode=SAME_STEP) with the same seeds, incl. truncation."""
    import gymnasium as gym

    n, limit, seed = 3, 20, 5
    vec = gym.vector.SyncVectorEnv(
        [lambda: gym.make("CartPole-v1", max_episode_steps=limit) for _ in range(n)],
        autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
    )
    pool = EnvPool("CartPole-v1", [seed], n, 4, 2)
    pool.max_episode_steps = limit
    v_obs, _ = vec.reset(seed=[seed * n + e for e in range(n)])
    p_obs = pool.reset()
    np.testing.assert_allclose(p_obs[0], v_obs)
    rng = np.random.default_rng(0)
    saw = {"term": False, "trunc": False}
    for _ in range(200):
        act = rng.integers(0, 2, size=n)
        v_obs, v_rew, v_term, v_trunc, info = vec.step(act)
        p_obs, p_final, p_rew, p_term, p_trunc = pool.step(act[None])
        np.testing.assert_allclose(p_obs[0], v_obs)
        np.testing.assert_array_equal(p_term[0], v_term)
        np.testing.assert_array_equal(p_trunc[0], v_trunc)
        np.testing.assert_array_equal(p_rew[0], v_rew)
        for e in np.nonzero(v_term | v_trunc)[0]:
            np.testing.assert_allclose(p_final[0, e], info["final_obs"][e])
        saw["term"] |= bool(v_term.any())
        saw["trunc"] |= bool(v_trunc.any())
    assert saw == {"term": True, "trunc": True}


@pytest.mark.parametrize("name", ["A2C", "HQ2Q"])
def test_closed_form_gradients_match_autograd_of_the_losses(name: str) -> None:
    """The update's hand-derived ∂loss/∂logits and ∂loss/∂V(s) (entropy bonus, advantage
    normalisation, GAE, 3 environments, 2 agents) equal autograd through the loss expressions:
    one Adam step from zero moments moves every weight by lr·g/(|g| + eps), so the two updates
    agree exactly only if the gradients do."""
    cfg = A2CConfig(
        n_steps=3, gae_lambda=0.9, n_envs=3, ent_coef=0.05, normalize_advantage=True, lr_actor=0.01
    )
    agents = [build_agent(name, seed=s, dtype=F64, warn=False) for s in (1, 2)]
    rng = np.random.default_rng(4)
    shape = (2, 3, 3)
    obs, nxt = rng.normal(size=(*shape, 4)) * 0.1, rng.normal(size=(*shape, 4)) * 0.1
    acts = rng.integers(0, 2, size=shape)
    term = rng.random(shape) < 0.2
    trunc = rng.random(shape) < 0.2
    rew = np.ones(shape)
    learner = A2C([copy.deepcopy(a) for a in agents], [0, 1], cfg)
    before = {n: p.detach().clone() for n, p in learner.actor_params.items()}
    before |= {f"c.{n}": p.detach().clone() for n, p in learner.critic_params.items()}
    learner.learn(obs, acts, rew, nxt, term, trunc, np.zeros(shape))
    for i, agent in enumerate(agents):
        s = torch.as_tensor(obs[i], dtype=F64)  # (T, E, 4)
        v = agent.critic(s)[..., 0]
        with torch.no_grad():
            v2 = agent.critic(torch.as_tensor(nxt[i], dtype=F64))[..., 0]
            delta = 1.0 + 0.99 * torch.as_tensor(~term[i]) * v2 - v
            adv, run = torch.zeros_like(delta), torch.zeros(3, dtype=F64)
            for k in range(2, -1, -1):
                run = delta[k] + 0.99 * 0.9 * torch.as_tensor(~(term[i, k] | trunc[i, k])) * run
                adv[k] = run
            ret = adv + v
            w = (adv - adv.mean()) / (adv.std() + 1e-8) * 0.99**0  # episode step 0: I = 1
        logp_all = torch.log_softmax(agent.actor(s), -1)
        logp = logp_all.gather(-1, torch.as_tensor(acts[i]).unsqueeze(-1))[..., 0]
        ent = -(logp_all.exp() * logp_all).sum(-1)
        loss = -(w * logp).mean() - 0.05 * ent.mean() + ((ret - v) ** 2).mean()
        params = [*agent.actor.parameters(), *agent.critic.parameters()]
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        names = [n for n, _ in agent.actor.named_parameters()]
        names += [f"c.{n}" for n, _ in agent.critic.named_parameters()]
        for n, g in zip(names, grads):
            if g is None:
                g = torch.zeros_like(before[n][i])
            lr = cfg.lr_actor if not n.startswith("c.") else cfg.lr_critic
            got = (learner.actor_params | {f"c.{k}": p for k, p in learner.critic_params.items()})[
                n
            ]
            expected = before[n][i] - lr * g / (g.abs() + cfg.adam_eps)
            torch.testing.assert_close(got[i].detach(), expected, rtol=1e-9, atol=1e-12)
