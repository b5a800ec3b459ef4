"""The closed-form fast path (qa2c.sim.fast) against the chain/Kronecker path and gate oracles."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from qa2c import VQC
from qa2c.sim import RX, RY, RZ, engine, fast, fused

F64 = torch.float64


@pytest.mark.parametrize("rotations", ["ZYZ", "XYZ", "Y", "XZ", "ZZYX"])
def test_fourier_form_matches_gate_products(rotations: str) -> None:
    freq, offset, coef = fast._fourier(rotations)
    gates = {"X": RX, "Y": RY, "Z": RZ}
    rng = np.random.default_rng(1)
    for theta in rng.uniform(-7, 7, size=(5, len(rotations))):
        ref = torch.eye(2, dtype=torch.complex128)
        for axis, t in zip(rotations, theta, strict=True):
            ref = gates[axis](torch.tensor(t, dtype=F64)).to(torch.complex128) @ ref
        flat = np.cos(theta / 2 @ freq + offset) @ coef  # (8,): row-major entries, (re, im)
        ours = torch.view_as_complex(torch.as_tensor(flat).view(4, 2)).view(2, 2)
        torch.testing.assert_close(ours, ref, atol=1e-13, rtol=0)


CONFIGS = [
    dict(n_qubits=4, n_layers=2),
    dict(n_qubits=4, n_layers=5, measure=(0, 2)),
    dict(n_qubits=3, n_layers=2, encoding="angle", n_inputs=2, rotations="XY", entangler="cz_ring"),
    dict(
        n_qubits=3,
        n_layers=3,
        encoding="angle",
        rotations="XYZ",
        entangler="cnot_all",
        layer_order="rotations_first",
    ),
    dict(
        n_qubits=2,
        n_layers=2,
        encoding="angle",
        n_inputs=1,
        rotations="Z",
        entangler="cz_chain",
        layer_order="rotations_first",
    ),
    dict(n_qubits=1, n_layers=3, encoding="angle", rotations="YZ"),
]


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("shapes", [((), (3,)), ((2,), (2, 3)), ((), ())])
def test_fast_path_matches_chain_path(config: dict, shapes: tuple) -> None:
    torch.manual_seed(0)
    vqc = VQC(dtype=F64, **config)
    c = vqc.engine.consts(vqc.weights)
    assert c.fast is not None
    w_shape, x_shape = shapes
    w = (torch.rand(*w_shape, *vqc.weights.shape, dtype=F64) * 7 - 1).requires_grad_()
    x = torch.randn(*x_shape, vqc.n_inputs, dtype=F64, requires_grad=True)
    r = fast.product_state(c.fast, x)
    torch.testing.assert_close(r, fast.product_state(c.fast, x, fused_half(vqc, x)))
    ours = fast.expval_z(c.fast, w, r)
    ref = fused.FusedExpval.apply(w, r, vqc.spec, c)
    probe = torch.randn_like(ref)
    g_ours = torch.autograd.grad((ours * probe).sum(), [w, x], retain_graph=True)
    g_ref = torch.autograd.grad((ref * probe).sum(), [w, x])
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=0)
    for a, b in zip(g_ours, g_ref, strict=True):
        torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(fast.expval_z(c.fast, w, r), ref, atol=1e-12, rtol=0)


def fused_half(vqc: VQC, x: torch.Tensor) -> torch.Tensor:
    """θ/2 of the encoding RX gates the way the general path computes them."""
    return vqc.engine.half_angles(vqc.weights, x, None).squeeze(-2)


def test_float32_fast_path_close_to_float64() -> None:
    torch.manual_seed(0)
    vqc = VQC(n_layers=3)
    x = torch.randn(5, 4)
    out32 = vqc(x)
    vqc64 = VQC(n_layers=3, dtype=F64)
    with torch.no_grad():
        vqc64.weights.copy_(vqc.weights.double())
    torch.testing.assert_close(out32.double(), vqc64(x.double()), atol=2e-6, rtol=0)
    out32.sum().backward()
    vqc64(x.double()).sum().backward()
    assert vqc.weights.grad is not None and vqc64.weights.grad is not None
    torch.testing.assert_close(vqc.weights.grad.double(), vqc64.weights.grad, atol=1e-5, rtol=0)


@pytest.mark.parametrize("bad", [math.inf, -math.inf, math.nan])
@pytest.mark.parametrize("wire", [0, 1, 2, 3])
def test_fast_path_rejects_non_finite_inputs_on_every_wire(bad: float, wire: int) -> None:
    vqc = VQC()
    x = torch.zeros(3, 4)
    x[1, wire] = bad  # wires 1 and 3 use atan, which is finite at ±inf
    with pytest.raises(ValueError, match="non-finite"):
        vqc(x)
    assert vqc.circuit_calls == 0


def test_size_limit_falls_back_to_chain_path(monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(0)
    vqc = VQC(dtype=F64)
    x = torch.randn(4, 4, dtype=F64)
    out = vqc(x)
    out.sum().backward()
    grad = vqc.weights.grad
    assert grad is not None
    grad = grad.clone()
    vqc.weights.grad = None
    monkeypatch.setattr(engine, "JACOBIAN_LIMIT", 0)
    out_chain = vqc(x)
    assert out_chain.grad_fn is not None and "FusedExpval" in type(out_chain.grad_fn).__name__
    out_chain.sum().backward()
    torch.testing.assert_close(out_chain, out, atol=1e-12, rtol=0)
    assert vqc.weights.grad is not None
    torch.testing.assert_close(vqc.weights.grad, grad, atol=1e-12, rtol=0)


def test_create_graph_gives_the_first_order_gradient_with_a_graph() -> None:
    vqc = VQC(4, 2, dtype=torch.float64)
    x = torch.randn(3, 4, dtype=torch.float64)
    out = vqc(x)
    probe = torch.ones_like(out, requires_grad=True)  # a grad output that itself needs a graph
    (g,) = torch.autograd.grad(out, vqc.weights, probe, create_graph=True)
    assert g.requires_grad
    vqc.zero_grad()
    vqc(x).sum().backward()
    torch.testing.assert_close(g.detach(), vqc.weights.grad, atol=1e-12, rtol=0)
    g.square().sum().backward()  # second order (checked against finite differences elsewhere)
    assert probe.grad is not None and bool(torch.isfinite(probe.grad).all())
