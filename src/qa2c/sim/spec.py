"""Circuit description and the constant tables the fused simulator needs.

Conventions (the same as PennyLane): wire 0 is the most significant bit of a basis index,
``|b_0 b_1 … b_{n-1}⟩`` ↔ index ``Σ_w b_w·2^(n-1-w)``; ``R_P(θ) = exp(-iθP/2)``.

A layer of the circuit is, for ``layer_order="entangler_first"`` (the QA2C paper),

    entangler (a fixed pattern of CNOT/CZ gates)  →  on every wire w: R_{rot[0]}(w[w,l,0]) … R_{rot[k-1]}(w[w,l,k-1])

and the reverse for ``layer_order="rotations_first"``. The encoding (RX gates, see ``ENCODINGS``)
is applied once before the first layer, or before every layer when ``reupload=True``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

ENCODINGS = ("cartpole_paper", "angle")
ENTANGLERS = ("cnot_ring", "cnot_chain", "cz_ring", "cz_chain", "cnot_all", "none")
LAYER_ORDERS = ("entangler_first", "rotations_first")
PAULI_AXES = "XYZ"
#: The one Pauli table of the package (complex 2×2 numpy matrices).
PAULI: dict[str, np.ndarray] = {
    "I": np.eye(2, dtype=complex),
    "X": np.array([[0, 1], [1, 0]], dtype=complex),
    "Y": np.array([[0, -1j], [1j, 0]], dtype=complex),
    "Z": np.array([[1, 0], [0, -1]], dtype=complex),
}

BasisAction = Callable[[np.ndarray, int, int], tuple[np.ndarray, np.ndarray]]
PauliAction = Callable[[np.ndarray, np.ndarray, int, int], tuple[np.ndarray, np.ndarray]]


@dataclass(frozen=True)
class TwoQubitGate:
    """An entangler gate: everything the simulator, the light cone and PennyLane need of it.

    ``basis(idx, mask_a, mask_b)``: the gate as a signed permutation of basis indices,
    (Gψ)[c] = sign[c]·ψ[perm[c]], with ``mask_a``, ``mask_b`` the bits of wires a and b.
    ``pauli(x, z, mask_a, mask_b)``: the conjugation G·P·G† of the Pauli strings (x, z) (sign-free).
    """

    pennylane: str
    basis: BasisAction
    pauli: PauliAction


def _cnot_basis(idx: np.ndarray, ma: int, mb: int) -> tuple[np.ndarray, np.ndarray]:
    return idx ^ np.where(idx & ma, mb, 0), np.ones(len(idx))


def _cnot_pauli(x: np.ndarray, z: np.ndarray, ma: int, mb: int) -> tuple[np.ndarray, np.ndarray]:
    # X_a -> X_a X_b, Z_b -> Z_a Z_b
    return x ^ np.where(x & ma, mb, 0), z ^ np.where(z & mb, ma, 0)


def _cz_basis(idx: np.ndarray, ma: int, mb: int) -> tuple[np.ndarray, np.ndarray]:
    return idx, 1.0 - 2.0 * (((idx & ma) != 0) & ((idx & mb) != 0))


def _cz_pauli(x: np.ndarray, z: np.ndarray, ma: int, mb: int) -> tuple[np.ndarray, np.ndarray]:
    # X_a -> X_a Z_b, X_b -> Z_a X_b
    return x, z ^ (np.where(x & ma, mb, 0) | np.where(x & mb, ma, 0))


#: The gate registry: every two-qubit gate an entangler may use.
TWO_QUBIT_GATES: dict[str, TwoQubitGate] = {
    "cnot": TwoQubitGate("CNOT", _cnot_basis, _cnot_pauli),
    "cz": TwoQubitGate("CZ", _cz_basis, _cz_pauli),
}


def two_qubit_gate(kind: str) -> TwoQubitGate:
    """The registered gate ``kind``; ValueError for a gate the registry does not know."""
    gate = TWO_QUBIT_GATES.get(kind)
    if gate is None:
        raise ValueError(f"unknown two-qubit gate {kind!r}; registered: {sorted(TWO_QUBIT_GATES)}")
    return gate


#: The QA2C paper's CartPole encoding, RX(θ_i) on wire i: θ_0 = π·x_0/4.8, θ_1 = 2·atan(x_1),
#: θ_2 = π·x_2/0.418, θ_3 = 2·atan(x_3). Stored as (kind, scale): linear θ = scale·x, or atan θ = 2·atan(x).
CARTPOLE_PAPER = (
    ("linear", math.pi / 4.8),
    ("atan", 1.0),
    ("linear", math.pi / 0.418),
    ("atan", 1.0),
)


def entangler_gates(name: str, n_qubits: int) -> list[tuple[str, int, int]]:
    """The ordered two-qubit gates ``(kind, wire_a, wire_b)`` of an entangler pattern.

    ``cnot_ring``: CNOT(0→1), CNOT(1→2), …, CNOT(n-1→0) (for n = 2: CNOT(0→1), CNOT(1→0));
    ``cnot_chain``: CNOT(i→i+1) for i < n-1; ``cz_ring``: CZ(i, i+1 mod n) (for n = 2 a single CZ,
    since CZ is symmetric); ``cz_chain``: CZ(i, i+1); ``cnot_all``: CNOT(i→j) for all i < j in
    lexicographic order; ``none``: no gates. One qubit: always no gates.
    """
    if name not in ENTANGLERS:
        raise ValueError(f"entangler must be one of {ENTANGLERS}, got {name!r}")
    n = n_qubits
    if n < 2 or name == "none":
        return []
    if name == "cnot_ring":
        return [("cnot", i, (i + 1) % n) for i in range(n)]
    if name == "cnot_chain":
        return [("cnot", i, i + 1) for i in range(n - 1)]
    if name == "cz_ring":
        return [("cz", i, (i + 1) % n) for i in range(n if n > 2 else 1)]
    if name == "cz_chain":
        return [("cz", i, i + 1) for i in range(n - 1)]
    return [("cnot", i, j) for i in range(n) for j in range(i + 1, n)]


def bit_table(n_qubits: int) -> np.ndarray:
    """bits[w, b] = value of wire w in basis index b. Shape (n, 2**n), int64."""
    idx = np.arange(2**n_qubits)
    return np.stack([(idx >> (n_qubits - 1 - w)) & 1 for w in range(n_qubits)]).astype(np.int64)


def signed_permutation(
    gates: list[tuple[str, int, int]], n_qubits: int
) -> tuple[np.ndarray, np.ndarray]:
    """The entangler E as a signed permutation: (Eψ)[c] = sign[c]·ψ[perm[c]]. Shapes (D,), (D,)."""
    dim = 2**n_qubits
    idx = np.arange(dim)
    perm, sign = idx.copy(), np.ones(dim)
    for kind, a, b in gates:
        g_perm, g_sign = two_qubit_gate(kind).basis(
            idx, 1 << (n_qubits - 1 - a), 1 << (n_qubits - 1 - b)
        )
        # (G E ψ)[c] = g_sign[c]·(Eψ)[g_perm[c]]
        perm, sign = perm[g_perm], g_sign * sign[g_perm]
    return perm, sign


@dataclass(frozen=True)
class CircuitSpec:
    """A layered variational circuit (see the module docstring)."""

    n_qubits: int
    n_layers: int
    n_inputs: int
    encoding: str
    rotations: str
    entangler: str
    measure: tuple[int, ...]
    reupload: bool = False
    layer_order: str = "entangler_first"
    gates: list[tuple[str, int, int]] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        for name in ("n_qubits", "n_layers", "n_inputs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.n_qubits > 14:
            raise ValueError(
                f"n_qubits must be <= 14 for this statevector simulator, got {self.n_qubits}"
            )
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {self.encoding!r}")
        if self.encoding == "cartpole_paper" and self.n_inputs != 4:
            raise ValueError(
                f"encoding='cartpole_paper' takes n_inputs=4, got n_inputs={self.n_inputs}"
            )
        if self.n_inputs > self.n_qubits:
            raise ValueError(
                f"n_inputs={self.n_inputs} needs one wire per input but n_qubits={self.n_qubits}"
            )
        if (
            not isinstance(self.rotations, str)
            or not self.rotations
            or any(c not in PAULI_AXES for c in self.rotations)
        ):
            raise ValueError(
                f"rotations must be a non-empty string over 'X', 'Y', 'Z' (e.g. 'ZYZ'), got {self.rotations!r}"
            )
        if len(self.rotations) > 6:
            raise ValueError(f"rotations may have at most 6 gates per wire, got {self.rotations!r}")
        if self.layer_order not in LAYER_ORDERS:
            raise ValueError(f"layer_order must be one of {LAYER_ORDERS}, got {self.layer_order!r}")
        if not self.measure:
            raise ValueError("measure must name at least one wire, got ()")
        for w in self.measure:
            if not isinstance(w, int) or isinstance(w, bool) or not 0 <= w < self.n_qubits:
                raise ValueError(
                    f"measure contains wire {w!r}, which does not exist on {self.n_qubits} qubits"
                )
        if len(set(self.measure)) != len(self.measure):
            raise ValueError(f"measure has repeated wires: {self.measure}")
        gates = entangler_gates(self.entangler, self.n_qubits)
        for kind, _, _ in gates:
            two_qubit_gate(kind)  # every gate must be in the registry
        object.__setattr__(self, "gates", gates)

    @property
    def dim(self) -> int:
        return 2**self.n_qubits

    @property
    def n_rot(self) -> int:
        return len(self.rotations)

    @property
    def n_enc(self) -> int:
        """Number of encoding blocks: n_layers with re-uploading, else 1."""
        return self.n_layers if self.reupload else 1

    def encoding_table(self) -> tuple[tuple[str, float], ...]:
        """(kind, scale) per input: the encoding angle is scale·x ("linear") or 2·atan(x) ("atan")."""
        if self.encoding == "cartpole_paper":
            return CARTPOLE_PAPER
        return tuple(("linear", 1.0) for _ in range(self.n_inputs))


def rotation_basis(rotations: str) -> tuple[np.ndarray, np.ndarray]:
    """Tables that turn k angles into the product of k rotation gates with one matmul.

    R_{P_j}(θ) = cos(θ/2)·I - i·sin(θ/2)·P_j, so the product G_{k-1}⋯G_0 is multilinear in the
    (cos, sin) pairs: R = Σ_t (Π_j cs[j, t_j]) · C[t]. Returns the gather index (k, 2**k) into the
    flattened (k, 2) array of (cos, sin) pairs and C as real (2**k, 8): the 4 entries of R
    (row-major), each as interleaved (re, im).
    """
    k = len(rotations)
    combos = np.arange(2**k)
    t_bits = np.stack([(combos >> (k - 1 - j)) & 1 for j in range(k)])  # (k, 2**k)
    gather = (2 * np.arange(k)[:, None] + t_bits).astype(np.int64)
    table = np.zeros((2**k, 4, 2))
    for t in combos:
        mat = np.eye(2, dtype=complex)
        for j, axis in enumerate(rotations):
            gate = np.eye(2, dtype=complex) if t_bits[j, t] == 0 else -1j * PAULI[axis]
            mat = gate @ mat
        flat = mat.reshape(4)
        table[t, :, 0], table[t, :, 1] = flat.real, flat.imag
    return gather, table.reshape(2**k, 8)


@dataclass(frozen=True)
class Tables:
    """Device-independent numpy tables of one CircuitSpec (built once per VQC)."""

    rot_gather: np.ndarray  # (k, 2**k) int
    rot_table: np.ndarray  # (2**k, 8) real
    kron_gather: np.ndarray  # (n, D*D) int: index into (n, 4) per-wire 2×2 entries of layerᵀ
    layer_const: (
        np.ndarray
    )  # (L, D, 1|D) complex: signs (and encoding phase in layer 0, no reupload)
    layer_const_plain: np.ndarray  # the same without the encoding phase
    enc_half_scale: np.ndarray  # (n_in,) real: θ/2 = enc_half_scale·x for "linear" inputs
    enc_atan: np.ndarray  # (n_in,) bool: θ/2 = atan(x) for these inputs
    enc_gather: np.ndarray  # (n_in, 2**n_in) int: index into (n_in, 2) (cos, sin) pairs
    readout2: np.ndarray  # (2D, m) real: ±1 of Z_measure per basis index, interleaved re/im
    enc_signs: np.ndarray  # (n_in, D) real: z_i(b) = 1 - 2 b_i of the encoded wires
    hadamard: np.ndarray  # (D, D) real: unnormalised H^{⊗n} (entries ±1)


def build_tables(spec: CircuitSpec) -> Tables:
    n, dim, n_in = spec.n_qubits, spec.dim, spec.n_inputs
    bits = bit_table(n)  # (n, D)
    perm, sign = signed_permutation(spec.gates, n)
    # Layer matrix M = U·E (entangler first) or E·U; we build its transpose Mᵀ[b', b].
    # U[b, c] = Π_w R_w[b_w, c_w].  E[c, b'] = sign[c]·δ(perm[c] = b').
    rows = np.repeat(np.arange(dim), dim)  # b' (row of Mᵀ)
    cols = np.tile(np.arange(dim), dim)  # b (column of Mᵀ)
    if spec.layer_order == "entangler_first":
        inv = np.argsort(perm)  # c with perm[c] = b'
        # M[b, b'] = U[b, inv[b']]·sign[inv[b']]
        u_row, u_col, row_sign = cols, inv[rows], sign[inv]
        kron = 4 * np.arange(n)[:, None] + 2 * bits[:, u_row] + bits[:, u_col]
        const_rows = row_sign  # indexed by b' = row of Mᵀ
        col_sign = np.ones(dim)
    else:
        # M[b, b'] = sign[b]·U[perm[b], b']
        u_row, u_col = perm[cols], rows
        kron = 4 * np.arange(n)[:, None] + 2 * bits[:, u_row] + bits[:, u_col]
        const_rows = np.ones(dim)
        col_sign = sign  # indexed by b = column of Mᵀ
    if not np.all(col_sign == 1):
        # fold a column sign into the per-wire gather is impossible; apply it on rows of M via const
        # by transposing roles: store as a full (D, D) factor instead.
        layer_const = np.broadcast_to(col_sign[None, None, :], (spec.n_layers, dim, dim)).astype(
            complex
        )
        layer_const = layer_const * const_rows[None, :, None]
    else:
        layer_const = np.broadcast_to(const_rows[None, :, None], (spec.n_layers, dim, 1)).astype(
            complex
        )
    layer_const = np.array(layer_const)
    layer_const_plain = layer_const.copy()
    if not spec.reupload:
        # The RX product state is phase ⊙ r with r real and phase[b] = (-i)^popcount(b) (encoded wires);
        # fold diag(phase) into the first layer: Tᵀ = diag(phase)·M_1ᵀ·…
        phase = (-1j) ** bits[:n_in].sum(0)
        layer_const[0] = layer_const[0] * phase[:, None]
    enc_bits = bit_table(n_in)
    enc_gather = (2 * np.arange(n_in)[:, None] + enc_bits).astype(np.int64)
    z = 1.0 - 2.0 * bits  # (n, D)
    readout = z[list(spec.measure)].T  # (D, m)
    readout2 = np.repeat(readout, 2, axis=0)
    hadamard = np.ones((1, 1))
    for _ in range(n):
        hadamard = np.kron(hadamard, np.array([[1.0, 1.0], [1.0, -1.0]]))
    rot_gather, rot_table = rotation_basis(spec.rotations)
    return Tables(
        rot_gather=rot_gather,
        rot_table=rot_table,
        kron_gather=kron.astype(np.int64),
        layer_const=layer_const,
        layer_const_plain=layer_const_plain,
        enc_half_scale=np.array([sc / 2 for _, sc in spec.encoding_table()]),
        enc_atan=np.array([kind == "atan" for kind, _ in spec.encoding_table()]),
        enc_gather=enc_gather,
        readout2=readout2,
        enc_signs=z[:n_in],
        hadamard=hadamard,
    )
