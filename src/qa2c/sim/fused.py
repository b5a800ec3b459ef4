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

Gradients: the non-re-uploading path is one custom autograd Function with a hand-written backward:
``qa2c.sim.fast`` (closed form, a few dozen kernels whatever the depth) while its tables stay small,
else ``FusedExpval`` (back-propagation through the layer chain and the
Kronecker factors; the shift rule at matrix level, ∂R_P(θ)/∂θ = R_P(θ + π)/2). The layer matrices of
the other paths use ``_LayerMatrices`` (same identity). Under ``create_graph=True`` each of them
differentiates its forward written in plain autograd ops instead (any order); everything else is
plain autograd. Which kernel runs is decided in one place: ``qa2c.sim.engine``.

Shapes: weights (*P, n, L, k); half-angles (*X, n_enc, n_in) with θ/2 of each encoding RX. The batch
dims broadcast like matmul: the unitary batch *P against the input batch *X minus its last dim.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor

from qa2c.sim import fast
from qa2c.sim.spec import CircuitSpec, Tables

HALF_PI = math.pi / 2


class Consts:
    """The Tables of a spec as tensors on one (device, dtype); ``dead`` (n, L, k) marks the weights
    outside the light cone (their gradients are set to exactly zero), None if unknown."""

    def __init__(
        self,
        tables: Tables,
        device: torch.device,
        dtype: torch.dtype,
        spec: CircuitSpec,
        dead: np.ndarray | None = None,
    ) -> None:
        #: (n, L, k) 1.0 for live weights, 0.0 for dead ones; None when no weight is known dead
        self.live = (
            None
            if dead is None or not dead.any()
            else torch.as_tensor(~dead, dtype=dtype, device=device)
        )
        #: the closed-form path's constants (None: not available with re-uploading)
        self.fast = (
            None if spec.reupload else fast.FastConsts(spec, tables, device, dtype, self.live)
        )
        cdtype = torch.complex64 if dtype == torch.float32 else torch.complex128
        self.dtype, self.cdtype = dtype, cdtype
        self.offsets = torch.tensor(
            [0.0, HALF_PI], dtype=dtype, device=device
        )  # cos(a - π/2) = sin a
        self.rot_gather = torch.as_tensor(tables.rot_gather.reshape(-1), device=device)
        self.rot_table = torch.as_tensor(tables.rot_table, dtype=dtype, device=device)
        n, k = tables.kron_gather.shape[0], tables.rot_gather.shape[0]
        # cos(θ/2 + s·π/2 - off): variant v shifts rotation v-1 by π (θ/2 by π/2).
        shift = np.zeros((1 + k, k, 1))
        shift[np.arange(1, k + 1), np.arange(k), 0] = HALF_PI
        self.shift_table = torch.as_tensor(
            shift - np.array([0.0, HALF_PI]), dtype=dtype, device=device
        )
        entry = tables.kron_gather - 4 * np.arange(n)[:, None]  # (n, D²): entry a of wire w's 2×2
        self.kron_entry = torch.as_tensor(entry[:, :, None], device=device)  # (n, D², 1)
        interleaved = np.stack([2 * tables.kron_gather, 2 * tables.kron_gather + 1], axis=-1)
        self.kron_gather2 = torch.as_tensor(interleaved.reshape(-1), device=device)
        n_layers = tables.layer_const.shape[0]
        full = (n_layers, 2**n, 2**n)
        layer_const = np.array(np.broadcast_to(tables.layer_const, full)).reshape(n_layers, -1)
        plain = np.array(np.broadcast_to(tables.layer_const_plain, full)).reshape(n_layers, -1)
        self.layer_const = torch.as_tensor(layer_const, dtype=cdtype, device=device)  # (L, D²)
        self.layer_const_plain = torch.as_tensor(plain, dtype=cdtype, device=device)
        self.enc_half_scale = torch.as_tensor(tables.enc_half_scale, dtype=dtype, device=device)
        self.enc_atan = torch.as_tensor(tables.enc_atan, device=device)
        self.enc_gather = torch.as_tensor(tables.enc_gather.reshape(-1), device=device)
        self.readout2 = torch.as_tensor(tables.readout2, dtype=dtype, device=device)
        self.readout2_t = self.readout2.T.contiguous()
        self.enc_signs = torch.as_tensor(tables.enc_signs, dtype=dtype, device=device)
        hadamard = torch.as_tensor(tables.hadamard, dtype=dtype, device=device)
        dim = hadamard.shape[0]
        self.hadamard = hadamard.to(cdtype)
        self.hadamard_scaled = (hadamard / dim).to(cdtype)
        # |ψ|² picks up 1/D² from the unnormalised Hadamards of the re-uploading path.
        self.readout2_reupload = self.readout2 / dim**2


