"""qa2c.VQC against PennyLane default.qubit, plus the module contract and bad inputs."""

from __future__ import annotations

import math
import sys

import pennylane as qml
import pytest
import torch

from qa2c import VQC

F64 = torch.float64


def paper_reference(n_layers: int, measure: tuple[int, ...]):  # type: ignore[no-untyped-def]
    """The QA2C circuit written out gate by gate in PennyLane (independent of qa2c)."""
    dev = qml.device("default.qubit", wires=4)

    @qml.qnode(dev, interface="torch", diff_method="backprop")
    def circuit(x: torch.Tensor, w: torch.Tensor) -> list[object]:
        qml.RX(math.pi * x[..., 0] / 4.8, wires=0)
        qml.RX(2 * torch.atan(x[..., 1]), wires=1)
        qml.RX(math.pi * x[..., 2] / 0.418, wires=2)
        qml.RX(2 * torch.atan(x[..., 3]), wires=3)
        for j in range(n_layers):
            for i in range(4):
                qml.CNOT(wires=[i, (i + 1) % 4])
            for i in range(4):
                qml.RZ(w[i, j, 0], wires=i)
                qml.RY(w[i, j, 1], wires=i)
                qml.RZ(w[i, j, 2], wires=i)
        return [qml.expval(qml.PauliZ(i)) for i in measure]

    def run(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        return torch.stack(circuit(x, w), dim=-1)

    return run


def generic_reference(vqc: VQC):  # type: ignore[no-untyped-def]
    """Any VQC configuration written out in PennyLane from its documented description."""
    s = vqc.spec
    dev = qml.device("default.qubit", wires=s.n_qubits)
    gate = {"X": qml.RX, "Y": qml.RY, "Z": qml.RZ}
    n = s.n_qubits

    def entangle() -> None:
        if n < 2 or s.entangler == "none":
            return
        if s.entangler == "cnot_ring":
            for i in range(n):
                qml.CNOT(wires=[i, (i + 1) % n])
        elif s.entangler == "cnot_chain":
            for i in range(n - 1):
                qml.CNOT(wires=[i, i + 1])
        elif s.entangler == "cz_ring":
            for i in range(n if n > 2 else 1):
                qml.CZ(wires=[i, (i + 1) % n])
        elif s.entangler == "cz_chain":
            for i in range(n - 1):
                qml.CZ(wires=[i, i + 1])
        elif s.entangler == "cnot_all":
            for i in range(n):
                for j in range(i + 1, n):
                    qml.CNOT(wires=[i, j])
        else:
            raise AssertionError(f"reference lacks entangler {s.entangler}")

    @qml.qnode(dev, interface="torch", diff_method="backprop")
    def circuit(x: torch.Tensor, w: torch.Tensor, lam: torch.Tensor | None) -> list[object]:
        for j in range(s.n_layers):
            if j == 0 or s.reupload:
                for i in range(s.n_inputs):
                    xi = x[..., i] if lam is None else lam[j if s.reupload else 0, i] * x[..., i]
                    qml.RX(xi, wires=i)
            if s.layer_order == "entangler_first":
                entangle()
            for i in range(n):
                for k, axis in enumerate(s.rotations):
                    gate[axis](w[i, j, k], wires=i)
            if s.layer_order == "rotations_first":
                entangle()
        return [qml.expval(qml.PauliZ(i)) for i in s.measure]

    def run(x: torch.Tensor, w: torch.Tensor, lam: torch.Tensor | None = None) -> torch.Tensor:
        return torch.stack(circuit(x, w, lam), dim=-1)

    return run


@pytest.mark.parametrize("n_layers", [2, 4])
@pytest.mark.parametrize("measure", [(0, 1, 2, 3), (0, 1)])
def test_paper_circuit_matches_pennylane(n_layers: int, measure: tuple[int, ...]) -> None:
    torch.manual_seed(n_layers)
    vqc = VQC(4, n_layers, measure=measure, dtype=F64)
    ref = paper_reference(n_layers, measure)
    x = torch.randn(7, 4, dtype=F64) * torch.tensor([2.4, 1.0, 0.2, 1.0], dtype=F64)
    w = vqc.weights.detach().clone().requires_grad_()
    ours = vqc(x)
    theirs = ref(x, w)
    assert ours.shape == (7, len(measure))
    torch.testing.assert_close(ours, theirs, atol=1e-10, rtol=0)
    probe = torch.randn_like(ours)
    (g_ours,) = torch.autograd.grad((ours * probe).sum(), vqc.weights)
    (g_theirs,) = torch.autograd.grad((theirs * probe).sum(), w)
    torch.testing.assert_close(g_ours, g_theirs, atol=1e-10, rtol=0)
    # unbatched input
    torch.testing.assert_close(vqc(x[0]), ref(x[0], w).detach(), atol=1e-10, rtol=0)


CONFIGS = [
    dict(n_qubits=1, n_layers=3, rotations="ZYZ", entangler="cnot_ring"),
    dict(n_qubits=2, n_layers=1, rotations="XY", entangler="cnot_ring"),
    dict(n_qubits=3, n_layers=6, rotations="Y", entangler="cz_ring", layer_order="rotations_first"),
    dict(n_qubits=5, n_layers=2, rotations="XYZ", entangler="cnot_all", n_inputs=3),
    dict(
        n_qubits=4,
        n_layers=3,
        rotations="ZY",
        entangler="cnot_chain",
        reupload=True,
        input_scaling=True,
    ),
    dict(n_qubits=6, n_layers=2, rotations="ZYZ", entangler="cz_chain", reupload=True, n_inputs=4),
    dict(n_qubits=8, n_layers=1, rotations="ZYZ", entangler="cnot_ring"),
]


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: f"{c['n_qubits']}q{c['n_layers']}L")
def test_random_circuits_match_pennylane(config: dict) -> None:  # type: ignore[type-arg]
    torch.manual_seed(config["n_qubits"])
    n = config["n_qubits"]
    measure = tuple(range(0, n, 2)) if n > 2 else tuple(range(n))
    vqc = VQC(encoding="angle", measure=measure, dtype=F64, **config)
    if vqc.input_weights is not None:
        with torch.no_grad():
            vqc.input_weights.uniform_(0.5, 1.5)
    ref = generic_reference(vqc)
    x = torch.randn(3, vqc.n_inputs, dtype=F64, requires_grad=True)
    w = vqc.weights.detach().clone().requires_grad_()
    lam = None if vqc.input_weights is None else vqc.input_weights.detach().clone().requires_grad_()
    ours, theirs = vqc(x), ref(x, w, lam)
    torch.testing.assert_close(ours, theirs, atol=1e-10, rtol=0)
    probe = torch.randn_like(ours)
    params = [p for p in (vqc.weights, vqc.input_weights) if p is not None]
    g_ours = torch.autograd.grad((ours * probe).sum(), [*params, x])
    g_theirs = torch.autograd.grad(
        (theirs * probe).sum(), [p for p in (w, lam) if p is not None] + [x]
    )
    for a, b in zip(g_ours, g_theirs, strict=True):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=0)


