"""The simulator internals: gates, oracles, gradients, light cone, noise, shots, parameter shift."""

from __future__ import annotations

import math

import pennylane as qml
import pytest
import torch

from qa2c import VQC
from qa2c.sim import (
    CNOT,
    CRZ,
    CZ,
    RX,
    RY,
    RZ,
    Rot,
    apply_cnot,
    apply_cz,
    apply_gate,
    engine,
    expval_z,
    expval_zz,
    fast,
    fused,
    probabilities,
    zero_state,
)
from qa2c.sim.noise import depolarize, sample_counts

F64 = torch.float64


# -- gates and readouts --------------------------------------------------------------------------
def test_gate_matrices_match_pennylane() -> None:
    t = 0.7311
    pairs = [
        (RX(t), qml.RX(t, wires=0)),
        (RY(t), qml.RY(t, wires=0)),
        (RZ(t), qml.RZ(t, wires=0)),
        (Rot(0.3, t, -1.1), qml.Rot(0.3, t, -1.1, wires=0)),
        (CRZ(t), qml.CRZ(t, wires=[0, 1])),
        (CNOT(torch.complex128), qml.CNOT(wires=[0, 1])),
        (CZ(torch.complex128), qml.CZ(wires=[0, 1])),
    ]
    for ours, op in pairs:
        ref = torch.as_tensor(qml.matrix(op), dtype=torch.complex128)
        torch.testing.assert_close(ours.to(torch.complex128), ref, atol=1e-7, rtol=0)
    batch = RY(torch.tensor([0.1, 0.2, 0.3], dtype=F64))
    assert batch.shape == (3, 2, 2) and batch.dtype == torch.complex128


def test_gate_sequence_matches_pennylane_state() -> None:
    n, th = 3, [0.4, 1.3, -0.8, 2.2, 0.9]
    dev = qml.device("default.qubit", wires=n)

    @qml.qnode(dev)
    def circuit() -> object:
        qml.RX(th[0], wires=0)
        qml.RY(th[1], wires=1)
        qml.CNOT(wires=[0, 2])
        qml.CRZ(th[2], wires=[2, 1])
        qml.RZ(th[3], wires=2)
        qml.CZ(wires=[1, 2])
        qml.Rot(th[0], th[1], th[4], wires=1)
        qml.CNOT(wires=[2, 0])
        return qml.state()

    s = zero_state(n, dtype=torch.complex128)
    t = torch.tensor(th, dtype=F64)
    s = apply_gate(s, RX(t[0]), 0, n)
    s = apply_gate(s, RY(t[1]), 1, n)
    s = apply_cnot(s, 0, 2, n)
    s = apply_gate(s, CRZ(t[2]), (2, 1), n)
    s = apply_gate(s, RZ(t[3]), 2, n)
    s = apply_cz(s, 1, 2, n)
    s = apply_gate(s, Rot(t[0], t[1], t[4]), 1, n)
    s = apply_gate(s, CNOT(torch.complex128), (2, 0), n)
    ref = torch.as_tensor(circuit(), dtype=torch.complex128)
    torch.testing.assert_close(s, ref, atol=1e-12, rtol=0)
    # the (..., 2, 2, 2) layout gives the same amplitudes
    tensor_form = apply_gate(s.reshape(2, 2, 2), RX(t[1]), 1, n)
    torch.testing.assert_close(tensor_form.reshape(8), apply_gate(s, RX(t[1]), 1, n))
    z = expval_z(s, (0, 1, 2), n)
    zz = expval_zz(s, [(0, 2)], n)
    p = probabilities(s, n)
    signs = torch.tensor([1 - 2 * ((b >> 2) & 1) for b in range(8)], dtype=F64)
    torch.testing.assert_close(z[0], (p * signs).sum())
    signs2 = torch.tensor(
        [(1 - 2 * ((b >> 2) & 1)) * (1 - 2 * (b & 1)) for b in range(8)], dtype=F64
    )
    torch.testing.assert_close(zz[0], (p * signs2).sum())
    torch.testing.assert_close(p.sum(), torch.tensor(1.0, dtype=F64))


def test_batched_gates_broadcast_and_bad_wires() -> None:
    states = zero_state(2, (4,), dtype=torch.complex128)
    out = apply_gate(states, RY(torch.linspace(0, math.pi, 4, dtype=F64)), 1, 2)
    torch.testing.assert_close(
        expval_z(out, 1, 2)[:, 0], torch.cos(torch.linspace(0, math.pi, 4, dtype=F64))
    )
    with pytest.raises(ValueError, match="wire 2"):
        apply_gate(states, RX(0.1), 2, 2)
    with pytest.raises(ValueError, match="state must have shape"):
        apply_gate(torch.zeros(3, 5, dtype=torch.complex64), RX(0.1), 0, 2)
    with pytest.raises(ValueError, match="distinct"):
        apply_cnot(states, 1, 1, 2)