def _rotations(spec: CircuitSpec, c: Consts, weights: Tensor, shifted: bool) -> Tensor:
    """Per-wire rotation matrices (flattened 2×2). (*P, L, n, V, 4) complex.

    V = 1: R(θ). V = 1 + k (``shifted``): variant 1 + j has rotation j's angle shifted by π, which is
    2·∂R/∂θ_j (R_P(θ + π) = -iP·R_P(θ)).
    """
    k = spec.n_rot
    w = weights.transpose(-3, -2)  # (*P, L, n, k)
    if shifted:
        cs = torch.cos(w[..., None, :, None] * 0.5 + c.shift_table)  # (*P, L, n, 1+k, k, 2)
    else:
        cs = torch.cos(w.unsqueeze(-1) * 0.5 - c.offsets).unsqueeze(-3)  # (*P, L, n, 1, k, 2)
    prods = cs.flatten(-2).index_select(-1, c.rot_gather)  # (*P, L, n, V, k·2^k)
    prods = prod_dim(prods.unflatten(-1, (k, 2**k)), -2)  # (*P, L, n, V, 2^k)
    return torch.view_as_complex((prods @ c.rot_table).unflatten(-1, (4, 2)))


def _kron_factors(spec: CircuitSpec, c: Consts, rot: Tensor) -> Tensor:
    """F[..., w, e] = R_w[entry of wire w in layer entry e]. rot (*P, L, n, 4) -> (*P, L, n, D²)."""
    flat = torch.view_as_real(rot).flatten(-3)  # (*P, L, n·4·2), a real gather is much faster
    gathered = flat.index_select(-1, c.kron_gather2)  # (*P, L, n·D²·2)
    return torch.view_as_complex(gathered.unflatten(-1, (spec.n_qubits, spec.dim**2, 2)))


class _LayerMatrices(torch.autograd.Function):
    """weights (*P, n, L, k) -> flattened M_lᵀ (*P, L, D²), with an exact hand-written backward.

    M_lᵀ[e] = const[e]·Π_w F_w[e]. With G the incoming gradient (conjugate-Wirtinger convention),
    ∂loss/∂θ_{w,j} = ½·Re Σ_a R_w(θ_j + π)[a]·S_w[a], S_w[a] = Σ_{e: a_w(e) = a} conj(G[e])·const[e]·Π_{i≠w} F_i[e].
    """

    @staticmethod
    def forward(ctx: Any, weights: Tensor, spec: CircuitSpec, c: Consts, const: Tensor) -> Tensor:
        rot = _rotations(spec, c, weights, shifted=True)  # (*P, L, n, 1+k, 4)
        factors = _kron_factors(spec, c, rot[..., 0, :])  # (*P, L, n, D²)
        ctx.save_for_backward(rot[..., 1:, :], factors, const, weights)
        ctx.spec, ctx.c = spec, c
        return prod_dim(factors, -2) * const

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, None, None, None]:
        shifted, factors, const, weights = ctx.saved_tensors
        if torch.is_grad_enabled():  # create_graph=True: differentiable to any order
            with torch.enable_grad():
                mats = _layer_matrices_autograd(ctx.spec, ctx.c, weights, const)
                (g,) = torch.autograd.grad(mats, weights, grad, create_graph=True)
            return g, None, None, None
        return _layer_weight_grad(ctx.c, grad, shifted, factors, const), None, None, None