def test_pennylane_backend_matches_torch_backend() -> None:
    torch.manual_seed(0)
    a = VQC(4, 2, measure=(0, 1), dtype=F64, reupload=True, input_scaling=True)
    b = VQC(4, 2, measure=(0, 1), dtype=F64, reupload=True, input_scaling=True, backend="pennylane")
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 5, 4, dtype=F64)
    w = torch.rand(2, 4, 2, 3, dtype=F64) * 6
    torch.testing.assert_close(a.functional(w, x), b.functional(w, x), atol=1e-10, rtol=0)
    torch.testing.assert_close(a(x), b(x), atol=1e-10, rtol=0)
    assert b.circuit_calls == 20


def test_functional_stacked_equals_loop_and_broadcasts() -> None:
    torch.manual_seed(1)
    vqc = VQC(4, 2, measure=(0, 1, 2, 3), dtype=F64, reupload=True, input_scaling=True)
    w = torch.rand(5, 4, 2, 3, dtype=F64) * 2 * math.pi
    lam = torch.rand(5, 2, 4, dtype=F64) + 0.5
    x = torch.randn(5, 6, 4, dtype=F64)
    out = vqc.functional(w, x, lam)
    assert out.shape == (5, 6, 4)
    loop = torch.stack([vqc.functional(w[a], x[a], lam[a]) for a in range(5)])
    torch.testing.assert_close(out, loop, atol=1e-12, rtol=0)
    # unbatched input, 40 agents × 1 observation, and 1 parameter set × a batch
    assert vqc(x[0, 0]).shape == (4,)
    assert vqc.functional(w[0], x[0, 0], lam[0]).shape == (4,)
    assert vqc.functional(w, x[:, :1]).shape == (5, 1, 4)
    assert vqc.functional(w[0], x).shape == (5, 6, 4)
    plain = VQC(4, 2, dtype=F64)
    out = plain.functional(w, x)
    loop = torch.stack([plain.functional(w[a], x[a]) for a in range(5)])
    torch.testing.assert_close(out, loop, atol=1e-12, rtol=0)
    # the stacked gradient is the per-agent gradient
    ws = w.clone().requires_grad_()
    plain.functional(ws, x).sum().backward()
    w2 = w[2].clone().requires_grad_()
    plain.functional(w2, x[2]).sum().backward()
    torch.testing.assert_close(ws.grad[2], w2.grad, atol=1e-12, rtol=0)  # type: ignore[index]


