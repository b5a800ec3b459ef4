"""No silent wrong answers: second derivatives, torch.func, dead weights, every PennyLane option."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import pytest
import torch

from qa2c import VQC
from qa2c.a2c import A2C, A2CConfig, adam_update
from qa2c.agents import build_agent
from qa2c.sim import engine

F64 = torch.float64

# one circuit per torch kernel of the dispatch table (and input scaling on two of them)
KERNEL_CONFIGS: dict[str, dict[str, Any]] = {
    "closed_form": dict(n_qubits=4, n_layers=2, measure=(0, 1)),
    "closed_form_scaled": dict(n_qubits=3, n_layers=2, encoding="angle", input_scaling=True),
    "reupload": dict(n_qubits=3, n_layers=2, encoding="angle", reupload=True, input_scaling=True),
    "noisy": dict(n_qubits=3, n_layers=2, encoding="angle", depolarizing=0.05, readout_error=0.1),
}


def _vqc(name: str, **extra: Any) -> VQC:
    torch.manual_seed(0)
    return VQC(dtype=F64, **{**KERNEL_CONFIGS[name], **extra})


def _fd_hessian(f: Callable[[torch.Tensor], torch.Tensor], w: torch.Tensor) -> torch.Tensor:
    """Central differences of the first-order gradient (independent of any double backward)."""
    h = 1e-5
    flat = w.detach().reshape(-1)
    cols = []
    for i in range(flat.numel()):
        grads = []
        for sign in (1.0, -1.0):
            p = flat.clone()
            p[i] += sign * h
            p = p.view_as(w).requires_grad_()
            (g,) = torch.autograd.grad(f(p), p)
            grads.append(g.reshape(-1))
        cols.append((grads[0] - grads[1]) / (2 * h))
    return torch.stack(cols, 1)


# -- second derivatives ---------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(KERNEL_CONFIGS))
@pytest.mark.parametrize("limit", [None, 0])
def test_hessian_matches_finite_differences(
    name: str, limit: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if limit is not None:  # the fused (chain) kernel instead of the closed form
        monkeypatch.setattr(engine, "JACOBIAN_LIMIT", limit)
    vqc = _vqc(name)
    x = torch.randn(3, vqc.n_inputs, dtype=F64)
    probe = torch.randn(3, len(vqc.measure), dtype=F64)

    def f(w: torch.Tensor) -> torch.Tensor:
        return (vqc.functional(w, x, vqc.input_weights) * probe).sum()

    w = vqc.weights.detach().clone()
    hess = torch.autograd.functional.hessian(f, w).reshape(w.numel(), w.numel())
    ref = _fd_hessian(f, w)
    assert ref.abs().max() > 0.1
    torch.testing.assert_close(hess, ref, atol=1e-6, rtol=0)


def test_gradient_penalty_is_differentiable() -> None:
    """grad(create_graph=True) gives a gradient that has a graph, and its own gradient is right."""
    vqc = _vqc("closed_form")
    x = torch.randn(4, 4, dtype=F64)

    def penalty(w: torch.Tensor) -> torch.Tensor:
        (g,) = torch.autograd.grad(vqc.functional(w, x).sum(), w, create_graph=True)
        return g.square().sum()

    w = vqc.weights.detach().clone().requires_grad_()
    p = penalty(w)
    assert p.requires_grad
    (dp,) = torch.autograd.grad(p, w)
    eps = 1e-6
    direction = torch.randn_like(w)
    with torch.enable_grad():
        plus = penalty((w.detach() + eps * direction).requires_grad_())
        minus = penalty((w.detach() - eps * direction).requires_grad_())
    fd = (plus - minus).item() / (2 * eps)
    assert abs((dp * direction).sum().item() - fd) < 1e-6 * max(1.0, abs(fd))


def test_input_hessian_of_the_closed_form() -> None:
    vqc = _vqc("closed_form")
    x = torch.randn(4, dtype=F64)
    hess = torch.autograd.functional.hessian(lambda x_: vqc(x_).sum(), x)
    ref = _fd_hessian(lambda x_: vqc(x_).sum(), x)
    torch.testing.assert_close(hess, ref, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(gradient="parameter_shift"),
        dict(backend="pennylane", device="lightning.qubit"),
        dict(backend="pennylane", gradient="parameter_shift"),
    ],
)
def test_second_derivative_raises_where_unsupported(kwargs: dict[str, Any]) -> None:
    torch.manual_seed(0)
    vqc = VQC(3, 1, encoding="angle", dtype=F64, **kwargs)
    x = torch.randn(2, 3, dtype=F64)
    with pytest.raises(RuntimeError, match="first order"):
        torch.autograd.functional.hessian(lambda w: vqc.functional(w, x).sum(), vqc.weights)
    with pytest.raises(RuntimeError, match="first order"):
        torch.autograd.grad(vqc(x).sum(), vqc.weights, create_graph=True)
    (g,) = torch.autograd.grad(vqc(x).sum(), vqc.weights)  # first order still works
    assert g.abs().sum() > 0


def test_pennylane_backprop_hessian_equals_torch() -> None:
    torch.manual_seed(0)
    pl = VQC(3, 1, encoding="angle", backend="pennylane", dtype=F64)
    ours = VQC(3, 1, encoding="angle", dtype=F64)
    ours.load_state_dict(pl.state_dict())
    x = torch.randn(2, 3, dtype=F64)
    h_pl = torch.autograd.functional.hessian(lambda w: pl.functional(w, x).sum(), pl.weights)
    h_ours = torch.autograd.functional.hessian(lambda w: ours.functional(w, x).sum(), ours.weights)
    assert h_ours.abs().max() > 0.1
    torch.testing.assert_close(h_pl, h_ours, atol=1e-10, rtol=0)


# -- torch.func ------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["closed_form", "closed_form_scaled", "reupload"])
def test_torch_func_jacrev_vmap_and_hessian(name: str) -> None:
    vqc = _vqc(name)
    params = {k: v.detach() for k, v in vqc.named_parameters()}
    x = torch.randn(5, vqc.n_inputs, dtype=F64)

    def f(p: dict[str, torch.Tensor], x_: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(vqc, p, (x_,))

    jac = torch.func.jacrev(f)(params, x)["weights"]  # (5, m, n, L, k)
    ref = torch.autograd.functional.jacobian(
        lambda w: vqc.functional(w, x, vqc.input_weights), vqc.weights.detach()
    )
    torch.testing.assert_close(jac, ref, atol=1e-12, rtol=0)
    batched = torch.func.vmap(lambda x_: f(params, x_))(x)
    torch.testing.assert_close(batched, vqc(x), atol=1e-12, rtol=0)
    per_sample = torch.func.vmap(torch.func.jacrev(lambda x_: f(params, x_)))(x)
    assert per_sample.shape == (5, len(vqc.measure), vqc.n_inputs)
    hess = torch.func.hessian(lambda w: vqc.functional(w, x[0], vqc.input_weights).sum())(
        vqc.weights.detach()
    )
    ref_h = torch.autograd.functional.hessian(
        lambda w: vqc.functional(w, x[0], vqc.input_weights).sum(), vqc.weights.detach()
    )
    torch.testing.assert_close(hess, ref_h, atol=1e-10, rtol=0)


@pytest.mark.parametrize("kwargs", [dict(gradient="parameter_shift"), dict(shots=10)])
def test_torch_func_raises_clearly_where_unsupported(kwargs: dict[str, Any]) -> None:
    vqc = VQC(3, 1, encoding="angle", dtype=F64, **kwargs)
    x = torch.randn(2, 3, dtype=F64)
    with pytest.raises(RuntimeError, match=r"torch\.func transforms"):
        torch.func.jacrev(lambda w: vqc.functional(w, x))(vqc.weights.detach())


# -- dead weights ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs",
    [
        dict(),
        dict(gradient="parameter_shift"),
        dict(depolarizing=0.1),
        dict(reupload=True),
        dict(backend="pennylane"),
    ],
)
def test_dead_weights_get_exactly_zero_gradient(kwargs: dict[str, Any]) -> None:
    torch.manual_seed(0)
    vqc = VQC(4, 2, measure=(0, 1), **kwargs)  # float32: round-off would show
    dead = vqc.dead_parameters()
    assert int(dead.sum()) == 9 or (kwargs.get("reupload") and bool(dead.any()))
    vqc(torch.randn(64, 4)).square().sum().backward()
    assert vqc.weights.grad is not None
    assert bool((vqc.weights.grad[dead] == 0).all())
    assert bool((vqc.weights.grad[~dead] != 0).all())


@pytest.mark.parametrize("limit", [None, 0])
def test_live_gradients_are_unchanged_by_the_mask(
    limit: int | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    if limit is not None:
        monkeypatch.setattr(engine, "JACOBIAN_LIMIT", limit)
    torch.manual_seed(0)
    vqc = VQC(4, 2, measure=(0, 1))
    unmasked = copy.deepcopy(vqc)
    unmasked.engine.dead = None  # no light cone: the kernels' raw gradients
    unmasked.engine._consts.clear()
    x = torch.randn(32, 4)
    vqc(x).square().sum().backward()
    unmasked(x).square().sum().backward()
    dead = vqc.dead_parameters()
    assert vqc.weights.grad is not None and unmasked.weights.grad is not None
    assert torch.equal(vqc.weights.grad[~dead], unmasked.weights.grad[~dead])


def test_dead_weights_never_move_in_training() -> None:
    """Q2Q, the paper's algorithm, float32: before the mask dead weights drifted by lr-sized steps."""
    agent = build_agent("Q2Q", seed=0, warn=False)
    learner = A2C([agent], [0], A2CConfig(lr_actor=1e-2, lr_critic=1e-2))
    start = {n: p.detach().clone() for n, p in learner.actor_params.items()}
    start_c = {n: p.detach().clone() for n, p in learner.critic_params.items()}
    for _ in range(200):
        learner.iterate()
    for params, before, head in (
        (learner.actor_params, start, agent.actor),
        (learner.critic_params, start_c, agent.critic),
    ):
        dead = head.vqc.dead_parameters()  # type: ignore[union-attr]
        w, w0 = params["vqc.weights"][0], before["vqc.weights"][0]
        assert torch.equal(w[dead], w0[dead])
        assert bool((w[~dead] != w0[~dead]).all())