def _layer_weight_grad(
    c: Consts, grad: Tensor, shifted: Tensor, factors: Tensor, const: Tensor
) -> Tensor:
    """∂loss/∂weights (*P, n, L, k) from the gradient of the flattened layer matrices (*P, L, D²)."""
    g = grad.conj() * const  # (*P, L, D²)
    parts = factors.unbind(-2)
    n = len(parts)
    prefix: list[Tensor | None] = [None] * n  # Π_{i<w} F_i
    suffix: list[Tensor | None] = [None] * n  # Π_{i>w} F_i
    for w in range(1, n):
        prev = prefix[w - 1]
        prefix[w] = parts[w - 1] if prev is None else prev * parts[w - 1]
    for w in range(n - 2, -1, -1):
        nxt = suffix[w + 1]
        suffix[w] = parts[w + 1] if nxt is None else nxt * parts[w + 1]
    weighted = []
    for w in range(n):
        term = g
        for extra in (prefix[w], suffix[w]):
            if extra is not None:
                term = term * extra
        weighted.append(term)
    q = torch.view_as_real(torch.stack(weighted, dim=-2))  # (*P, L, n, D², 2)
    index = c.kron_entry.expand(*q.shape[:-3], -1, -1, 2)  # (*P, L, n, D², 2)
    bins = q.new_zeros(*q.shape[:-2], 4, 2).scatter_add_(-2, index, q)  # (*P, L, n, 4, 2)
    sums = torch.view_as_complex(bins).unsqueeze(-1)  # (*P, L, n, 4, 1)
    dw = torch.view_as_real(shifted @ sums)[..., 0, 0].transpose(-3, -2) * 0.5  # (*P, n, L, k)
    return dw if c.live is None else dw * c.live  # dead weights: exactly zero


