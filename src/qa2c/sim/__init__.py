"""Batched differentiable statevector simulation in pure PyTorch."""

from qa2c.sim.diagnostics import dead_parameters, gate_sequence
from qa2c.sim.engine import Engine
from qa2c.sim.gates import (
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
    expval_z,
    expval_zz,
    probabilities,
    zero_state,
)
from qa2c.sim.noise import NoiseModel
from qa2c.sim.spec import (
    ENCODINGS,
    ENTANGLERS,
    LAYER_ORDERS,
    PAULI,
    TWO_QUBIT_GATES,
    CircuitSpec,
    entangler_gates,
    two_qubit_gate,
)

__all__ = [
    "CNOT",
    "CRZ",
    "CZ",
    "ENCODINGS",
    "ENTANGLERS",
    "LAYER_ORDERS",
    "PAULI",
    "RX",
    "RY",
    "RZ",
    "TWO_QUBIT_GATES",
    "CircuitSpec",
    "Engine",
    "NoiseModel",
    "Rot",
    "apply_cnot",
    "apply_cz",
    "apply_gate",
    "dead_parameters",
    "entangler_gates",
    "expval_z",
    "expval_zz",
    "gate_sequence",
    "probabilities",
    "two_qubit_gate",
    "zero_state",
]