# -- hand-computed oracles -----------------------------------------------------------------------
def test_single_qubit_oracles() -> None:
    # RX(x) then RY(w): ⟨Z⟩ = cos(x)·cos(w)
    vqc = VQC(1, 1, encoding="angle", rotations="Y", dtype=F64)
    with torch.no_grad():
        vqc.weights.fill_(0.4)
    x = torch.tensor([[0.0], [0.3], [math.pi / 2], [2.0]], dtype=F64)
    torch.testing.assert_close(vqc(x)[:, 0], torch.cos(x[:, 0]) * math.cos(0.4))
    # RX(x) then RZ(a) RY(b) RZ(c): Bloch vector (0, -sin x, cos x) -> ⟨Z⟩ = cos x cos b - sin x sin a sin b
    vqc = VQC(1, 1, encoding="angle", rotations="ZYZ", dtype=F64)
    a, b, c = 0.7, 1.1, -0.5
    with torch.no_grad():
        vqc.weights.copy_(torch.tensor([a, b, c], dtype=F64).view(1, 1, 3))
    expected = torch.cos(x[:, 0]) * math.cos(b) - torch.sin(x[:, 0]) * math.sin(a) * math.sin(b)
    torch.testing.assert_close(vqc(x)[:, 0], expected)
    # the paper encoding: zero weights and a CNOT ring on |x⟩ computational states
    paper = VQC(4, 1, measure=(0, 1, 2, 3), dtype=F64)
    with torch.no_grad():
        paper.weights.zero_()
    # x1 -> ∞ gives RX(π) on wire 1: |0100⟩; CNOT 0→1, 1→2, 2→3, 3→0 give |0110⟩, |0111⟩, |1111⟩
    out = paper(torch.tensor([0.0, 1e12, 0.0, 0.0], dtype=F64))
    torch.testing.assert_close(out, torch.full((4,), -1.0, dtype=F64), atol=1e-9, rtol=0)
    # x2 = 0.418 gives RX(π) on wire 2: |0010⟩ -> |0011⟩ -> |1011⟩
    out = paper(torch.tensor([0.0, 0.0, 0.418, 0.0], dtype=F64))
    torch.testing.assert_close(
        out, torch.tensor([-1.0, 1.0, -1.0, -1.0], dtype=F64), atol=1e-9, rtol=0
    )


# -- state properties and gradients --------------------------------------------------------------
@pytest.mark.parametrize("reupload", [False, True])
def test_norm_preserved_and_layers_unitary(reupload: bool) -> None:
    torch.manual_seed(0)
    vqc = VQC(
        5, 3, encoding="angle", entangler="cnot_all", n_inputs=3, reupload=reupload, dtype=F64
    )
    psi = vqc.state(torch.randn(6, 3, dtype=F64))
    assert psi.shape == (6, 32)
    torch.testing.assert_close(psi.abs().square().sum(-1), torch.ones(6, dtype=F64))
    mats = fused.layer_matrices(vqc.spec, vqc.engine.consts(vqc.weights), vqc.weights.detach())
    eye = torch.eye(32, dtype=torch.complex128)
    torch.testing.assert_close(mats @ mats.mH, eye.expand_as(mats), atol=1e-12, rtol=0)


@pytest.mark.parametrize(
    "config",
    [
        dict(n_qubits=4, n_layers=2),
        dict(n_qubits=3, n_layers=2, encoding="angle", reupload=True, input_scaling=True),
        dict(
            n_qubits=3,
            n_layers=2,
            encoding="angle",
            n_inputs=2,
            rotations="XY",
            entangler="cz_ring",
        ),
    ],
)
def test_gradcheck(config: dict) -> None:  # type: ignore[type-arg]
    torch.manual_seed(0)
    vqc = VQC(dtype=F64, **config)
    x = torch.randn(2, vqc.n_inputs, dtype=F64, requires_grad=True)
    w = vqc.weights.detach().clone().requires_grad_()
    if vqc.input_weights is None:
        assert torch.autograd.gradcheck(
            lambda w_, x_: vqc.functional(w_, x_), (w, x), fast_mode=True
        )
    else:
        lam = vqc.input_weights.detach().clone().requires_grad_()
        fn = lambda w_, x_, l_: vqc.functional(w_, x_, l_)  # noqa: E731
        assert torch.autograd.gradcheck(fn, (w, x, lam), fast_mode=True)


