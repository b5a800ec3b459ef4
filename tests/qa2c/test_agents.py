"""Agents: parameter counts, heads exactly as the paper, population form, warnings, bad input."""

from __future__ import annotations

import copy
import logging

import pytest
import torch

from qa2c.agents import AGENT_NAMES, MLPHead, QuantumHead, build_agent, value_cap

F64 = torch.float64
COUNTS = {
    "A2C": 55,
    "A2Q": 54,
    "Q2C": 49,
    "Q2Q": 48,
    "A2C5": 68,
    "HA2Q": 66,
    "HQ2C": 65,
    "HQ2Q": 63,
}


@pytest.mark.parametrize("name", AGENT_NAMES)
def test_parameter_counts(name: str) -> None:
    assert build_agent(name, warn=False).num_parameters() == COUNTS[name]


def test_names_are_the_papers() -> None:
    assert set(AGENT_NAMES) == set(COUNTS)


def _p(head: QuantumHead, x: torch.Tensor) -> torch.Tensor:
    """p_i = (1 + <Z_i>)/2 of the measured wires, from a copy of the head's circuit that returns
    <Z_i> (the head reads p_i from the simulator's 0/1 table: output="prob0")."""
    assert head.vqc.output == "prob0"
    ref = copy.deepcopy(head.vqc)
    ref.output = "expval"
    return (ref(x) + 1) / 2


def test_heads_are_the_papers() -> None:
    x = torch.randn(6, 4, dtype=F64) * 0.3
    q2q = build_agent("Q2Q", seed=1, dtype=F64, warn=False)
    assert isinstance(q2q.actor, QuantumHead) and isinstance(q2q.critic, QuantumHead)
    assert q2q.actor.vqc.measure == (0, 1) and q2q.critic.vqc.measure == (0, 1)
    torch.testing.assert_close(q2q.actor(x), _p(q2q.actor, x))  # logits [p0, p1]
    torch.testing.assert_close(q2q.critic(x), _p(q2q.critic, x).sum(-1, keepdim=True))
    a2q = build_agent("A2Q", seed=1, dtype=F64, warn=False)
    assert a2q.critic.vqc.measure == (0,)  # type: ignore[union-attr]
    torch.testing.assert_close(a2q.critic(x), _p(a2q.critic, x))  # type: ignore[arg-type]
    hq = build_agent("HQ2Q", seed=2, dtype=F64, warn=False)
    for head in (hq.actor, hq.critic):
        assert isinstance(head, QuantumHead)
        assert head.vqc.measure == (0, 1, 2, 3)
        expect = torch.nn.functional.linear(_p(head, x).relu(), head.post.weight, head.post.bias)
        torch.testing.assert_close(head(x), expect)
    a2c5 = build_agent("A2C5", seed=3, dtype=F64)
    assert isinstance(a2c5.actor, MLPHead) and a2c5.actor.l1.out_features == 5
    expect = a2c5.actor.l2(a2c5.actor.l1(x).relu())
    torch.testing.assert_close(a2c5.actor(x), expect)
    # the paper's circuit: 2 layers of ZYZ rotations after a CNOT ring, weights in [0, 2π)
    w = hq.actor.vqc.weights.detach()  # type: ignore[union-attr]
    assert w.shape == (4, 2, 3) and float(w.min()) >= 0 and float(w.max()) < 2 * torch.pi


def test_seeded_init_leaves_global_rng_alone() -> None:
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    a, b = build_agent("HQ2C", seed=4, warn=False), build_agent("HQ2C", seed=4, warn=False)
    assert torch.equal(torch.random.get_rng_state(), before)
    for pa, pb in zip(a.actor.parameters(), b.actor.parameters()):
        assert torch.equal(pa, pb)
    c = build_agent("HQ2C", seed=5, warn=False)
    assert not torch.equal(a.actor.vqc.weights, c.actor.vqc.weights)  # type: ignore[union-attr]


@pytest.mark.parametrize("name", ["A2C5", "HQ2Q", "Q2Q"])
def test_stacked_equals_per_agent(name: str) -> None:
    agents = [build_agent(name, seed=s, dtype=F64, warn=False) for s in range(3)]
    x = torch.randn(3, 5, 4, dtype=F64) * 0.5
    for role in ("actor", "critic"):
        heads = [getattr(a, role) for a in agents]
        params = {
            n: torch.stack([h.get_parameter(n) for h in heads])
            for n, _ in heads[0].named_parameters()
        }
        out = heads[0].stacked(params, x)
        for i, h in enumerate(heads):
            torch.testing.assert_close(out[i], h(x[i]), rtol=1e-12, atol=1e-12)