class FusedExpval(torch.autograd.Function):
    """The whole non-re-uploading circuit, (weights (*P, n, L, k), r (*X, 2^n_in)) -> ⟨Z⟩ (*O, m).

    Forward: layer matrices, their product T, amplitudes r @ T (real/imag interleaved), squares,
    readout. Backward by hand: back-propagation through the layer chain and the Kronecker factors
    (used for circuits too large for ``qa2c.sim.fast``).
    """

    @staticmethod
    def forward(ctx: Any, weights: Tensor, r: Tensor, spec: CircuitSpec, c: Consts) -> Tensor:
        need_w = ctx.needs_input_grad[0]
        n_layers, dim = spec.n_layers, spec.dim
        stride = 2 ** (spec.n_qubits - spec.n_inputs)
        rot = _rotations(spec, c, weights, shifted=need_w)  # (*P, L, n, V, 4)
        factors = _kron_factors(spec, c, rot[..., 0, :])  # (*P, L, n, D²)
        mats = (prod_dim(factors, -2) * c.layer_const).unflatten(-1, (dim, dim))
        prefix = [mats[..., 0, :, :]]
        for layer in range(1, n_layers):
            prefix.append(prefix[-1] @ mats[..., layer, :, :])
        rows = prefix[-1][..., ::stride, :] if stride > 1 else prefix[-1]
        tr = torch.view_as_real(rows).flatten(-2)  # (*P, D', 2D)
        amps = r @ tr  # (*O, 2D)
        ctx.spec, ctx.c, ctx.stride = spec, c, stride
        ctx.save_for_backward(weights, r, tr, amps, mats, rot[..., 1:, :], factors, *prefix[:-1])
        return amps.square() @ c.readout2

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        weights, r, tr, amps, mats, shifted, factors, *prefix = ctx.saved_tensors
        spec, c, stride = ctx.spec, ctx.c, ctx.stride
        if torch.is_grad_enabled():  # create_graph=True: differentiable to any order
            return fast.differentiable_backward(
                lambda w, r_: expval_autograd(spec, c, w, r_), ctx, grad, weights, r
            )
        g_amps = amps * (grad @ c.readout2_t)  # (*O, 2D), half the gradient of the amplitudes
        grad_r = None
        if ctx.needs_input_grad[1]:
            grad_r = (2.0 * (g_amps @ tr.transpose(-1, -2))).sum_to_size(r.shape)
        if not ctx.needs_input_grad[0]:
            return None, grad_r, None, None
        r2 = r.unsqueeze(-2) if r.ndim == 1 else r
        g2 = g_amps.unsqueeze(-2) if g_amps.ndim == 1 else g_amps
        g_tr = (r2.transpose(-1, -2) @ g2).sum_to_size(tr.shape)  # (*P, D', 2D)
        g_rows = torch.view_as_complex((2.0 * g_tr).unflatten(-1, (spec.dim, 2)))
        if stride > 1:
            g_total = g_rows.new_zeros(*g_rows.shape[:-2], spec.dim, spec.dim)
            g_total[..., ::stride, :] = g_rows
        else:
            g_total = g_rows
        grads: list[Tensor] = [g_total] * spec.n_layers
        h = g_total
        for layer in range(spec.n_layers - 1, 0, -1):
            grads[layer] = prefix[layer - 1].mH @ h
            h = h @ mats[..., layer, :, :].mH
        grads[0] = h
        g_mats = torch.stack(grads, dim=-3).flatten(-2)  # (*P, L, D²)
        grad_w = _layer_weight_grad(c, g_mats, shifted, factors, c.layer_const)
        return grad_w.sum_to_size(weights.shape), grad_r, None, None


def layer_matrices(
    spec: CircuitSpec, c: Consts, weights: Tensor, phase: bool = True, autograd: bool = False
) -> Tensor:
    """Transposed layer matrices M_lᵀ. (*P, L, D, D) complex.

    With ``phase`` (and no re-uploading) layer 0 also carries diag((-i)^popcount) of the real path.
    Differentiable in ``weights`` through a hand-written backward, or with ``autograd`` through
    plain autograd ops (torch.func transforms).
    """
    const = c.layer_const if phase else c.layer_const_plain  # (L, D²)
    if autograd:
        mats = _layer_matrices_autograd(spec, c, weights, const)
    elif torch.is_grad_enabled() and weights.requires_grad:
        mats = _LayerMatrices.apply(weights, spec, c, const)
    else:
        rot = _rotations(spec, c, weights, shifted=False)[..., 0, :]
        mats = prod_dim(_kron_factors(spec, c, rot), -2) * const
    return mats.unflatten(-1, (spec.dim, spec.dim))


def _layer_matrices_autograd(
    spec: CircuitSpec, c: Consts, weights: Tensor, const: Tensor
) -> Tensor:
    """The forward of ``_LayerMatrices`` in plain autograd ops. (*P, L, D²); dead weights are cut
    from the graph (exactly zero gradient)."""
    if c.live is not None:
        weights = torch.where(c.live.bool(), weights, weights.detach())
    rot = _rotations(spec, c, weights, shifted=False)[..., 0, :]
    return prod_dim(_kron_factors(spec, c, rot), -2) * const


def expval_autograd(spec: CircuitSpec, c: Consts, weights: Tensor, r: Tensor) -> Tensor:
    """⟨Z⟩ of the non-re-uploading circuit from r, in plain autograd ops (any order, torch.func)."""
    mats = _layer_matrices_autograd(spec, c, weights, c.layer_const)
    total = chain_product(mats.unflatten(-1, (spec.dim, spec.dim)))
    stride = 2 ** (spec.n_qubits - spec.n_inputs)
    rows = total[..., ::stride, :] if stride > 1 else total
    return (r @ torch.view_as_real(rows).flatten(-2)).square() @ c.readout2