@pytest.mark.parametrize("limit", [0, 10**9])
def test_hand_written_backward_matches_autograd(
    limit: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both backward strategies (Jacobian-in-forward and chain/Kronecker) against plain autograd."""
    monkeypatch.setattr(engine, "JACOBIAN_LIMIT", limit)
    torch.manual_seed(1)
    for n, n_in, layers, rot in [(4, 4, 3, "ZYZ"), (3, 2, 2, "XY"), (1, 1, 1, "Z")]:
        vqc = VQC(n, layers, encoding="angle", n_inputs=n_in, rotations=rot, dtype=F64)
        c = vqc.engine.consts(vqc.weights)
        w = torch.rand(2, n, layers, len(rot), dtype=F64, requires_grad=True)
        x = torch.randn(2, 3, n_in, dtype=F64, requires_grad=True)
        ours = vqc.functional(w, x)
        assert c.fast is not None
        r = fast.product_state(c.fast, x, x * 0.5)
        total = fused.chain_product(autograd_layer_matrices(vqc, w))
        tr = torch.view_as_real(total[..., :: 2 ** (n - n_in), :]).flatten(-2)
        ref = (r @ tr).square() @ c.readout2
        probe = torch.randn_like(ours)
        g1 = torch.autograd.grad((ours * probe).sum(), [w, x])
        g2 = torch.autograd.grad((ref * probe).sum(), [w, x])
        torch.testing.assert_close(ours, ref, atol=1e-12, rtol=0)
        for a, b in zip(g1, g2, strict=True):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=0)


def autograd_layer_matrices(vqc: VQC, w: torch.Tensor) -> torch.Tensor:
    """The layer matrices M_lᵀ from the per-wire rotation gates by plain autograd, (*P, L, D, D):
    a kron of the 2×2 gates, then the entangler as a matrix (the reference, no shortcuts)."""
    spec = vqc.spec
    gates = {"X": RX, "Y": RY, "Z": RZ}
    ent = torch.eye(spec.dim, dtype=torch.complex128)
    for kind, a, b in spec.gates:
        gate = CNOT(torch.complex128) if kind == "cnot" else CZ(torch.complex128)
        ent = apply_gate(ent.mT, gate, (a, b), spec.n_qubits).mT  # columns are states
    mats = []
    for layer in range(spec.n_layers):
        u = torch.ones(*w.shape[:-3], 1, 1, dtype=torch.complex128)
        for wire in range(spec.n_qubits):
            r = torch.eye(2, dtype=torch.complex128).expand(*w.shape[:-3], 2, 2)
            for j, axis in enumerate(spec.rotations):
                r = gates[axis](w[..., wire, layer, j]) @ r
            u = (u[..., :, None, :, None] * r[..., None, :, None, :]).flatten(-4, -3).flatten(-2)
        m = u @ ent if spec.layer_order == "entangler_first" else ent @ u
        mats.append(m)
    out = torch.stack(mats, -3).mT  # (*P, L, D, D) transposed
    # the real path folds the encoding phase diag((-i)^popcount of the encoded bits) into layer 0
    idx = torch.arange(spec.dim)
    pop = sum((idx >> (spec.n_qubits - 1 - w)) & 1 for w in range(spec.n_inputs))
    phase = torch.tensor([(-1j) ** int(p) for p in pop], dtype=torch.complex128)[:, None]
    return torch.cat([out[..., :1, :, :] * phase, out[..., 1:, :, :]], -3)


# -- light cone ----------------------------------------------------------------------------------
def test_dead_parameters_of_the_paper_circuit() -> None:
    two = VQC(4, 2, measure=(0, 1)).dead_parameters()
    assert two.shape == (4, 2, 3) and two.dtype == torch.bool
    assert int(two.sum()) == 9
    expected = torch.zeros(4, 2, 3, dtype=torch.bool)
    expected[:, 1, 2] = True  # the last RZ of every wire commutes with Z
    expected[2:, 1, :] = True  # wires 2, 3 after the last entangler never reach wires 0, 1
    expected[3, 0, 2] = True  # last layer-1 RZ on wire 3: exact two-sided cone, not "last RZ"
    assert torch.equal(two, expected)
    assert int(VQC(4, 2, measure=(0,)).dead_parameters().sum()) == 12
    assert int(VQC(4, 2, measure=(0, 1, 2, 3)).dead_parameters().sum()) == 4


@pytest.mark.parametrize(
    "config",
    [
        dict(n_qubits=4, n_layers=2, measure=(0, 1)),
        dict(n_qubits=4, n_layers=2, measure=(0,)),
        dict(n_qubits=4, n_layers=3, encoding="angle", measure=(2,), entangler="cnot_chain"),
        dict(
            n_qubits=3,
            n_layers=2,
            encoding="angle",
            measure=(0,),
            rotations="XYZ",
            entangler="cz_chain",
        ),
        dict(n_qubits=4, n_layers=2, encoding="angle", n_inputs=2, measure=(1,), reupload=True),
        dict(n_qubits=3, n_layers=2, encoding="angle", measure=(2,), layer_order="rotations_first"),
    ],
)
def test_dead_parameters_are_exactly_the_zero_gradients(config: dict) -> None:  # type: ignore[type-arg]
    """Dead ⇔ the gradient vanishes identically (checked at random points)."""
    torch.manual_seed(3)
    vqc = VQC(dtype=F64, **config)
    dead = vqc.dead_parameters()
    w = (torch.rand(6, *vqc.weights.shape, dtype=F64) * 2 * math.pi).requires_grad_()
    x = torch.randn(6, 4, vqc.n_inputs, dtype=F64)
    out = vqc.functional(w, x)
    grads = torch.stack(
        [
            torch.autograd.grad(out[..., i].sum(), w, retain_graph=True)[0]
            for i in range(out.shape[-1])
        ]
    )
    max_grad = grads.abs().amax(dim=(0, 1))  # (n, L, k) over outputs and parameter sets
    assert bool((max_grad[dead] < 1e-12).all())
    assert bool((max_grad[~dead] > 1e-6).all())


# -- noise, shots, parameter shift ---------------------------------------------------------------
@pytest.mark.parametrize("reupload", [False, True])
def test_noise_matches_pennylane_default_mixed(reupload: bool) -> None:
    torch.manual_seed(0)
    kw = dict(
        encoding="angle",
        measure=(0, 2),
        dtype=F64,
        depolarizing=0.1,
        readout_error=0.05,
        reupload=reupload,
    )
    ours = VQC(3, 2, **kw)  # type: ignore[arg-type]
    ref = VQC(3, 2, backend="pennylane", device="default.mixed", **kw)  # type: ignore[arg-type]
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(4, 3, dtype=F64)
    a, b = ours(x), ref(x)
    torch.testing.assert_close(a, b, atol=1e-10, rtol=0)
    ga = torch.autograd.grad(a.sum(), ours.weights)[0]
    gb = torch.autograd.grad(b.sum(), ref.weights)[0]
    torch.testing.assert_close(ga, gb, atol=1e-10, rtol=0)


def test_noisy_functional_stacked_equals_loop() -> None:
    torch.manual_seed(0)
    for reupload in (False, True):
        vqc = VQC(
            3,
            2,
            encoding="angle",
            dtype=F64,
            depolarizing=0.05,
            readout_error=0.02,
            reupload=reupload,
        )
        w = torch.rand(3, 3, 2, 3, dtype=F64)
        x = torch.randn(3, 4, 3, dtype=F64)
        loop = torch.stack([vqc.functional(w[a], x[a]) for a in range(3)])
        torch.testing.assert_close(vqc.functional(w, x), loop, atol=1e-12, rtol=0)
        assert vqc(x[0, 0]).shape == (3,)


def test_depolarizing_channel_properties() -> None:
    torch.manual_seed(0)
    psi = torch.randn(8, dtype=torch.complex128)
    psi = psi / psi.norm()
    rho = psi[:, None] * psi.conj()[None, :]
    out = depolarize(rho, 1, 3, 0.3)
    torch.testing.assert_close(torch.trace(out), torch.tensor(1.0 + 0j, dtype=torch.complex128))
    torch.testing.assert_close(out, out.mH)
    full = depolarize(rho, 1, 3, 0.75)  # p = 3/4 fully depolarises the wire
    reduced = full.reshape(2, 2, 2, 2, 2, 2)
    torch.testing.assert_close(reduced[:, 0, :, :, 0, :], reduced[:, 1, :, :, 1, :])
    torch.testing.assert_close(
        reduced[:, 0, :, :, 1, :], torch.zeros_like(reduced[:, 0, :, :, 1, :])
    )
    # readout error damps ⟨Z⟩ by exactly (1 - 2q)
    torch.manual_seed(1)
    clean = VQC(4, 2, measure=(0, 3), dtype=F64)
    noisy = VQC(4, 2, measure=(0, 3), dtype=F64, readout_error=0.2)
    noisy.load_state_dict(clean.state_dict())
    x = torch.randn(5, 4, dtype=F64)
    torch.testing.assert_close(noisy(x), clean(x) * 0.6)


def test_shot_estimates_converge_and_are_seeded() -> None:
    torch.manual_seed(0)
    exact = VQC(4, 2, measure=(0, 1, 2, 3), dtype=F64)
    x = torch.randn(16, 4, dtype=F64)
    target = exact(x).detach()
    for shots in (100, 10_000, 1_000_000):
        sampled = VQC(4, 2, measure=(0, 1, 2, 3), dtype=F64, shots=shots, seed=7)
        sampled.load_state_dict(exact.state_dict())
        est = sampled(x).detach()
        # each estimate has std ≤ 1/sqrt(shots); 64 estimates stay within 5 std (fixed seed)
        assert float((est - target).abs().max()) < 5 / math.sqrt(shots)
        if shots == 100:  # values are multiples of 2/shots
            assert torch.allclose(est * shots / 2, (est * shots / 2).round(), atol=1e-9)
    # same seed, same samples; the gradient is the exact one (straight-through)
    a = VQC(4, 2, dtype=F64, shots=50, seed=3)
    b = VQC(4, 2, dtype=F64, shots=50, seed=3)
    b.load_state_dict(a.state_dict())
    ref = VQC(4, 2, dtype=F64)
    ref.load_state_dict(a.state_dict())
    torch.testing.assert_close(a(x), b(x))
    ga = torch.autograd.grad(a(x).sum(), a.weights)[0]
    gr = torch.autograd.grad(ref(x).sum(), ref.weights)[0]
    torch.testing.assert_close(ga, gr)


def test_sample_counts_is_an_exact_multinomial() -> None:
    gen = torch.Generator().manual_seed(0)
    probs = torch.tensor([[0.5, 0.25, 0.0, 0.25]], dtype=F64).expand(20000, 4)
    counts = sample_counts(probs, 10, gen)
    assert bool((counts.sum(-1) == 10).all()) and bool((counts[:, 2] == 0).all())
    mean = counts.mean(0) / 10
    torch.testing.assert_close(mean, probs[0], atol=0.01, rtol=0)


def test_parameter_shift_equals_backprop_and_counts_calls() -> None:
    torch.manual_seed(0)
    kw = dict(measure=(0, 1), dtype=F64, reupload=True, input_scaling=True)
    shift = VQC(4, 2, gradient="parameter_shift", **kw)  # type: ignore[arg-type]
    back = VQC(4, 2, **kw)  # type: ignore[arg-type]
    back.load_state_dict(shift.state_dict())
    x = torch.randn(6, 4, dtype=F64, requires_grad=True)
    a, b = shift(x), back(x)
    torch.testing.assert_close(a, b, atol=1e-12, rtol=0)
    params_a = [shift.weights, shift.input_weights, x]
    params_b = [back.weights, back.input_weights, x]
    ga = torch.autograd.grad((a**2).sum(), params_a)  # type: ignore[arg-type]
    gb = torch.autograd.grad((b**2).sum(), params_b)  # type: ignore[arg-type]
    for p, q in zip(ga, gb, strict=True):
        torch.testing.assert_close(p, q, atol=1e-10, rtol=0)
    # 6 forward executions + 2·24 shifted weight sets × 6 + 2·(2 blocks × 4 inputs) × 6 angles
    assert shift.circuit_calls == 6 + 2 * 24 * 6 + 2 * 8 * 6
    # stacked parameter sets
    shift.reset_circuit_calls()
    w = torch.rand(3, 4, 2, 3, dtype=F64, requires_grad=True)
    xs = torch.randn(3, 2, 4, dtype=F64)
    ga = torch.autograd.grad(shift.functional(w, xs).sum(), w)[0]
    gb = torch.autograd.grad(back.functional(w, xs).sum(), w)[0]
    torch.testing.assert_close(ga, gb, atol=1e-10, rtol=0)
    assert shift.circuit_calls == 6 + 2 * 24 * 6


def test_output_range() -> None:
    full = VQC(4, 2, measure=(0, 1), dtype=F64).output_range(restarts=2, steps=100)
    torch.testing.assert_close(full[0], torch.full((2,), -1.0, dtype=F64), atol=1e-3, rtol=0)
    torch.testing.assert_close(full[1], torch.full((2,), 1.0, dtype=F64), atol=1e-3, rtol=0)
    capped = VQC(4, 2, measure=(0,), dtype=F64, readout_error=0.1).output_range(
        restarts=2, steps=100
    )
    torch.testing.assert_close(capped[1], torch.tensor([0.8], dtype=F64), atol=1e-3, rtol=0)
    with pytest.raises(ValueError, match="restarts"):
        VQC(4, 2).output_range(restarts=0)
