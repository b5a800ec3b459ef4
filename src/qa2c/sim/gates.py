"""Gates as batched matrices, gate application on statevectors, and readouts.

A state is a complex tensor (..., 2**n) (wire 0 = most significant bit, as in PennyLane) or the
same amplitudes as (..., 2, …, 2) with n trailing axes; every function returns the layout it was
given. Gate angles broadcast: ``RX(theta)`` with theta (...) gives matrices (..., 2, 2), and
``apply_gate`` broadcasts the matrix batch against the state batch. These are the building blocks
for custom circuits; ``qa2c.VQC`` uses the fused simulator in ``qa2c.sim.fused`` instead.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "CNOT",
    "CRZ",
    "CZ",
    "RX",
    "RY",
    "RZ",
    "Rot",
    "apply_cnot",
    "apply_cz",
    "apply_gate",
    "expval_z",
    "expval_zz",
    "probabilities",
    "zero_state",
]


def _complex(t: Tensor) -> torch.dtype:
    return torch.complex128 if t.dtype == torch.float64 else torch.complex64


def _angle(theta: Tensor | float) -> Tensor:
    t = torch.as_tensor(theta)
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    return t


def RX(theta: Tensor | float) -> Tensor:
    """exp(-iθX/2). theta (...) -> (..., 2, 2) complex."""
    t = _angle(theta)
    c, s = torch.cos(t / 2).to(_complex(t)), torch.sin(t / 2).to(_complex(t))
    return torch.stack([torch.stack([c, -1j * s], -1), torch.stack([-1j * s, c], -1)], -2)


def RY(theta: Tensor | float) -> Tensor:
    """exp(-iθY/2). theta (...) -> (..., 2, 2) complex."""
    t = _angle(theta)
    c, s = torch.cos(t / 2).to(_complex(t)), torch.sin(t / 2).to(_complex(t))
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2)


def RZ(theta: Tensor | float) -> Tensor:
    """exp(-iθZ/2). theta (...) -> (..., 2, 2) complex."""
    t = _angle(theta)
    phase = torch.polar(torch.ones_like(t), -t / 2)
    zero = torch.zeros_like(phase)
    return torch.stack([torch.stack([phase, zero], -1), torch.stack([zero, phase.conj()], -1)], -2)


def Rot(phi: Tensor | float, theta: Tensor | float, omega: Tensor | float) -> Tensor:
    """PennyLane's Rot: RZ(ω)·RY(θ)·RZ(φ). (..., 2, 2) complex."""
    return RZ(omega) @ RY(theta) @ RZ(phi)


def CNOT(dtype: torch.dtype = torch.complex64) -> Tensor:
    """CNOT on (control, target). (4, 4)."""
    return torch.tensor([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 0, 1], [0, 0, 1, 0]], dtype=dtype)


def CZ(dtype: torch.dtype = torch.complex64) -> Tensor:
    """Controlled-Z. (4, 4)."""
    return torch.diag(torch.tensor([1, 1, 1, -1], dtype=dtype))


def CRZ(theta: Tensor | float) -> Tensor:
    """Controlled RZ(θ) on (control, target). theta (...) -> (..., 4, 4) complex."""
    rz = RZ(theta)
    out = torch.zeros(*rz.shape[:-2], 4, 4, dtype=rz.dtype, device=rz.device)
    out[..., 0, 0] = 1
    out[..., 1, 1] = 1
    out[..., 2:, 2:] = rz
    return out


def zero_state(
    n_qubits: int,
    batch_shape: tuple[int, ...] = (),
    dtype: torch.dtype = torch.complex64,
    device: torch.device | str | None = None,
) -> Tensor:
    """|0…0⟩ with shape (*batch_shape, 2**n_qubits)."""
    _check_n(n_qubits)
    state = torch.zeros(*batch_shape, 2**n_qubits, dtype=dtype, device=device)
    state[..., 0] = 1
    return state


def _check_n(n_qubits: int) -> None:
    if not isinstance(n_qubits, int) or isinstance(n_qubits, bool) or n_qubits < 1:
        raise ValueError(f"n_qubits must be a positive int, got {n_qubits!r}")


def _as_tensor_form(state: Tensor, n_qubits: int) -> tuple[Tensor, bool]:
    """(state as (..., 2, …, 2), whether the input was flat)."""
    _check_n(n_qubits)
    if not isinstance(state, Tensor):
        raise TypeError(f"state must be a torch.Tensor, got {type(state).__name__}")
    if (
        state.ndim >= 1
        and state.shape[-1] == 2**n_qubits
        and (n_qubits == 1 or state.shape[-1] != 2)
    ):
        return state.reshape(*state.shape[:-1], *([2] * n_qubits)), True
    if state.ndim >= n_qubits and all(s == 2 for s in state.shape[state.ndim - n_qubits :]):
        return state, False
    raise ValueError(
        f"state must have shape (..., {2**n_qubits}) or (..., {', '.join(['2'] * n_qubits)}) "
        f"for n_qubits={n_qubits}, got {tuple(state.shape)}"
    )