def test_module_contract() -> None:
    torch.manual_seed(0)
    vqc = VQC(n_qubits=4, n_layers=2, measure=(0, 1, 2, 3))
    assert isinstance(vqc.weights, torch.nn.Parameter)
    assert vqc.weights.shape == (4, 2, 3) and vqc.weights.dtype == torch.float32
    w = vqc.weights.detach()
    assert float(w.min()) >= 0 and float(w.max()) < 2 * math.pi
    assert vqc.input_weights is None
    assert (vqc.n_inputs, vqc.n_qubits, vqc.n_layers, vqc.measure) == (4, 4, 2, (0, 1, 2, 3))
    assert sum(p.numel() for p in vqc.parameters()) == 24
    out = vqc(torch.randn(3, 5, 4))
    assert out.shape == (3, 5, 4) and out.dtype == torch.float32
    assert float(out.detach().abs().max()) <= 1.0 + 1e-6
    assert vqc.circuit_calls == 15
    assert vqc.reset_circuit_calls() == 15 and vqc.circuit_calls == 0
    scaled = VQC(4, 3, encoding="angle", reupload=True, input_scaling=True)
    assert scaled.input_weights is not None and scaled.input_weights.shape == (3, 4)
    assert VQC(4, 3, encoding="angle", input_scaling=True).input_weights.shape == (1, 4)  # type: ignore[union-attr]
    assert VQC(3, 1, rotations="Y", encoding="angle").weights.shape == (3, 1, 1)


def test_float32_close_to_float64_and_input_dtype_is_converted() -> None:
    torch.manual_seed(0)
    a, b = VQC(4, 3), VQC(4, 3, dtype=F64)
    b.load_state_dict({"weights": a.weights.detach().double()})
    x = torch.randn(16, 4, dtype=F64)
    torch.testing.assert_close(a(x).double(), b(x), atol=1e-5, rtol=0)


def test_bad_inputs_raise_value_errors() -> None:
    vqc = VQC(4, 2, measure=(0, 1))
    with pytest.raises(ValueError, match="n_inputs"):
        vqc(torch.randn(3, 5))
    with pytest.raises(ValueError, match="non-finite"):
        vqc(torch.tensor([[0.0, float("nan"), 0.0, 0.0]]))
    with pytest.raises(ValueError, match="non-finite"):
        vqc(torch.tensor([0.0, 0.0, float("inf"), 0.0]))
    with pytest.raises(ValueError, match="wire 4"):
        VQC(4, 2, measure=(0, 4))
    with pytest.raises(ValueError, match="rotations"):
        VQC(4, 2, rotations="ZWZ")
    with pytest.raises(ValueError, match="encoding"):
        VQC(4, 2, encoding="amplitude")
    with pytest.raises(ValueError, match="entangler"):
        VQC(4, 2, entangler="swap_ring")
    with pytest.raises(ValueError, match="weights must have shape"):
        vqc.functional(torch.rand(4, 3, 3), torch.randn(2, 4))
    with pytest.raises(ValueError, match="input_weights"):
        VQC(4, 2, input_scaling=True).functional(
            torch.rand(4, 2, 3), torch.randn(2, 4), torch.ones(2, 4)
        )
    with pytest.raises(ValueError, match="stacked weights"):
        vqc.functional(torch.rand(3, 4, 2, 3), torch.randn(3, 4))
    with pytest.raises(ValueError, match="n_qubits=3"):
        VQC(3, 2)
    with pytest.raises(ValueError, match="n_inputs"):
        VQC(3, 2, encoding="angle", n_inputs=4)
    with pytest.raises(ValueError, match="backend"):
        VQC(4, 2, backend="qiskit")
    with pytest.raises(ValueError, match="backend='pennylane'"):
        VQC(4, 2, device="cuda")
    with pytest.raises(ValueError, match="gradient"):
        VQC(4, 2, gradient="adjoint")
    with pytest.raises(ValueError, match="dtype"):
        VQC(4, 2, dtype=torch.float16)
    with pytest.raises(ValueError, match="shots"):
        VQC(4, 2, shots=0)
    with pytest.raises(ValueError, match="depolarizing"):
        VQC(4, 2, depolarizing=1.5)
    with pytest.raises(ValueError, match="n_layers"):
        VQC(4, 0)
    with pytest.raises(ValueError, match="repeated"):
        VQC(4, 2, measure=(1, 1))
    with pytest.raises(TypeError, match="weights"):
        vqc.functional([[0.0]], torch.randn(4))  # type: ignore[arg-type]


