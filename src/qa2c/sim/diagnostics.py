"""Which weights can influence the readout (light cone), and which readout values are reachable.

Dead parameters: an exact two-sided Pauli light cone. A Pauli rotation R_P(θ) changes ⟨O⟩ only
through ∂⟨O⟩/∂θ = (i/2)·Tr([P, O']·ρ'), where O' is the observable propagated back (Heisenberg
picture) to just after the gate and ρ' the state propagated forward to the same point. We track,
per point, the *set of Pauli strings* that can carry a non-zero coefficient for generic parameters:
CNOT/CZ map strings to strings; a rotation keeps the strings that commute with P and adds P·Q for
every Q that anticommutes. The start state |0…0⟩ contains only I/Z strings; the observable is Z_m.
A weight is dead iff no string Q of O' anticommutes with P while P·Q appears in ρ'. This is finer
than "after the last entangler" or "the last RZ": in the QA2C circuit with measure=(0, 1) the cone of
Z_0, Z_1 reaches wire 3 of layer 1 only through CNOT(3→0) (as control) and CNOT(2→3) (as target),
which carry Z to Z, so the final RZ of wire 3 in layer 1, w[3, 0, 2], is dead as well: 9 of 24.
Cost: sets of 4**n booleans per gate (fine up to ~9 qubits). Encoding RX gates count as rotations with generic angles.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from qa2c.sim.spec import CircuitSpec, two_qubit_gate

Op = tuple[str, int, int, tuple[int, int, int] | None]  # (kind, wire_a, wire_b, weight index)


def layer_gates(spec: CircuitSpec) -> list[list[Op]]:
    """The gates of every layer in time order (a layer starts with its encoding block, if any).

    Op = ("X", w, -1, None) for an encoding RX, ("cnot"|"cz", a, b, None) for an entangler gate,
    (axis, w, -1, (w, l, k)) for the trainable rotation of weight w[w, l, k].
    """
    layers: list[list[Op]] = []
    for layer in range(spec.n_layers):
        ops: list[Op] = []
        if layer == 0 or spec.reupload:
            ops += [("X", w, -1, None) for w in range(spec.n_inputs)]
        ent: list[Op] = [(kind, a, b, None) for kind, a, b in spec.gates]
        rot: list[Op] = [
            (axis, w, -1, (w, layer, k))
            for w in range(spec.n_qubits)
            for k, axis in enumerate(spec.rotations)
        ]
        ops += ent + rot if spec.layer_order == "entangler_first" else rot + ent
        layers.append(ops)
    return layers


def gate_sequence(spec: CircuitSpec) -> list[Op]:
    """All gates in time order (``layer_gates`` flattened)."""
    return [op for ops in layer_gates(spec) for op in ops]


class _Paulis:
    """Pauli strings on n qubits indexed s = (x << n) | z (sign-free)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.idx = np.arange(4**n, dtype=np.int64)
        self.x, self.z = self.idx >> n, self.idx & (2**n - 1)

    def bit(self, wire: int) -> int:
        return 1 << (self.n - 1 - wire)

    def generator(self, axis: str, wire: int) -> tuple[int, np.ndarray]:
        """(index of P, mask of strings anticommuting with P)."""
        b = self.bit(wire)
        px, pz = {"X": (b, 0), "Y": (b, b), "Z": (0, b)}[axis]
        anti = ((self.x & pz) != 0) ^ ((self.z & px) != 0)
        return (px << self.n) | pz, anti

    def rotate(self, s: np.ndarray, axis: str, wire: int) -> np.ndarray:
        p, anti = self.generator(axis, wire)
        return s | (s & anti)[self.idx ^ p]

    def clifford(self, s: np.ndarray, kind: str, a: int, b: int) -> np.ndarray:
        x, z = two_qubit_gate(kind).pauli(self.x, self.z, self.bit(a), self.bit(b))
        out = np.zeros_like(s)
        out[(x << self.n) | z] = s
        return out


def dead_parameters(spec: CircuitSpec) -> np.ndarray:
    """Bool (n_qubits, n_layers, k): True where the weight cannot influence any measured ⟨Z⟩."""
    pa = _Paulis(spec.n_qubits)
    ops = gate_sequence(spec)
    forward: list[np.ndarray] = []  # state strings just after gate i
    s = pa.x == 0  # |0…0⟩⟨0…0| = Π (I + Z)/2
    for kind, a, b, _ in ops:
        s = pa.rotate(s, kind, a) if kind in "XYZ" else pa.clifford(s, kind, a, b)
        forward.append(s)
    obs = np.zeros(4**spec.n_qubits, dtype=bool)
    for m in spec.measure:
        obs[pa.bit(m)] = True  # Z_m: x = 0, z = bit
    dead = np.ones((spec.n_qubits, spec.n_layers, spec.n_rot), dtype=bool)
    for i in range(len(ops) - 1, -1, -1):
        kind, a, b, index = ops[i]
        if kind in "XYZ":
            if index is not None:
                p, anti = pa.generator(kind, a)
                alive = np.any((obs & anti) & forward[i][pa.idx ^ p])
                dead[index] = not alive
            obs = pa.rotate(obs, kind, a)
        else:
            obs = pa.clifford(obs, kind, a, b)
    return dead


def output_range(
    evaluate: Callable[[Tensor, Tensor], Tensor],
    spec: CircuitSpec,
    like: Tensor,
    restarts: int,
    steps: int,
    seed: int,
) -> tuple[Tensor, Tensor]:
    """Extreme ⟨Z_m⟩ over free weights and free encoding angles by multi-start Adam (float64).

    Returns (low, high), each (n_measure,), in the dtype and device of ``like``.
    """
    for name, value in (("restarts", restarts), ("steps", steps)):
        if not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    m = len(spec.measure)
    gen = torch.Generator().manual_seed(seed)
    n_sets = 2 * m * restarts  # (sign, wire, restart)
    w = (
        torch.rand(
            n_sets, spec.n_qubits, spec.n_layers, spec.n_rot, generator=gen, dtype=torch.float64
        )
        * 2
        * torch.pi
    )
    h = (
        torch.rand(n_sets, 1, spec.n_enc, spec.n_inputs, generator=gen, dtype=torch.float64)
        * torch.pi
    )
    w, h = w.to(like.device).requires_grad_(), h.to(like.device).requires_grad_()
    sign = torch.tensor([1.0, -1.0], dtype=torch.float64, device=like.device)
    sign = sign.repeat_interleave(m * restarts)  # +: minimise, -: maximise
    wire = torch.arange(m, device=like.device).repeat_interleave(restarts).repeat(2)
    opt = torch.optim.Adam([w, h], lr=0.1)
    for _ in range(steps):
        opt.zero_grad()
        out = evaluate(w, h)[:, 0, :]  # (n_sets, m)
        (sign * out.gather(1, wire[:, None])[:, 0]).sum().backward()
        opt.step()
    with torch.no_grad():
        vals = evaluate(w, h)[:, 0, :].gather(1, wire[:, None])[:, 0].view(2, m, restarts)
    low, high = vals[0].min(-1).values, vals[1].max(-1).values
    return low.clamp(-1, 1).to(like.dtype), high.clamp(-1, 1).to(like.dtype)