def _check_wires(wires: tuple[int, ...], n_qubits: int) -> None:
    for w in wires:
        if not isinstance(w, int) or isinstance(w, bool) or not 0 <= w < n_qubits:
            raise ValueError(f"wire {w!r} does not exist on {n_qubits} qubits")
    if len(set(wires)) != len(wires):
        raise ValueError(f"wires must be distinct, got {wires}")


def apply_gate(
    state: Tensor, matrix: Tensor, wires: int | tuple[int, ...], n_qubits: int
) -> Tensor:
    """Apply a (..., 2**k, 2**k) gate to ``wires`` (k of them, first wire = most significant)."""
    wires_t = (wires,) if isinstance(wires, int) else tuple(wires)
    _check_wires(wires_t, n_qubits)
    t, flat = _as_tensor_form(state, n_qubits)
    d = 2 ** len(wires_t)
    if matrix.ndim < 2 or tuple(matrix.shape[-2:]) != (d, d):
        raise ValueError(
            f"matrix for {len(wires_t)} wire(s) must be (..., {d}, {d}), got {tuple(matrix.shape)}"
        )
    batch = t.ndim - n_qubits
    axes = [batch + w for w in wires_t]
    moved = t.movedim(axes, list(range(t.ndim - len(wires_t), t.ndim)))  # wires last
    rest = moved.shape[: -len(wires_t)]
    vec = moved.reshape(*rest, d)
    mat = matrix.to(device=vec.device, dtype=vec.dtype)
    # broadcast the matrix batch (..., d, d) against the state batch (first `batch` dims)
    mat = mat.reshape(*mat.shape[:-2], *([1] * (n_qubits - len(wires_t))), d, d)
    out = (mat @ vec.unsqueeze(-1)).squeeze(-1)
    out = out.reshape(*out.shape[:-1], *([2] * len(wires_t)))
    out = out.movedim(
        list(range(out.ndim - len(wires_t), out.ndim)), [out.ndim - n_qubits + w for w in wires_t]
    )
    return out.reshape(*out.shape[: out.ndim - n_qubits], 2**n_qubits) if flat else out


def apply_cnot(state: Tensor, control: int, target: int, n_qubits: int) -> Tensor:
    """CNOT as a permutation of amplitudes (no matrix product)."""
    _check_wires((control, target), n_qubits)
    t, flat = _as_tensor_form(state, n_qubits)
    batch = t.ndim - n_qubits
    flipped = t.narrow(batch + control, 1, 1).flip(batch + target)
    out = torch.cat([t.narrow(batch + control, 0, 1), flipped], dim=batch + control)
    return out.reshape(*out.shape[:batch], 2**n_qubits) if flat else out


def apply_cz(state: Tensor, a: int, b: int, n_qubits: int) -> Tensor:
    """CZ as a sign flip of the |…1…1…⟩ amplitudes."""
    _check_wires((a, b), n_qubits)
    t, flat = _as_tensor_form(state, n_qubits)
    batch = t.ndim - n_qubits
    sign = torch.ones([2] * n_qubits, dtype=t.real.dtype, device=t.device)
    idx: list[slice | int] = [slice(None)] * n_qubits
    idx[a], idx[b] = 1, 1
    sign[tuple(idx)] = -1
    out = t * sign
    return out.reshape(*out.shape[:batch], 2**n_qubits) if flat else out


def probabilities(state: Tensor, n_qubits: int) -> Tensor:
    """|amplitude|² per basis state. (..., 2**n) real."""
    t, _ = _as_tensor_form(state, n_qubits)
    p = t.real.square() + t.imag.square() if t.is_complex() else t.square()
    return p.reshape(*p.shape[: p.ndim - n_qubits], 2**n_qubits)


def _z_signs(n_qubits: int, wires: tuple[int, ...], like: Tensor) -> Tensor:
    idx = torch.arange(2**n_qubits, device=like.device)
    cols = [1 - 2 * ((idx >> (n_qubits - 1 - w)) & 1) for w in wires]
    return torch.stack(cols, -1).to(like.dtype)  # (2**n, len(wires))


def expval_z(state: Tensor, wires: int | tuple[int, ...], n_qubits: int) -> Tensor:
    """⟨Z_w⟩ for each wire. (..., len(wires))."""
    wires_t = (wires,) if isinstance(wires, int) else tuple(wires)
    _check_wires(wires_t, n_qubits)
    p = probabilities(state, n_qubits)
    return p @ _z_signs(n_qubits, wires_t, p)


def expval_zz(
    state: Tensor, pairs: list[tuple[int, int]] | tuple[tuple[int, int], ...], n_qubits: int
) -> Tensor:
    """⟨Z_a Z_b⟩ for each pair (a, b). (..., len(pairs))."""
    p = probabilities(state, n_qubits)
    cols = []
    for pair in pairs:
        if len(pair) != 2:
            raise ValueError(f"pairs must be (a, b) tuples, got {pair!r}")
        _check_wires(tuple(pair), n_qubits)
        signs = _z_signs(n_qubits, tuple(pair), p)
        cols.append(signs[:, 0] * signs[:, 1])
    if not cols:
        raise ValueError("pairs must not be empty")
    return p @ torch.stack(cols, -1)
