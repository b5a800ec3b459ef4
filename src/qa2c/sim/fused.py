"""The fused statevector simulator behind ``qa2c.VQC`` (backend="torch").

Everything that depends only on the weights is fused into a few dense (D, D) matrices per
parameter set, D = 2**n_qubits:

* the rotations of one layer are a Kronecker product of per-wire 2×2 matrices; it is built in one
  gather + one product (``kron_gather``), with the entangler (a signed permutation) folded into the
  gather index, so a whole layer is one matrix;
* without re-uploading the layers are multiplied together (a log-depth tree of batched matmuls)
  into a single unitary, and the RX-encoded input is a *real* product vector r (its (-i)^popcount
  phases are folded into the unitary), so the per-input work is one real matmul, a square and a
  second matmul with the ±1 readout table: ⟨Z_i⟩ = |ψ|² @ z_i;
* with re-uploading, RX(θ)^{⊗n} = H^{⊗n}·diag(e^{-i Σ θ_w z_w / 2})·H^{⊗n}: the Hadamards are folded
  into the layer matrices, and every encoding block costs one elementwise phase multiply.

Shapes: weights (*P, n, L, k); half-angles (*X, n_enc, n_in) with θ/2 of each encoding RX. The batch
dims broadcast like matmul: the unitary batch *P against the input batch *X minus its last dim.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from qa2c.sim.spec import CircuitSpec, Tables

HALF_PI = math.pi / 2


class Consts:
    """The Tables of a spec as tensors on one (device, dtype)."""

    def __init__(self, tables: Tables, device: torch.device, dtype: torch.dtype) -> None:
        cdtype = torch.complex64 if dtype == torch.float32 else torch.complex128
        self.dtype, self.cdtype = dtype, cdtype
        self.offsets = torch.tensor(
            [0.0, HALF_PI], dtype=dtype, device=device
        )  # cos(a - π/2) = sin a
        self.rot_gather = torch.as_tensor(tables.rot_gather.reshape(-1), device=device)
        self.rot_table = torch.as_tensor(tables.rot_table, dtype=dtype, device=device)
        self.kron_gather = torch.as_tensor(tables.kron_gather.reshape(-1), device=device)
        self.layer_const = torch.as_tensor(tables.layer_const, dtype=cdtype, device=device)
        self.layer_const_plain = torch.as_tensor(
            tables.layer_const_plain, dtype=cdtype, device=device
        )
        self.enc_half_scale = torch.as_tensor(tables.enc_half_scale, dtype=dtype, device=device)
        self.enc_atan = torch.as_tensor(tables.enc_atan, device=device)
        self.enc_gather = torch.as_tensor(tables.enc_gather.reshape(-1), device=device)
        self.readout2 = torch.as_tensor(tables.readout2, dtype=dtype, device=device)
        self.enc_signs = torch.as_tensor(tables.enc_signs, dtype=dtype, device=device)
        hadamard = torch.as_tensor(tables.hadamard, dtype=dtype, device=device)
        dim = hadamard.shape[0]
        self.hadamard = hadamard.to(cdtype)
        self.hadamard_scaled = (hadamard / dim).to(cdtype)
        # |ψ|² picks up 1/D² from the unnormalised Hadamards of the re-uploading path.
        self.readout2_reupload = self.readout2 / dim**2


def layer_matrices(spec: CircuitSpec, c: Consts, weights: Tensor, phase: bool = True) -> Tensor:
    """Transposed layer matrices M_lᵀ. (*P, L, D, D) complex.

    With ``phase`` (and no re-uploading) layer 0 also carries diag((-i)^popcount) of the real path.
    """
    n, k, dim = spec.n_qubits, spec.n_rot, spec.dim
    w = weights.transpose(-3, -2)  # (*P, L, n, k)
    cs = torch.cos(w.unsqueeze(-1) * 0.5 - c.offsets)  # (*P, L, n, k, 2): cos, sin of θ/2
    prods = cs.flatten(-2).index_select(-1, c.rot_gather)  # (*P, L, n, k·2^k)
    prods = prods.unflatten(-1, (k, 2**k)).prod(-2)  # (*P, L, n, 2^k)
    rot = torch.view_as_complex((prods @ c.rot_table).unflatten(-1, (4, 2)))  # (*P, L, n, 4)
    mats = rot.flatten(-2).index_select(-1, c.kron_gather)  # (*P, L, n·D·D)
    mats = mats.unflatten(-1, (n, dim, dim)).prod(-3)  # (*P, L, D, D)
    return mats * (c.layer_const if phase else c.layer_const_plain)


def chain_product(mats: Tensor) -> Tensor:
    """mats[..., 0, :, :] @ mats[..., 1, :, :] @ … as a log-depth tree. (*P, L, D, D) -> (*P, D, D)."""
    while mats.shape[-3] > 1:
        odd = mats.shape[-3] % 2 == 1
        last = mats[..., -1:, :, :]
        even = mats[..., : mats.shape[-3] - 1, :, :] if odd else mats
        prod = even[..., 0::2, :, :] @ even[..., 1::2, :, :]
        mats = torch.cat([prod, last], dim=-3) if odd else prod
    return mats[..., 0, :, :]


def product_state(spec: CircuitSpec, c: Consts, half: Tensor) -> Tensor:
    """Real part r of the RX-encoded product state on the encoded wires. (*X, n_in) -> (*X, 2^n_in)."""
    n_in = spec.n_inputs
    pairs = torch.cos(half.unsqueeze(-1) - c.offsets)  # (*X, n_in, 2): cos, sin
    gathered = pairs.flatten(-2).index_select(-1, c.enc_gather)  # (*X, n_in·2^n_in)
    return gathered.unflatten(-1, (n_in, 2**n_in)).prod(-2)


def unitary_real(spec: CircuitSpec, c: Consts, weights: Tensor) -> Tensor:
    """(diag(phase)·Wᵀ) restricted to encoded rows, as real (*P, 2^n_in, 2D) (re/im interleaved)."""
    total = chain_product(layer_matrices(spec, c, weights))  # (*P, D, D)
    stride = 2 ** (spec.n_qubits - spec.n_inputs)
    rows = total[..., ::stride, :] if stride > 1 else total  # only rows with unencoded wires in |0⟩
    return torch.view_as_real(rows).flatten(-2)


def state_interleaved(spec: CircuitSpec, c: Consts, weights: Tensor, half: Tensor) -> Tensor:
    """Final state as interleaved (re, im). (*O, 2D); with re-uploading its norm is D, not 1."""
    if not spec.reupload:
        r = product_state(spec, c, half.squeeze(-2))  # (*X, 2^n_in)
        return r @ unitary_real(spec, c, weights)
    mats = layer_matrices(spec, c, weights)  # (*P, L, D, D) = M_lᵀ
    left = c.hadamard @ mats  # H·M_lᵀ  (unnormalised)
    kt = left[..., :-1, :, :] @ c.hadamard_scaled  # (H M H)ᵀ for l < L, unitary
    phases = torch.exp((half @ c.enc_signs) * -1j)  # (*X, L, D): e^{-i Σ_w (θ_w/2) z_w}
    phi = phases[..., 0, :]
    for layer in range(spec.n_layers - 1):
        phi = (phi @ kt[..., layer, :, :]) * phases[..., layer + 1, :]  # rows are inputs
    psi = phi @ left[..., -1, :, :]  # (*O, D), norm √D·√D
    return torch.view_as_real(psi).flatten(-2)


def expval_z(spec: CircuitSpec, c: Consts, weights: Tensor, half: Tensor) -> Tensor:
    """⟨Z_m⟩ for the measured wires. (*O, n_measure)."""
    amps = state_interleaved(spec, c, weights, half)
    table = c.readout2_reupload if spec.reupload else c.readout2
    return amps.square() @ table


def statevector(spec: CircuitSpec, c: Consts, weights: Tensor, half: Tensor) -> Tensor:
    """Normalised final statevector. (*O, D) complex."""
    amps = state_interleaved(spec, c, weights, half)
    psi = torch.view_as_complex(amps.unflatten(-1, (-1, 2)).contiguous())
    if spec.reupload:
        return psi / spec.dim
    # the real path returns only the encoded rows' contribution: psi already has D entries
    return psi