# -- Adam -----------------------------------------------------------------------------------------
def test_adam_update_fused_and_fallback_equal_torch_optim_adam() -> None:
    torch.manual_seed(0)
    p0 = torch.randn(3, 5, dtype=F64)
    grads = [torch.randn(3, 5, dtype=F64) for _ in range(4)]
    ref = p0.clone().requires_grad_()
    opt = torch.optim.Adam([ref], lr=0.01, eps=1e-8)
    for g in grads:
        ref.grad = g.clone()
        opt.step()
    for fused in (True, False):
        p, m, v = p0.clone(), torch.zeros_like(p0), torch.zeros_like(p0)
        step = torch.zeros((), dtype=torch.float32)
        for t, g in enumerate(grads, 1):
            step.fill_(t)
            adam_update([p], [g], [m], [v], step, lr=0.01, eps=1e-8, fused=fused)
        torch.testing.assert_close(p, ref.detach(), atol=1e-14, rtol=0)


# -- the PennyLane backend: every advertised option, any batch -----------------------------------
DEVICES = ["default.qubit", "default.mixed", "lightning.qubit"]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("gradient", ["backprop", "parameter_shift"])
@pytest.mark.parametrize("batch", [(), (1,), (3,)])
def test_pennylane_values_and_gradients_equal_torch(
    device: str, gradient: str, batch: tuple[int, ...]
) -> None:
    torch.manual_seed(0)
    pl = VQC(4, 2, backend="pennylane", device=device, gradient=gradient, dtype=F64)
    ref = VQC(4, 2, dtype=F64)
    ref.load_state_dict(pl.state_dict())
    x = torch.randn(*batch, 4, dtype=F64)
    out, out_ref = pl(x), ref(x)
    assert out.dtype == F64 and out.shape == (*batch, 4)
    torch.testing.assert_close(out, out_ref, atol=1e-10, rtol=0)
    out.square().sum().backward()
    out_ref.square().sum().backward()
    assert pl.weights.grad is not None and ref.weights.grad is not None
    torch.testing.assert_close(pl.weights.grad, ref.weights.grad, atol=1e-9, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("gradient", ["backprop", "parameter_shift"])
def test_pennylane_shots_any_batch(device: str, gradient: str) -> None:
    torch.manual_seed(0)
    pl = VQC(4, 2, backend="pennylane", device=device, gradient=gradient, shots=100, dtype=F64)
    exact = VQC(4, 2, dtype=F64)
    exact.load_state_dict(pl.state_dict())
    x = torch.randn(3, 4, dtype=F64)
    with torch.no_grad():
        est = pl(x)
    assert est.shape == (3, 4)
    # sample means of 100 ±1 outcomes: multiples of 0.02, within 5 standard errors of the truth
    torch.testing.assert_close(est * 50, (est * 50).round(), atol=1e-9, rtol=0)
    assert bool(((est - exact(x)).abs() <= 5 * 0.1 + 1e-12).all())
    out = pl(x)
    out.sum().backward()
    assert pl.weights.grad is not None and bool(torch.isfinite(pl.weights.grad).all())
    assert pl.weights.grad.abs().sum() > 0


def test_pennylane_noise_on_default_mixed_any_batch() -> None:
    torch.manual_seed(0)
    kw: dict[str, Any] = dict(depolarizing=0.05, readout_error=0.1, dtype=F64)
    pl = VQC(3, 2, encoding="angle", backend="pennylane", device="default.mixed", **kw)
    ref = VQC(3, 2, encoding="angle", **kw)
    ref.load_state_dict(pl.state_dict())
    x = torch.randn(3, 3, dtype=F64)
    torch.testing.assert_close(pl(x), ref(x), atol=1e-10, rtol=0)
    pl(x).sum().backward()
    ref(x).sum().backward()
    assert pl.weights.grad is not None and ref.weights.grad is not None
    torch.testing.assert_close(pl.weights.grad, ref.weights.grad, atol=1e-9, rtol=0)


def test_pennylane_parameter_shift_counts_executions() -> None:
    pl = VQC(4, 2, backend="pennylane", gradient="parameter_shift", dtype=F64)
    x = torch.randn(3, 4, dtype=F64)
    pl(x).sum().backward()
    assert pl.circuit_calls == 3 + 2 * 24 * 3  # the forward, then two shifts per weight
    assert not math.isnan(float(pl.weights.grad.sum()))  # type: ignore[union-attr]


# -- the engine's one dispatch table and the gate registry -----------------------------------------
@pytest.mark.parametrize(
    ("kwargs", "kernel"),
    [
        (dict(), "closed_form"),
        (dict(input_scaling=True), "closed_form"),
        (dict(reupload=True), "reupload"),
        (dict(shots=10), "noisy"),
        (dict(depolarizing=0.1), "noisy"),
        (dict(gradient="parameter_shift"), "parameter_shift"),
        (dict(backend="pennylane"), "pennylane"),
    ],
)
def test_engine_routes_each_circuit_to_one_kernel(kwargs: dict[str, Any], kernel: str) -> None:
    vqc = VQC(4, 2, **kwargs)
    assert vqc.engine.route(vqc.weights) == kernel
    with torch.no_grad():  # without gradients the shift rule is not needed
        expected = "closed_form" if kernel == "parameter_shift" else kernel
        assert vqc.engine.route(vqc.weights) == expected


def test_engine_routes_large_circuits_to_the_fused_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    vqc = VQC(4, 2)
    monkeypatch.setattr(engine, "JACOBIAN_LIMIT", 0)
    assert vqc.engine.route(vqc.weights) == "fused"


def test_gate_registry_raises_on_an_unknown_gate() -> None:
    from qa2c.sim.spec import TWO_QUBIT_GATES, signed_permutation, two_qubit_gate

    assert sorted(TWO_QUBIT_GATES) == ["cnot", "cz"]
    with pytest.raises(ValueError, match="unknown two-qubit gate 'iswap'"):
        two_qubit_gate("iswap")
    with pytest.raises(ValueError, match="unknown two-qubit gate 'swap'"):
        signed_permutation([("cnot", 0, 1), ("swap", 0, 1)], 2)


def test_the_documented_table_is_the_dispatch_table() -> None:
    lines = (engine.__doc__ or "").splitlines()
    rules = [i for i, line in enumerate(lines) if line.startswith("=====")]
    rows = lines[rules[1] + 1 : rules[2]]  # between the header rule and the closing rule
    documented = [line.split()[0] for line in rows if line and not line[0].isspace()]
    vqc = VQC(2, 1, encoding="angle")
    assert documented == list(vqc.engine._kernels)