def prod_dim(t: Tensor, dim: int) -> Tensor:
    """Product over ``dim`` as a chain of elementwise multiplies (torch.prod is slow on CPU for
    complex tensors and its backward checks for zeros)."""
    parts = t.unbind(dim)
    out = parts[0]
    for part in parts[1:]:
        out = out * part
    return out


def chain_product(mats: Tensor) -> Tensor:
    """mats[..., 0, :, :] @ mats[..., 1, :, :] @ … as a log-depth tree. (*P, L, D, D) -> (*P, D, D)."""
    while mats.shape[-3] > 1:
        odd = mats.shape[-3] % 2 == 1
        last = mats[..., -1:, :, :]
        even = mats[..., : mats.shape[-3] - 1, :, :] if odd else mats
        prod = even[..., 0::2, :, :] @ even[..., 1::2, :, :]
        mats = torch.cat([prod, last], dim=-3) if odd else prod
    return mats[..., 0, :, :]


def unitary_real(spec: CircuitSpec, c: Consts, weights: Tensor, autograd: bool = False) -> Tensor:
    """(diag(phase)·Wᵀ) restricted to encoded rows, as real (*P, 2^n_in, 2D) (re/im interleaved)."""
    total = chain_product(layer_matrices(spec, c, weights, autograd=autograd))  # (*P, D, D)
    stride = 2 ** (spec.n_qubits - spec.n_inputs)
    rows = total[..., ::stride, :] if stride > 1 else total  # only rows with unencoded wires in |0⟩
    return torch.view_as_real(rows).flatten(-2)


def state_interleaved(
    spec: CircuitSpec, c: Consts, weights: Tensor, half: Tensor, autograd: bool = False
) -> Tensor:
    """Final state as interleaved (re, im). (*O, 2D); with re-uploading its norm is D, not 1."""
    if c.fast is not None:
        r = fast.product_state(c.fast, half, half.squeeze(-2))  # (*X, 2^n_in)
        return r @ unitary_real(spec, c, weights, autograd)
    return reupload_interleaved(spec, c, weights, half, autograd)


def reupload_interleaved(
    spec: CircuitSpec, c: Consts, weights: Tensor, half: Tensor, autograd: bool = False
) -> Tensor:
    """The re-uploading circuit's final state, interleaved (re, im), norm D. (*O, 2D)."""
    mats = layer_matrices(spec, c, weights, autograd=autograd)  # (*P, L, D, D) = M_lᵀ
    left = c.hadamard @ mats  # H·M_lᵀ  (unnormalised)
    kt = left[..., :-1, :, :] @ c.hadamard_scaled  # (H M H)ᵀ for l < L, unitary
    phases = torch.exp((half @ c.enc_signs) * -1j)  # (*X, L, D): e^{-i Σ_w (θ_w/2) z_w}
    phi = phases[..., 0, :]
    for layer in range(spec.n_layers - 1):
        phi = (phi @ kt[..., layer, :, :]) * phases[..., layer + 1, :]  # rows are inputs
    psi = phi @ left[..., -1, :, :]  # (*O, D), norm √D·√D
    return torch.view_as_real(psi).flatten(-2)


def statevector(spec: CircuitSpec, c: Consts, weights: Tensor, half: Tensor) -> Tensor:
    """Normalised final statevector. (*O, D) complex."""
    amps = state_interleaved(spec, c, weights, half)
    psi = torch.view_as_complex(amps.unflatten(-1, (-1, 2)).contiguous())
    if spec.reupload:
        return psi / spec.dim
    # the real path returns only the encoded rows' contribution: psi already has D entries
    return psi
