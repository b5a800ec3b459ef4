"""Hardware realism for the torch simulator: shots, depolarising noise, readout error.

The model (all off by default):

* ``depolarizing=p``: after every layer (entangler + rotations) a single-qubit depolarising channel
  ρ → (1-p)ρ + p/3·(XρX + YρY + ZρZ) acts on every wire (PennyLane's ``DepolarizingChannel(p)``).
  It is simulated *exactly* with a density matrix (*O, D, D): per wire the channel is
  ρ → λρ + (1-λ)·Tr_w(ρ)⊗I/2 with λ = 1 - 4p/3. Cost O(D³) per layer and input: fine up to
  ~8 qubits.
* ``readout_error=q``: every measured bit is flipped with probability q just before measurement
  (PennyLane's ``BitFlip(q)`` on the measured wires). Exact: ⟨Z_i⟩ → (1-2q)·⟨Z_i⟩; with shots it
  is applied to the outcome distribution before sampling.
* ``shots=S``: every circuit execution draws S joint outcomes of all wires from the (noisy)
  computational-basis distribution — an exact multinomial sample drawn as a chain of binomials —
  and returns the sample means of the ±1 eigenvalues. With ``gradient="backprop"`` the gradient is
  the exact analytic one (straight-through: value = estimate, gradient = ∂ exact); with
  ``gradient="parameter_shift"`` every shifted execution is sampled too, as on hardware.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from qa2c.sim import fused
from qa2c.sim.spec import CircuitSpec


@dataclass(frozen=True)
class NoiseModel:
    """Shots and noise channels (see the module docstring)."""

    shots: int | None = None
    depolarizing: float = 0.0
    readout_error: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.shots is not None and (
            not isinstance(self.shots, int) or isinstance(self.shots, bool) or self.shots < 1
        ):
            raise ValueError(f"shots must be None or a positive int, got {self.shots!r}")
        for name in ("depolarizing", "readout_error"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= float(value) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {value!r}")
        if not isinstance(self.seed, int):
            raise ValueError(f"seed must be an int, got {self.seed!r}")

    @property
    def channels(self) -> bool:
        return self.depolarizing > 0 or self.readout_error > 0

    @property
    def active(self) -> bool:
        return self.shots is not None or self.channels


def depolarize(rho: Tensor, wire: int, n_qubits: int, p: float) -> Tensor:
    """Single-qubit depolarising channel with probability p on ``wire``. rho (..., D, D)."""
    a, c = 2**wire, 2 ** (n_qubits - wire - 1)
    lam = 1.0 - 4.0 * p / 3.0
    r6 = rho.unflatten(-1, (a, 2, c)).unflatten(-4, (a, 2, c))  # (..., a, 2, c, a, 2, c)
    traced = r6[..., :, 0, :, :, 0, :] + r6[..., :, 1, :, :, 1, :]  # (..., a, c, a, c)
    eye = torch.eye(2, dtype=rho.dtype, device=rho.device).view(2, 1, 1, 2, 1)
    mixed = traced.unsqueeze(-2).unsqueeze(-5) * eye  # (..., a, 2, c, a, 2, c)
    out = lam * r6 + (0.5 * (1.0 - lam)) * mixed
    return out.flatten(-3).flatten(-4, -2)


def density_probabilities(
    spec: CircuitSpec, c: fused.Consts, weights: Tensor, half: Tensor, p: float
) -> Tensor:
    """Computational-basis probabilities after the depolarising circuit. (*O, D)."""
    mats = fused.layer_matrices(spec, c, weights, phase=False)  # (*P, L, D, D) = M_lᵀ
    phases = torch.exp((half @ c.enc_signs) * -1j)  # (*X, n_enc, D)
    rho: Tensor | None = None
    for layer in range(spec.n_layers):
        m = mats[..., layer, :, :].transpose(-1, -2)  # M_l (*P, D, D)
        if weights.ndim > 3:
            m = m.unsqueeze(-3)  # (*P, 1, D, D): broadcast over the input batch
        if layer == 0 or spec.reupload:
            # E = H·diag(phases)·H / D (unnormalised Hadamards), E ρ E†
            enc = (
                c.hadamard * phases[..., layer if spec.reupload else 0, None, :]
            ) @ c.hadamard_scaled
            if rho is None:
                psi = enc[..., :, 0]  # E|0⟩  (*X, D)
                rho = psi.unsqueeze(-1) * psi.conj().unsqueeze(-2)
            else:
                rho = enc @ rho @ enc.conj().transpose(-1, -2)
        assert rho is not None
        rho = m @ rho @ m.conj().transpose(-1, -2)
        for wire in range(spec.n_qubits):
            rho = depolarize(rho, wire, spec.n_qubits, p)
    assert rho is not None
    return torch.diagonal(rho, dim1=-2, dim2=-1).real


def apply_readout_error(probs: Tensor, spec: CircuitSpec, q: float) -> Tensor:
    """Flip each measured bit with probability q. probs (..., D) -> (..., D)."""
    n = spec.n_qubits
    idx = torch.arange(spec.dim, device=probs.device)
    for wire in spec.measure:
        flipped = probs.index_select(-1, idx ^ (1 << (n - 1 - wire)))
        probs = (1.0 - q) * probs + q * flipped
    return probs


def sample_counts(probs: Tensor, shots: int, generator: torch.Generator) -> Tensor:
    """Exact multinomial counts (..., D) of ``shots`` draws, as a chain of binomials."""
    flat = probs.detach().reshape(-1, probs.shape[-1]).clamp_min(0.0)
    flat = flat / flat.sum(-1, keepdim=True)
    remaining = torch.full_like(flat[:, 0], float(shots))
    mass = torch.ones_like(remaining)
    counts = torch.zeros_like(flat)
    for j in range(flat.shape[-1] - 1):
        cond = torch.where(mass > 0, flat[:, j] / mass.clamp_min(1e-300), torch.zeros_like(mass))
        draw = torch.binomial(remaining, cond.clamp(0.0, 1.0), generator=generator)
        counts[:, j] = draw
        remaining = remaining - draw
        mass = mass - flat[:, j]
    counts[:, -1] = remaining
    return counts.reshape(probs.shape)


def evaluate_noisy(
    spec: CircuitSpec,
    c: fused.Consts,
    noise: NoiseModel,
    weights: Tensor,
    half: Tensor,
    generator: torch.Generator | None,
) -> Tensor:
    """⟨Z_m⟩ under the noise model. weights (*P, n, L, k), half (*X, n_enc, n_in) -> (*O, m)."""
    table = c.readout2[0::2]  # (D, m)
    if noise.depolarizing > 0:
        probs = density_probabilities(spec, c, weights, half, noise.depolarizing)
    else:
        amps = fused.state_interleaved(spec, c, weights, half)
        probs = amps.square().unflatten(-1, (-1, 2)).sum(-1)
        if spec.reupload:
            probs = probs / spec.dim**2
    exact = (probs @ table) * (1.0 - 2.0 * noise.readout_error)
    if noise.shots is None:
        return exact
    if generator is None:
        raise ValueError("shot sampling needs a torch.Generator")
    noisy_probs = apply_readout_error(probs.detach(), spec, noise.readout_error)
    counts = sample_counts(noisy_probs, noise.shots, generator)
    estimate = (counts @ table) / noise.shots
    return exact + (estimate - exact).detach()
