"""``qa2c.VQC``: the layered variational quantum circuit of the QA2C paper and its relatives."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from qa2c.sim.diagnostics import dead_parameters as _dead_parameters
from qa2c.sim.diagnostics import output_range as _output_range
from qa2c.sim.engine import Engine
from qa2c.sim.noise import NoiseModel
from qa2c.sim.spec import CircuitSpec

BACKENDS = ("torch", "pennylane")
GRADIENTS = ("backprop", "parameter_shift")
OUTPUTS = ("expval", "prob0")


class VQC(nn.Module):
    """A layered variational quantum circuit returning ⟨Z_i⟩ of the measured wires.

    Circuit: encoding RX gates (``encoding``; before every layer if ``reupload``), then ``n_layers``
    layers of [entangler → per-wire rotations ``rotations``] (``layer_order="entangler_first"``, the
    QA2C paper) or [rotations → entangler]. Readout ⟨Z_i⟩ for i in ``measure``, each in [-1, 1]
    (``output="expval"``), or the probability that wire i reads 0, (1 + ⟨Z_i⟩)/2 in [0, 1]
    (``output="prob0"``: the QA2C paper's p_i, read from the state without extra kernels).

    Args:
        n_qubits: number of wires.
        n_layers: number of variational layers.
        encoding: ``"cartpole_paper"`` — RX(π·x0/4.8), RX(2·atan x1), RX(π·x2/0.418), RX(2·atan x3) on
            wires 0..3 (n_inputs = 4); ``"angle"`` — RX(x_i) on wire i.
        rotations: the per-wire rotation gates of a layer, applied left to right, a string over
            X/Y/Z: ``"ZYZ"`` (the paper: RZ, RY, RZ = PennyLane's Rot), ``"XYZ"``, ``"Y"``, ``"XY"``, ….
            Weights have shape (n_qubits, n_layers, len(rotations)).
        entangler: ``"cnot_ring"``, ``"cnot_chain"``, ``"cz_ring"``, ``"cz_chain"``, ``"cnot_all"``
            (CNOT(i→j) for every i < j) or ``"none"``; see ``qa2c.sim.spec.entangler_gates``.
        measure: wires whose ⟨Z⟩ is returned, in this order (default: all).
        reupload: repeat the encoding before every layer (data re-uploading).
        input_scaling: trainable input weights λ of shape (n_enc, n_inputs), n_enc = n_layers if
            reupload else 1, initialised to 1; the encoding of block e sees λ[e, i]·x_i.
        backend: ``"torch"`` (this package's fused simulator) or ``"pennylane"`` (optional extra).
        dtype: float32 or float64 (the state is complex64 / complex128).
        n_inputs: number of input features (default 4 for cartpole_paper, else n_qubits);
            input i is encoded on wire i.
        layer_order: ``"entangler_first"`` or ``"rotations_first"``.
        device: PennyLane device name for backend="pennylane" (any installed device).
        shots: None for exact expectations, or the number of measurement shots per circuit
            execution (expectations are then sample means; seeded by ``seed``).
        depolarizing: probability p of a single-qubit depolarising channel on every wire after
            every layer (exact density-matrix simulation; see ``qa2c.sim.noise``).
        readout_error: probability q that a measured bit is flipped (symmetric).
        gradient: ``"backprop"`` (autograd through the simulator) or ``"parameter_shift"``.
        seed: seed of the shot-sampling generator.
        output: ``"expval"`` (⟨Z_i⟩) or ``"prob0"`` ((1 + ⟨Z_i⟩)/2). ``output_range`` and the
            diagnostics always describe ⟨Z_i⟩.

    Which kernel evaluates a call is decided by ``self.engine`` (``qa2c.sim.engine``, one table).
    Gradients: weights outside the light cone (``dead_parameters``) get exactly zero; the torch
    simulator is differentiable to any order (Hessians, gradient penalties) and works under
    ``torch.func`` (grad, jacrev, vmap; there a non-finite x gives nan instead of an error); the
    parameter-shift rule is first order and raises on a second derivative, and PennyLane,
    parameter shift and noise raise under ``torch.func`` transforms.
    """

    def __init__(
        self,
        n_qubits: int = 4,
        n_layers: int = 2,
        encoding: str = "cartpole_paper",
        rotations: str = "ZYZ",
        entangler: str = "cnot_ring",
        measure: tuple[int, ...] | list[int] | None = None,
        reupload: bool = False,
        input_scaling: bool = False,
        backend: str = "torch",
        dtype: torch.dtype = torch.float32,
        *,
        n_inputs: int | None = None,
        layer_order: str = "entangler_first",
        device: str = "default.qubit",
        shots: int | None = None,
        depolarizing: float = 0.0,
        readout_error: float = 0.0,
        gradient: str = "backprop",
        seed: int = 0,
        output: str = "expval",
    ) -> None:
        super().__init__()
        if n_inputs is None:
            n_inputs = 4 if encoding == "cartpole_paper" else n_qubits
        if measure is None:
            measure = tuple(range(n_qubits)) if isinstance(n_qubits, int) else ()
        if not isinstance(measure, (tuple, list)):
            raise ValueError(f"measure must be a tuple of wire indices, got {measure!r}")
        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if backend == "torch" and device != "default.qubit":
            raise ValueError(
                f"device={device!r} names a PennyLane device and needs backend='pennylane'; "
                "move a torch-backend VQC with .to(torch_device)"
            )
        if output not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {output!r}")
        if gradient not in GRADIENTS:
            raise ValueError(f"gradient must be one of {GRADIENTS}, got {gradient!r}")
        if dtype not in (torch.float32, torch.float64):
            raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
        if not isinstance(reupload, bool) or not isinstance(input_scaling, bool):
            raise ValueError(
                f"reupload and input_scaling must be bools, got {reupload!r}, {input_scaling!r}"
            )
        self.spec = CircuitSpec(
            n_qubits=n_qubits,
            n_layers=n_layers,
            n_inputs=n_inputs,
            encoding=encoding,
            rotations=rotations,
            entangler=entangler,
            measure=tuple(measure),
            reupload=reupload,
            layer_order=layer_order,
        )
        self.noise = NoiseModel(
            shots=shots, depolarizing=depolarizing, readout_error=readout_error, seed=seed
        )
        self.backend, self.gradient = backend, gradient
        self.input_scaling = input_scaling
        #: evaluates the circuit: constants, random streams and the kernel dispatch table
        self.engine = Engine(
            self.spec, self.noise, backend=backend, gradient=gradient, output=output, device=device
        )
        self.weights = nn.Parameter(
            torch.rand(n_qubits, n_layers, self.spec.n_rot, dtype=dtype) * (2 * math.pi)
        )  # (n, L, k), w[wire, layer, k]
        self.input_weights: nn.Parameter | None = (
            nn.Parameter(torch.ones(self.spec.n_enc, n_inputs, dtype=dtype))
            if input_scaling
            else None
        )  # (n_enc, n_inputs)
        self._weights_shape = (n_qubits, n_layers, self.spec.n_rot)

    # -- public properties -------------------------------------------------------------------
    @property
    def n_qubits(self) -> int:
        return self.spec.n_qubits

    @property
    def n_layers(self) -> int:
        return self.spec.n_layers

    @property
    def n_inputs(self) -> int:
        return self.spec.n_inputs

    @property
    def measure(self) -> tuple[int, ...]:
        return self.spec.measure

    @property
    def output(self) -> str:
        """``"expval"`` (⟨Z_i⟩) or ``"prob0"`` ((1 + ⟨Z_i⟩)/2)."""
        return self.engine.output

    @output.setter
    def output(self, value: str) -> None:
        if value not in OUTPUTS:
            raise ValueError(f"output must be one of {OUTPUTS}, got {value!r}")
        self.engine.output = value

    def extra_repr(self) -> str:
        s = self.spec
        return (
            f"n_qubits={s.n_qubits}, n_layers={s.n_layers}, encoding={s.encoding!r}, "
            f"rotations={s.rotations!r}, entangler={s.entangler!r}, measure={s.measure}, "
            f"reupload={s.reupload}, input_scaling={self.input_scaling}, backend={self.backend!r}, "
            f"output={self.output!r}"
        )

    @property
    def circuit_calls(self) -> int:
        """Circuit executions so far (a batch of B inputs counts B; parameter shifts count too)."""
        return self.engine.calls

    @circuit_calls.setter
    def circuit_calls(self, value: int) -> None:
        if not isinstance(value, int) or value < 0:
            raise ValueError(f"circuit_calls must be a non-negative int, got {value!r}")
        self.engine.calls = value

    def reset_circuit_calls(self) -> int:
        """Set ``circuit_calls`` to 0 and return its previous value."""
        calls, self.circuit_calls = self.circuit_calls, 0
        return calls

    # -- evaluation ----------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        """x (..., n_inputs) -> ⟨Z_i⟩ (..., len(measure))."""
        return self.functional(self.weights, x, self.input_weights)

    def functional(self, weights: Tensor, x: Tensor, input_weights: Tensor | None = None) -> Tensor:
        """Evaluate the circuit with explicit (possibly stacked) parameters.

        weights (*P, n_qubits, n_layers, k) and x (*P, B, n_inputs) -> (*P, B, n_measure); unbatched
        weights (n_qubits, n_layers, k) take any x (..., n_inputs). input_weights: (*P, n_enc, n_inputs)
        or None (then no input scaling is applied, even if the module has input weights).
        """
        x = self._check(weights, x, input_weights)
        return self.engine.evaluate(weights, x, input_weights)

    def state(self, x: Tensor, weights: Tensor | None = None) -> Tensor:
        """The normalised noiseless final statevector (..., 2**n_qubits), complex (torch simulator)."""
        w = self.weights if weights is None else weights
        x = self._check(w, x, self.input_weights)
        if not bool(torch.isfinite(x).all()):
            raise ValueError("x contains non-finite values (nan or inf)")
        return self.engine.statevector(w, self.engine.half_angles(w, x, self.input_weights))

    def dead_parameters(self) -> Tensor:
        """Bool (n_qubits, n_layers, k): True where the weight cannot influence any measured wire."""
        dead = self.engine.dead
        if dead is None:
            dead = _dead_parameters(self.spec)
        return torch.as_tensor(dead, device=self.weights.device)

    def output_range(
        self, restarts: int = 8, steps: int = 150, seed: int = 0
    ) -> tuple[Tensor, Tensor]:
        """(low, high), each (n_measure,): the extreme ⟨Z_i⟩ reachable over all weights and inputs.

        Found by multi-start gradient optimisation of the exact (noise-aware, shot-free) torch
        simulator over free weights and free encoding angles; a value is certified reachable
        (an inner bound of the true range, which always lies inside [-1, 1]).
        """
        return _output_range(
            self.engine.exact_from_angles, self.spec, self.weights, restarts, steps, seed
        )

    # -- validation ----------------------------------------------------------------------------
    def _check(self, weights: Tensor, x: Tensor, input_weights: Tensor | None) -> Tensor:
        """Validate the shapes and dtypes of weights, x and input_weights; return x on weights'
        device and dtype. (The engine rejects non-finite x where it reads x.)"""
        spec = self.spec
        if not isinstance(weights, Tensor):
            raise TypeError(f"weights must be a torch.Tensor, got {type(weights).__name__}")
        if weights.shape[-3:] != self._weights_shape or weights.ndim < 3:
            raise ValueError(
                f"weights must have shape (..., {spec.n_qubits}, {spec.n_layers}, {spec.n_rot}) "
                f"(n_qubits, n_layers, len(rotations)), got {tuple(weights.shape)}"
            )
        dtype = weights.dtype
        if dtype is not torch.float32 and dtype is not torch.float64:
            raise ValueError(f"weights must be float32 or float64, got {weights.dtype}")
        if not isinstance(x, Tensor):
            x = torch.as_tensor(x)
        if x.ndim < 1 or x.shape[-1] != spec.n_inputs:
            raise ValueError(
                f"x must have shape (..., {spec.n_inputs}) (n_inputs), got {tuple(x.shape)}"
            )
        if weights.ndim > 3 and x.ndim < weights.ndim - 1:
            raise ValueError(
                f"stacked weights {tuple(weights.shape)} need x with shape (*P, B, n_inputs) of at least "
                f"{weights.ndim - 1} dims, got x {tuple(x.shape)}"
            )
        if input_weights is not None:
            if (
                not isinstance(input_weights, Tensor)
                or input_weights.ndim < 2
                or tuple(input_weights.shape[-2:]) != (spec.n_enc, spec.n_inputs)
            ):
                shape = (
                    tuple(input_weights.shape)
                    if isinstance(input_weights, Tensor)
                    else input_weights
                )
                raise ValueError(
                    f"input_weights must have shape (..., {spec.n_enc}, {spec.n_inputs}) "
                    f"(n_enc, n_inputs), got {shape}"
                )
            if input_weights.ndim > 2 and x.ndim < input_weights.ndim:
                raise ValueError(
                    f"stacked input_weights {tuple(input_weights.shape)} need x of at least "
                    f"{input_weights.ndim} dims, got x {tuple(x.shape)}"
                )
        if x.dtype is not dtype or x.device != weights.device:
            x = x.to(device=weights.device, dtype=dtype)
        return x