def test_missing_pennylane_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pennylane", None)
    with pytest.raises(ImportError, match=r"pip install 'ntl-qa2c\[pennylane\]'"):
        VQC(4, 2, backend="pennylane")


def test_any_pennylane_device_name() -> None:
    torch.manual_seed(0)
    a = VQC(3, 2, encoding="angle", dtype=F64)
    b = VQC(3, 2, encoding="angle", dtype=F64, backend="pennylane", device="default.mixed")
    b.load_state_dict(a.state_dict())
    x = torch.randn(4, 3, dtype=F64)
    torch.testing.assert_close(a(x), b(x), atol=1e-10, rtol=0)
    with pytest.raises(ValueError, match=r"no\.such\.device"):
        VQC(3, 2, encoding="angle", backend="pennylane", device="no.such.device")


@pytest.mark.parametrize(
    "kwargs",
    [
        {},  # the closed-form fast path
        {"reupload": True, "input_scaling": True},  # the general fused path
        {"gradient": "parameter_shift"},
        {"depolarizing": 0.05, "readout_error": 0.1},
        {"backend": "pennylane"},
    ],
)
def test_prob0_output_is_the_probability_of_reading_zero(kwargs: dict) -> None:  # type: ignore[type-arg]
    """output="prob0" gives P(wire i reads 0) = (1 + <Z_i>)/2 on every path, with its gradient;
    on the paper circuit it equals PennyLane's marginal probability of 0 (qml.probs)."""
    torch.manual_seed(3)
    z_vqc = VQC(4, 2, measure=(0, 2, 3), dtype=F64, **kwargs)
    p_vqc = VQC(4, 2, measure=(0, 2, 3), dtype=F64, output="prob0", **kwargs)
    p_vqc.load_state_dict(z_vqc.state_dict())
    x = torch.randn(5, 4, dtype=F64) * 0.5
    p, z = p_vqc(x), z_vqc(x)
    torch.testing.assert_close(p, (1 + z) / 2, atol=1e-12, rtol=0)
    assert bool((p >= -1e-12).all() and (p <= 1 + 1e-12).all())
    probe = torch.randn_like(p)
    (g_p,) = torch.autograd.grad((p * probe).sum(), p_vqc.weights)
    (g_z,) = torch.autograd.grad((z * probe / 2).sum(), z_vqc.weights)
    torch.testing.assert_close(g_p, g_z, atol=1e-10, rtol=0)
    if not kwargs:
        w = p_vqc.weights.detach()
        dev = qml.device("default.qubit", wires=4)

        @qml.qnode(dev, interface="torch")
        def marginals(xi: torch.Tensor) -> list[object]:
            for i, angle in enumerate(
                [
                    math.pi * xi[0] / 4.8,
                    2 * torch.atan(xi[1]),
                    math.pi * xi[2] / 0.418,
                    2 * torch.atan(xi[3]),
                ]
            ):
                qml.RX(angle, wires=i)
            for j in range(2):
                for i in range(4):
                    qml.CNOT(wires=[i, (i + 1) % 4])
                for i in range(4):
                    qml.Rot(w[i, j, 0], w[i, j, 1], w[i, j, 2], wires=i)
            return [qml.probs(wires=i) for i in (0, 2, 3)]

        ref = torch.stack([torch.stack([q[0] for q in marginals(xi)]) for xi in x])
        torch.testing.assert_close(p.detach(), ref, atol=1e-10, rtol=0)


def test_unknown_output_is_rejected() -> None:
    with pytest.raises(ValueError, match=r"output must be one of .*'probs'"):
        VQC(4, 2, output="probs")
