"""The VQC circuit through PennyLane (optional extra ``pennylane``): any PennyLane device.

The circuit is built gate by gate exactly as ``qa2c.sim.diagnostics.gate_sequence`` lists it (the
two-qubit gates through the registry ``qa2c.sim.spec.TWO_QUBIT_GATES``), with PennyLane's
parameter broadcasting over the flattened batch of (parameter set, input) pairs. Noise uses
``DepolarizingChannel`` after every layer and ``BitFlip`` before measurement (needs a mixed-state
device such as ``default.mixed``).

Values are always computed in float64 by a non-differentiable QNode (shots sampled if set), and the
gradients by one of three rules, each for any batch size on any device:

* ``gradient="parameter_shift"``: this package's shift rule (``qa2c.sim.shift``) over the device:
  every shifted circuit is an execution (counted), sampled with shots, as on hardware;
* ``gradient="backprop"`` on a device that back-propagates (``default.qubit``, ``default.mixed``):
  PennyLane's backprop through the exact state (differentiable to any order); with shots the value
  is the shot estimate and the gradient the exact one (straight-through, as the torch backend);
* ``gradient="backprop"`` on any other device (``lightning.qubit``, …): the exact, shot-free
  shift rule on the device (first order: a second derivative raises).

(PennyLane's own torch interface returns float32 on ``lightning.qubit`` and a zero Hessian through
its adjoint method; neither is used here.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from qa2c.sim.diagnostics import layer_gates
from qa2c.sim.noise import NoiseModel
from qa2c.sim.shift import parameter_shift
from qa2c.sim.spec import CircuitSpec, two_qubit_gate


def _import_pennylane() -> Any:
    try:
        import pennylane as qml
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "backend='pennylane' needs PennyLane: pip install 'ntl-qa2c[pennylane]'"
        ) from err
    return qml


def _no_calls(calls: int) -> None:
    """Gradient work of gradient='backprop' is not billed as circuit executions."""


class PennyLaneCircuit:
    """Callable (weights (*P, n, L, k), half-angles (*X, B, n_enc, n_in)) -> ⟨Z⟩ (*P|X, B, m),
    batch dims broadcast like matmul (as the torch kernels). Circuit executions are reported to
    ``on_calls``."""

    def __init__(
        self,
        spec: CircuitSpec,
        noise: NoiseModel,
        device: str = "default.qubit",
        gradient: str = "backprop",
        on_calls: Callable[[int], None] = _no_calls,
    ) -> None:
        qml = _import_pennylane()
        if not isinstance(device, str):
            raise ValueError(f"device must be a PennyLane device name, got {device!r}")
        self.spec, self.noise, self.gradient, self.on_calls = spec, noise, gradient, on_calls
        try:
            dev = qml.device(device, wires=spec.n_qubits)
        except Exception as err:
            raise ValueError(f"PennyLane device {device!r} could not be created: {err}") from err
        layers = layer_gates(spec)
        rotations = {"X": qml.RX, "Y": qml.RY, "Z": qml.RZ}
        entanglers = {
            kind: getattr(qml, two_qubit_gate(kind).pennylane) for kind, _, _ in spec.gates
        }

        def circuit(weights: Any, half: Any) -> list[Any]:
            for layer, ops in enumerate(layers):
                block = layer if spec.reupload else 0
                for kind, a, b, index in ops:
                    if kind in entanglers:
                        entanglers[kind](wires=[a, b])
                    elif index is None:
                        qml.RX(2 * half[..., block, a], wires=a)
                    else:
                        rotations[kind](weights[..., index[0], index[1], index[2]], wires=a)
                if noise.depolarizing > 0:
                    for w in range(spec.n_qubits):
                        qml.DepolarizingChannel(noise.depolarizing, wires=w)
            if noise.readout_error > 0:
                for w in spec.measure:
                    qml.BitFlip(noise.readout_error, wires=w)
            return [qml.expval(qml.PauliZ(w)) for w in spec.measure]

        exact = qml.QNode(circuit, dev, interface="numpy", diff_method=None)
        self._exact_np = exact
        self._sampled_np = exact if noise.shots is None else qml.set_shots(exact, shots=noise.shots)
        self._backprop: Any = None
        if gradient == "backprop":
            try:  # a device that cannot back-propagate says so on construction or first run
                qnode = qml.QNode(circuit, dev, interface="torch", diff_method="backprop")
                w0 = torch.zeros(
                    spec.n_qubits,
                    spec.n_layers,
                    spec.n_rot,
                    dtype=torch.float64,
                    requires_grad=True,
                )
                qnode(w0, torch.zeros(spec.n_enc, spec.n_inputs, dtype=torch.float64))
                self._backprop = qnode
            except qml.exceptions.QuantumFunctionError:
                self._backprop = None

    # -- evaluation ------------------------------------------------------------------------------
    def __call__(self, weights: Tensor, half: Tensor) -> Tensor:
        w, h, batch = self._flatten(weights, half)
        n = w.shape[0]
        if self.gradient == "parameter_shift":
            out = parameter_shift(self._sampled, w, h.unsqueeze(1), self.on_calls)[:, 0]
        elif self._backprop is not None:
            out = self._run_torch(w, h).to(weights.dtype)
            self.on_calls(n)
            if self.noise.shots is not None:  # value: the estimate; gradient: the exact one
                with torch.no_grad():
                    est = self._run_numpy(self._sampled_np, w, h, weights.dtype)
                out = out + (est - out).detach()
        else:
            out = parameter_shift(self._exact, w, h.unsqueeze(1), _no_calls)[:, 0]
            self.on_calls(n)
            if self.noise.shots is not None:
                with torch.no_grad():
                    est = self._run_numpy(self._sampled_np, w, h, weights.dtype)
                out = out + (est - out).detach()
        return out.reshape(*batch, len(self.spec.measure))

    def _flatten(self, weights: Tensor, half: Tensor) -> tuple[Tensor, Tensor, tuple[int, ...]]:
        """(weights (N, n, L, k), half (N, n_enc, n_in), output batch shape)."""
        if weights.ndim == 3:
            batch: tuple[int, ...] = tuple(half.shape[:-2])
            w = weights.expand(*batch, *weights.shape)
        else:  # matmul broadcasting: *P against half's dims before (B, n_enc, n_in)
            lead = torch.broadcast_shapes(weights.shape[:-3], half.shape[:-3])
            batch = (*lead, half.shape[-3])
            w = weights.unsqueeze(-4).expand(*batch, *weights.shape[-3:])
        h = half.expand(*batch, *half.shape[-2:])
        return w.reshape(-1, *w.shape[-3:]), h.reshape(-1, *h.shape[-2:]), batch

    def _sampled(self, weights: Tensor, half: Tensor) -> Tensor:
        """Shift-rule evaluation: weights (*S, A, n, L, k), half (*S, A, N, n_enc, n_in)."""
        return self._stacked(self._sampled_np, weights, half)

    def _exact(self, weights: Tensor, half: Tensor) -> Tensor:
        return self._stacked(self._exact_np, weights, half)

    def _stacked(self, qnode: Any, weights: Tensor, half: Tensor) -> Tensor:
        w, h, batch = self._flatten(weights, half)
        return self._run_numpy(qnode, w, h, weights.dtype).reshape(*batch, -1)

    def _run_numpy(self, qnode: Any, w: Tensor, h: Tensor, dtype: torch.dtype) -> Tensor:
        """One (broadcast) execution in float64: w (N, n, L, k), h (N, n_enc, n_in) -> (N, m)."""
        n = w.shape[0]
        w_np, h_np = _broadcastable(w.detach().cpu().double(), h.detach().cpu().double())
        res = np.stack(
            [np.asarray(r, dtype=np.float64) for r in qnode(w_np.numpy(), h_np.numpy())], -1
        )
        return torch.as_tensor(res[:n], device=w.device).to(dtype)

    def _run_torch(self, w: Tensor, h: Tensor) -> Tensor:
        assert self._backprop is not None
        n = w.shape[0]
        res = self._backprop(*_broadcastable(w, h))
        return torch.stack([torch.as_tensor(r) for r in res], dim=-1)[:n]  # (N, m)


def _broadcastable(w: Tensor, h: Tensor) -> tuple[Tensor, Tensor]:
    """A batch of one, doubled: PennyLane's unbroadcast path on default.mixed loses precision
    (errors ~1e-7 in float64), its broadcast path does not."""
    if w.shape[0] == 1:
        return w.expand(2, *w.shape[1:]), h.expand(2, *h.shape[1:])
    return w, h
