"""One circuit engine per circuit spec: its constants, its random streams and the ONE table that
decides which kernel evaluates a call (``Engine.route``).

=================  ==========================================================================
kernel             when (first match wins)
=================  ==========================================================================
autograd           inside a ``torch.func`` transform (grad, jacrev, vmap, …): plain autograd ops,
                   no data-dependent checks (a non-finite x gives nan, not an error); with
                   PennyLane, parameter shift or noise a transform raises RuntimeError
pennylane          ``backend="pennylane"``: any PennyLane device (``qa2c.pennylane_backend``)
parameter_shift    ``gradient="parameter_shift"`` and gradients are recorded
                   (``qa2c.sim.shift``; every shifted circuit is an execution, sampled with shots)
noisy              shots, depolarising noise or readout error (``qa2c.sim.noise``)
reupload           data re-uploading (``qa2c.sim.fused``, one phase multiply per encoding block)
closed_form        the whole circuit in one Function while its leave-one-out table stays under
                   ``JACOBIAN_LIMIT`` (``qa2c.sim.fast``; the paper circuit)
fused              larger circuits: back-propagation through the layer chain (``qa2c.sim.fused``)
=================  ==========================================================================

Every torch kernel gives the weights outside the light cone (``qa2c.sim.diagnostics``) an exactly
zero gradient (not float round-off, which Adam would turn into lr-sized steps), and every one is
differentiable to any order (``create_graph=True``) except ``parameter_shift`` and ``pennylane``'s
own shift rule, which raise on a second derivative.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

from qa2c.sim import fast, fused
from qa2c.sim.diagnostics import dead_parameters
from qa2c.sim.noise import NoiseModel, evaluate_noisy
from qa2c.sim.shift import parameter_shift
from qa2c.sim.spec import CircuitSpec, build_tables

#: the closed-form kernel runs while its leave-one-out table has at most this many complex entries
#: per call (L·n·4**n per parameter set; the paper circuit: 2,048).
JACOBIAN_LIMIT = 1_000_000
#: the light cone (4**n Pauli strings per gate) is computed up to this many qubits; beyond it no
#: weight is treated as dead.
LIGHT_CONE_MAX_QUBITS = 9


_ACTIVE: Callable[[], bool] | None = getattr(torch._C, "_are_functorch_transforms_active", None)


def transforms_active() -> bool:
    """Whether a ``torch.func`` transform (grad, jacrev, vmap, …) is tracing this call."""
    return _ACTIVE is not None and bool(_ACTIVE())


# (constants, weights, x, input_weights) -> outputs
Kernel = Callable[[fused.Consts, Tensor, Tensor, Tensor | None], Tensor]


class Engine:
    """Evaluates one circuit spec: ``weights (*P, n, L, k)``, ``x (*P?, …, n_in)`` -> ``(*O, m)``.

    ``output``: ``"expval"`` (⟨Z_i⟩) or ``"prob0"`` ((1 + ⟨Z_i⟩)/2). ``calls`` counts circuit
    executions (a batch of B inputs counts B; parameter shifts count too).
    """

    def __init__(
        self,
        spec: CircuitSpec,
        noise: NoiseModel,
        *,
        backend: str = "torch",
        gradient: str = "backprop",
        output: str = "expval",
        device: str = "default.qubit",
    ) -> None:
        self.spec, self.noise = spec, noise
        self.backend, self.gradient, self.output = backend, gradient, output
        self.tables = build_tables(spec)
        self.dead: np.ndarray | None = (
            dead_parameters(spec) if spec.n_qubits <= LIGHT_CONE_MAX_QUBITS else None
        )  # (n, L, k) bool
        self.calls = 0
        self._noise_active = noise.active  # the noise model is frozen
        self._consts: dict[tuple[torch.device, torch.dtype], fused.Consts] = {}
        self._generators: dict[torch.device, torch.Generator] = {}
        self._pennylane: Callable[[Tensor, Tensor], Tensor] | None = None
        if backend == "pennylane":
            from qa2c.pennylane_backend import PennyLaneCircuit

            self._pennylane = PennyLaneCircuit(
                spec, noise, device=device, gradient=gradient, on_calls=self.add_calls
            )
        self._kernels: dict[str, Kernel] = {
            "autograd": self._run_autograd,
            "pennylane": self._run_pennylane,
            "parameter_shift": self._run_parameter_shift,
            "noisy": self._run_noisy,
            "reupload": self._run_reupload,
            "closed_form": self._run_closed_form,
            "fused": self._run_fused,
        }

    # -- the dispatch table ----------------------------------------------------------------------
    def route(self, weights: Tensor, c: fused.Consts | None = None) -> str:
        """The kernel for a call with these weights (the table in the module docstring)."""
        if transforms_active():
            if self._pennylane is not None or self.gradient != "backprop" or self.noise.active:
                raise RuntimeError(
                    "torch.func transforms (grad, jacrev, vmap, …) support the noiseless torch "
                    "simulator with gradient='backprop' only; this circuit has "
                    f"backend={self.backend!r}, gradient={self.gradient!r}, {self.noise}"
                )
            return "autograd"
        if self._pennylane is not None:
            return "pennylane"
        if self.gradient == "parameter_shift" and torch.is_grad_enabled():
            return "parameter_shift"
        if self._noise_active:
            return "noisy"
        if self.spec.reupload:
            return "reupload"
        fc = (self.consts(weights) if c is None else c).fast
        if fc is not None and fast.fits(fc, weights, JACOBIAN_LIMIT):
            return "closed_form"
        return "fused"

    def evaluate(self, weights: Tensor, x: Tensor, input_weights: Tensor | None = None) -> Tensor:
        """weights (*P, n, L, k), x (…, n_in) on weights' device and dtype, input_weights
        (*P, n_enc, n_in) or None -> outputs (*O, m)."""
        c = self.consts(weights)
        return self._kernels[self.route(weights, c)](c, weights, x, input_weights)

    def add_calls(self, calls: int) -> None:
        self.calls += calls

    # -- constants -------------------------------------------------------------------------------
    def consts(self, t: Tensor) -> fused.Consts:
        """The constant tensors on t's (device, dtype), built once."""
        key = (t.device, t.dtype)
        c = self._consts.get(key)
        if c is None:
            c = fused.Consts(self.tables, t.device, t.dtype, self.spec, self.dead)
            self._consts[key] = c
        return c

    def generator(self, device: torch.device) -> torch.Generator:
        """The shot-sampling generator on ``device`` (seeded with the noise model's seed)."""
        gen = self._generators.get(device)
        if gen is None:
            gen = torch.Generator(device=device)
            gen.manual_seed(self.noise.seed)
            self._generators[device] = gen
        return gen

    def half_angles(self, weights: Tensor, x: Tensor, input_weights: Tensor | None) -> Tensor:
        """θ/2 of every encoding RX. x (…, n_in) -> (…, n_enc, n_in)."""
        spec = self.spec
        xs = x.unsqueeze(-2)  # (..., 1, n_in)
        if input_weights is not None:
            lam = input_weights.to(weights.dtype)
            # stacked (*P, n_enc, n_in) lines up with x (*P, B, n_in): add the B axis
            xs = xs * (lam.unsqueeze(-3) if lam.ndim > 2 else lam)  # (..., n_enc, n_in)
        elif spec.reupload:
            xs = xs.expand(*xs.shape[:-2], spec.n_enc, spec.n_inputs)
        if spec.encoding == "angle":
            return xs * 0.5
        c = self.consts(weights)
        return torch.where(c.enc_atan, torch.atan(xs), xs * c.enc_half_scale)

    def mask_dead(self, weights: Tensor) -> Tensor:
        """weights with the dead ones cut from the graph: their gradient is exactly zero."""
        live = self.consts(weights).live
        if live is None or not weights.requires_grad:
            return weights
        return torch.where(live.bool(), weights, weights.detach())

    # -- kernels ---------------------------------------------------------------------------------
    def _finish(self, out: Tensor, count: bool = True) -> Tensor:
        if count:
            self.calls += out.numel() // len(self.spec.measure)
        return (out + 1) / 2 if self.output == "prob0" else out

    def _product_state(
        self, consts: fused.Consts, weights: Tensor, x: Tensor, input_weights: Tensor | None
    ) -> Tensor:
        c = consts.fast
        if c is None:  # not reached: the routes that call this exclude re-uploading
            raise RuntimeError("the product state needs a circuit without re-uploading")
        if input_weights is None:
            r = fast.product_state(c, x)  # (..., 2^n_in), non-finite iff x is
        else:
            r = fast.product_state(c, x, self.half_angles(weights, x, input_weights)[..., 0, :])
        if not math.isfinite(r.sum().item()):
            raise ValueError("x contains non-finite values (nan or inf)")
        return r

    def _checked_half(self, weights: Tensor, x: Tensor, input_weights: Tensor | None) -> Tensor:
        if not transforms_active() and not bool(torch.isfinite(x).all()):
            raise ValueError("x contains non-finite values (nan or inf)")
        return self.half_angles(weights, x, input_weights)

    def _run_closed_form(
        self, c: fused.Consts, weights: Tensor, x: Tensor, input_weights: Tensor | None
    ) -> Tensor:
        r = self._product_state(c, weights, x, input_weights)
        assert c.fast is not None
        out = fast.expval_z(c.fast, weights, r, self.output)  # reads P(0) directly for "prob0"
        self.calls += out.numel() // len(self.spec.measure)
        return out

    def _run_fused(
        self, c: fused.Consts, weights: Tensor, x: Tensor, input_weights: Tensor | None
    ) -> Tensor:
        spec = self.spec
        r = self._product_state(c, weights, x, input_weights)
        if torch.is_grad_enabled() and (weights.requires_grad or r.requires_grad):
            out: Tensor = fused.FusedExpval.apply(weights, r, spec, c)
        else:
            out = (r @ fused.unitary_real(spec, c, weights)).square() @ c.readout2
        return self._finish(out)

    def _run_reupload(
        self, c: fused.Consts, weights: Tensor, x: Tensor, input_weights: Tensor | None
    ) -> Tensor:
        half = self._checked_half(weights, x, input_weights)
        psi = fused.reupload_interleaved(self.spec, c, weights, half)
        return self._finish(psi.square() @ c.readout2_reupload)

    def _run_autograd(
        self, c: fused.Consts, weights: Tensor, x: Tensor, input_weights: Tensor | None
    ) -> Tensor:
        """Plain autograd ops only (torch.func): no data-dependent checks (no .item())."""
        spec = self.spec
        half = self.half_angles(weights, x, input_weights)
        if spec.reupload:
            psi = fused.reupload_interleaved(spec, c, weights, half, autograd=True)
            return self._finish(psi.square() @ c.readout2_reupload)
        assert c.fast is not None
        r = fast.product_state(c.fast, x, half[..., 0, :])
        return self._finish(fused.expval_autograd(spec, c, weights, r))

    def _run_noisy(
        self, c: fused.Consts, weights: Tensor, x: Tensor, input_weights: Tensor | None
    ) -> Tensor:
        half = self._checked_half(weights, x, input_weights)
        return self._finish(self._noisy(weights, half))

    def _noisy(self, weights: Tensor, half: Tensor) -> Tensor:
        """⟨Z⟩ (*O, m) under the noise model (shots sampled), from the half-angles."""
        c = self.consts(weights)
        if not self.noise.active:
            if self.spec.reupload:
                psi = fused.reupload_interleaved(self.spec, c, weights, half)
                return psi.square() @ c.readout2_reupload
            psi = fused.state_interleaved(self.spec, c, weights, half)
            return psi.square() @ c.readout2
        gen = self.generator(weights.device)
        return evaluate_noisy(self.spec, c, self.noise, weights, half, gen)

    def _run_parameter_shift(
        self, c: fused.Consts, weights: Tensor, x: Tensor, input_weights: Tensor | None
    ) -> Tensor:
        half = self._checked_half(weights, x, input_weights)
        out = parameter_shift(self._noisy, self.mask_dead(weights), half, self.add_calls)
        return self._finish(out, count=False)

    def _run_pennylane(
        self, c: fused.Consts, weights: Tensor, x: Tensor, input_weights: Tensor | None
    ) -> Tensor:
        assert self._pennylane is not None
        half = self._checked_half(weights, x, input_weights)
        return self._finish(self._pennylane(self.mask_dead(weights), half), count=False)

    # -- helpers for the VQC's diagnostics -------------------------------------------------------
    def exact_from_angles(self, weights: Tensor, half: Tensor) -> Tensor:
        """Exact (noise-aware, shot-free) ⟨Z⟩ (*O, m) from weights and free half-angles."""
        c = self.consts(weights)
        if self.noise.channels:
            exact = NoiseModel(None, self.noise.depolarizing, self.noise.readout_error)
            return evaluate_noisy(self.spec, c, exact, weights, half, None)
        if self.spec.reupload:
            psi = fused.reupload_interleaved(self.spec, c, weights, half)
            return psi.square() @ c.readout2_reupload
        return fused.state_interleaved(self.spec, c, weights, half).square() @ c.readout2

    def statevector(self, weights: Tensor, half: Tensor) -> Tensor:
        """The normalised noiseless final statevector (*O, D), complex."""
        return fused.statevector(self.spec, self.consts(weights), weights, half)
