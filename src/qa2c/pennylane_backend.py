"""The VQC circuit through PennyLane (optional extra ``pennylane``): any PennyLane device.

The circuit is built gate by gate exactly as ``qa2c.sim.diagnostics.gate_sequence`` lists it, with
PennyLane's parameter broadcasting over the flattened batch of (parameter set, input) pairs.
Noise uses ``DepolarizingChannel`` after every layer and ``BitFlip`` before measurement (needs a
mixed-state device such as ``default.mixed``).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from qa2c.sim.diagnostics import layer_gates
from qa2c.sim.noise import NoiseModel
from qa2c.sim.spec import CircuitSpec

_DIFF = {"backprop": "backprop", "parameter_shift": "parameter-shift"}


def _import_pennylane() -> Any:
    try:
        import pennylane as qml
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "backend='pennylane' needs PennyLane: pip install 'ntl-qa2c[pennylane]'"
        ) from err
    return qml


class PennyLaneCircuit:
    """Callable (weights (*P, n, L, k), half-angles (*X, n_enc, n_in)) -> ⟨Z⟩ (*O, m)."""

    def __init__(
        self,
        spec: CircuitSpec,
        noise: NoiseModel,
        device: str = "default.qubit",
        gradient: str = "backprop",
    ) -> None:
        qml = _import_pennylane()
        if not isinstance(device, str):
            raise ValueError(f"device must be a PennyLane device name, got {device!r}")
        self.spec, self.noise = spec, noise
        try:
            dev = qml.device(device, wires=spec.n_qubits)
        except Exception as err:
            raise ValueError(f"PennyLane device {device!r} could not be created: {err}") from err
        layers = layer_gates(spec)
        gates = {"X": qml.RX, "Y": qml.RY, "Z": qml.RZ}

        def circuit(weights: Tensor, half: Tensor) -> list[Any]:
            for layer, ops in enumerate(layers):
                block = layer if spec.reupload else 0
                for kind, a, b, index in ops:
                    if kind == "cnot":
                        qml.CNOT(wires=[a, b])
                    elif kind == "cz":
                        qml.CZ(wires=[a, b])
                    elif index is None:
                        qml.RX(2 * half[..., block, a], wires=a)
                    else:
                        gates[kind](weights[..., index[0], index[1], index[2]], wires=a)
                if noise.depolarizing > 0:
                    for w in range(spec.n_qubits):
                        qml.DepolarizingChannel(noise.depolarizing, wires=w)
            if noise.readout_error > 0:
                for w in spec.measure:
                    qml.BitFlip(noise.readout_error, wires=w)
            return [qml.expval(qml.PauliZ(w)) for w in spec.measure]

        qnode = qml.QNode(circuit, dev, interface="torch", diff_method=_DIFF[gradient])
        if noise.shots is not None:
            qnode = qml.set_shots(qnode, shots=noise.shots)
        self.qnode = qnode

    def __call__(self, weights: Tensor, half: Tensor) -> Tensor:
        n_p = weights.ndim - 3
        if n_p == 0:
            batch: tuple[int, ...] = tuple(half.shape[:-2])
            w = weights.expand(*batch, *weights.shape)
        else:
            p_shape = torch.broadcast_shapes(weights.shape[:-3], half.shape[:n_p])
            batch = (*p_shape, *half.shape[n_p:-2])
            extra = len(batch) - n_p
            w = weights.reshape(*weights.shape[:-3], *([1] * extra), *weights.shape[-3:])
            w = w.expand(*batch, *weights.shape[-3:])
        h = half.expand(*batch, *half.shape[-2:])
        w_flat = w.reshape(-1, *w.shape[-3:])  # (N, n, L, k)
        h_flat = h.reshape(-1, *h.shape[-2:])  # (N, n_enc, n_in)
        if w_flat.shape[0] == 1:
            res = self.qnode(w_flat[0], h_flat[0])
            out = torch.stack([torch.as_tensor(r) for r in res], dim=-1).unsqueeze(0)
        else:
            res = self.qnode(w_flat, h_flat)
            out = torch.stack([torch.as_tensor(r) for r in res], dim=-1)  # (N, m)
        return out.to(weights.dtype).reshape(*batch, len(self.spec.measure))