def test_improvements() -> None:
    ag = build_agent(
        "Q2Q",
        n_layers=3,
        reupload=True,
        input_scaling=True,
        actor_readout="z",
        critic_readout="z",
        critic_scale=50.0,
        trainable_scale=True,
        dtype=F64,
        warn=False,
    )
    # circuits 2 x (4*3*3 + 3*4 input weights) + 2 scales
    assert ag.num_parameters() == 2 * (36 + 12) + 2
    x = torch.randn(4, 4, dtype=F64)
    z = ag.critic.vqc(x)  # type: ignore[operator]
    torch.testing.assert_close(ag.critic(x), 50.0 * z.sum(-1, keepdim=True))
    assert ag.actor.output_range() == (-float("inf"), float("inf"))
    fixed = build_agent("Q2Q", critic_readout="z", critic_scale=60.0, warn=False)
    assert fixed.critic.output_range() == (-120.0, 120.0)
    assert fixed.num_parameters() == 48


def test_warnings(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="qa2c.agents"):
        build_agent("Q2Q")
    text = caplog.text
    assert "capped at 0.731" in text
    assert "[0, 2]" in text and f"{value_cap(0.99, 500):.1f}" in text
    assert "9 of 24" in text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="qa2c.agents"):
        build_agent("A2Q")
    assert "12 of 24" in caplog.text and "[0, 1]" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="qa2c.agents"):
        build_agent("A2C5")
        build_agent(
            "Q2Q", actor_readout="z", critic_readout="z", trainable_scale=True, reupload=True
        )
    assert "capped" not in caplog.text and "confined" not in caplog.text
    assert value_cap(0.99, 500) == pytest.approx(99.3429, rel=1e-4)


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="valid names: A2C, A2Q"):
        build_agent("PPO")
    with pytest.raises(ValueError, match="n_layers"):
        build_agent("A2C", n_layers=3)
    with pytest.raises(ValueError, match="actor_readout"):
        build_agent("HQ2Q", actor_readout="z")
    with pytest.raises(ValueError, match="critic_scale"):
        build_agent("Q2C", critic_scale=3.0)
    with pytest.raises(ValueError, match="hidden"):
        build_agent("Q2Q", hidden=8)
    with pytest.raises(ValueError, match="actor_readout"):
        build_agent("Q2Q", actor_readout="softmax")
    with pytest.raises(ValueError, match="n_obs"):
        build_agent("HA2Q", n_obs=6)
    with pytest.raises(ValueError, match="trainable_scale"):
        build_agent("HQ2Q", trainable_scale=True)
    with pytest.raises(TypeError, match="seed"):
        build_agent("A2C", seed=1.5)  # type: ignore[arg-type]


def test_agent_config_is_the_one_description() -> None:
    """``build_agent(AgentConfig(...))`` equals ``build_agent(name, **options)``; every option
    is declared once (a field of AgentConfig) with the heads it applies to."""
    from dataclasses import fields

    from qa2c.agents import _APPLIES, AgentConfig

    assert set(_APPLIES) == {f.name for f in fields(AgentConfig)} - {"name"}
    opts = {"n_layers": 3, "reupload": True, "critic_readout": "z", "critic_scale": 20.0}
    a = build_agent(AgentConfig("Q2Q", **opts), seed=7, warn=False)
    b = build_agent("Q2Q", seed=7, warn=False, **opts)
    assert a.options == b.options == opts and a.num_parameters() == b.num_parameters()
    for (na, pa), (nb, pb) in zip(a.critic.named_parameters(), b.critic.named_parameters()):
        assert na == nb and torch.equal(pa, pb)
    # keywords replace a config's fields; the default config is the paper's HA2Q
    assert build_agent(AgentConfig(), hidden=7, warn=False).options == {"hidden": 7}
    assert AgentConfig().options() == {} and AgentConfig().name == "HA2Q"
    with pytest.raises(TypeError, match="n_layer: not an agent option; valid options: hidden"):
        build_agent("Q2Q", n_layer=3)
    with pytest.raises(TypeError, match="agent: expected a name or an AgentConfig"):
        build_agent(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="hidden/n_layers"):
        build_agent("A2C", hidden=-1)
