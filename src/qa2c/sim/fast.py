"""The closed-form fast path of the non-re-uploading, noiseless circuit (e.g. the QA2C paper's).

Row-vector convention: the final state is ``ψ = r @ W`` with r the real RX product state of the
encoded wires and ``W = X_0 X_1 ⋯ X_{L-1}``, ``X_l = A_l · U_lᵀ · B_l``. U_l = ⊗_w R_{w,l} is the
layer's Kronecker product of per-wire rotations; A_l, B_l are constant monomial matrices: the
transposed entangler (a signed permutation) on the side given by ``layer_order``, and in A_0 also
the phase diag((-i)^popcount) of the RX product state (so that r is real). So every entry of X_l is
a constant times a product of one entry of each wire's 2×2: X_l is built by one gather and one
product, with the permutations folded into the gather index.

Forward (one custom autograd Function; the number of kernels barely grows with L): the per-wire
2×2s of every layer from cos/sin of the half angles (one cos, one gather, one product, one matmul);
the gather of each wire's entry for every (row, column) of X_lᵀ; leave-one-out products
LOO_w = const·Π_{i≠w} R_i (for the gradient) and X_lᵀ = LOO_0·R_0; the prefix chain
Pre_{l+1} = Pre_l·X_l; amplitudes r @ W (real, re/im interleaved); ⟨Z⟩ = |ψ|² @ S with S the ±1
readout table.

Backward: with G the gradient of W (complex, conjugate-Wirtinger) and the unitarity of the chain
(Suf_l = Pre_{l+1}^H·W), ∂loss/∂θ_{w,l,j} = ½·Re Σ_e H_l[e]·LOO_{l,w}[e]·R_{w,l}^{(j)}[entry_w(e)]
with H_l = Pre_{l+1}^H·(W·G^H)·Pre_l (in X_lᵀ's layout) and R^{(j)} = R(θ_j + π) = 2·∂R/∂θ_j:
two batched matmuls for all layers, one multiply, one binning matmul and one contraction for all
weights. First order only (no double backward).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from qa2c.sim.spec import CircuitSpec, Tables, bit_table, signed_permutation


def _monomial(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A matrix with one nonzero per row: (column of each row's nonzero, its value)."""
    col = np.abs(m).argmax(-1)
    val = np.take_along_axis(m, col[..., None], -1)[..., 0]
    if not np.allclose(np.abs(m).sum(-1), np.abs(val)):
        raise AssertionError("not a monomial matrix")
    return col, val


class FastConsts:
    """Constant tensors of the fast path for one spec on one (device, dtype)."""

    def __init__(
        self, spec: CircuitSpec, tables: Tables, device: torch.device, dtype: torch.dtype
    ) -> None:
        n, k, n_layers, dim = spec.n_qubits, spec.n_rot, spec.n_layers, spec.dim
        cdtype = torch.complex64 if dtype == torch.float32 else torch.complex128
        self.n, self.k, self.n_layers, self.dim = n, k, n_layers, dim
        self.stride = 2 ** (n - spec.n_inputs)
        self.size = n_layers * n * dim * dim
        # R(θ) as a trigonometric polynomial of the half angles h = θ/2 (frequencies ±1 each):
        # rot = cos(θ @ freq + offset) @ coef. Variant 1 + j shifts θ_j by π (h_j by π/2).
        freq, offset, coef = _fourier(spec.rotations)  # (k, F), (F,), (F, 8)
        offsets = offset[None] + np.concatenate([np.zeros((1, len(offset))), freq * math.pi / 2])
        self.freq = torch.as_tensor(np.tile(freq / 2, 1 + k), dtype=dtype, device=device)
        self.offsets = torch.as_tensor(offsets.reshape(-1), dtype=dtype, device=device)
        self.freq0 = torch.as_tensor(freq / 2, dtype=dtype, device=device)  # (k, F)
        self.offset0 = torch.as_tensor(offset, dtype=dtype, device=device)  # (F,)
        self.coef = torch.as_tensor(coef, dtype=dtype, device=device)  # (F, 8)
        self.n_freq = len(offset)
        # X_l = A_l·U_lᵀ·B_l: X_l[a, b] = cA[a]·cB[b]·Π_w R_w[β(b)_w, α(a)_w]
        perm, sign = signed_permutation(spec.gates, n)
        e_t = np.zeros((dim, dim), dtype=complex)  # Eᵀ, (Eψ)[c] = sign[c]·ψ[perm[c]]
        e_t[perm, np.arange(dim)] = sign
        eye = np.eye(dim, dtype=complex)
        phase = np.diag((-1j) ** bit_table(n)[: spec.n_inputs].sum(0))
        later_a, b_mat = (e_t, eye) if spec.layer_order == "entangler_first" else (eye, e_t)
        alpha, c_a = _monomial(np.stack([phase @ later_a] + [later_a] * (n_layers - 1)))
        beta, c_b = _monomial(b_mat.T)  # column b of B: its row β(b)
        if not (alpha == alpha[0]).all():
            raise AssertionError("layers differ in their permutation")
        bits = bit_table(n)  # (n, D)
        # Xᵀ layout, e = b·D + a: entry 2·row + col of wire w's 2×2
        entry = 2 * bits[:, beta][:, :, None] + bits[:, alpha[0]][:, None, :]  # (n, D, D)
        const = c_b[None, :, None] * c_a[:, None, :]  # (L, D, D) in Xᵀ layout
        self.const = (
            None
            if np.allclose(const, 1)
            else torch.as_tensor(const.reshape(n_layers, -1), dtype=cdtype, device=device)
        )  # (L, D²)
        # row w: the entries of the other wires, then wire w itself (rotation variant 0 of each),
        # as indices into the flattened (n, 1+k, 4) complex entries, interleaved (re, im)
        order = np.array([[i for i in range(n) if i != w] + [w] for w in range(n)])  # (n, n)
        layer = np.arange(n_layers)[None, :, None, None]
        # (n, L, n, D²) into the flattened (n, L, 1+k, 4) complex entries
        index = (order[:, None, :, None] * n_layers + layer) * (1 + k) * 4
        index = index + entry[order].reshape(n, 1, n, -1)
        self.loo_gather = _interleaved(index, device)
        # binning of the interleaved (re, im) of Σ_e over entry_w(e) = a, as (re, -im) of each a
        onehot = (entry.reshape(n, -1, 1) == np.arange(4)).astype(float)  # (n, D², 4)
        bins = np.zeros((n, dim * dim, 2, 4, 2))
        bins[:, :, 0, :, 0], bins[:, :, 1, :, 1] = onehot, -onehot
        self.bins = torch.as_tensor(
            bins.reshape(n, 1, 2 * dim * dim, 8), dtype=dtype, device=device
        )  # (n, 1, 2D², 8)
        # (L, n, D²) into the flattened (n, L, 1, 4) complex entries
        base = np.arange(n)[None, :, None] * n_layers + np.arange(n_layers)[:, None, None]
        base = base * 4 + entry.reshape(1, n, -1)
        self.base_gather = _interleaved(base, device)
        self.eye = torch.eye(dim, dtype=cdtype, device=device)
        # encoding: θ/2 = scale·x ("linear") or atan(x); cos/sin pairs gathered into r (D',)
        table = spec.encoding_table()
        self.enc_scale = torch.as_tensor(
            [sc / 2 if kind == "linear" else 0.0 for kind, sc in table], dtype=dtype, device=device
        )  # (n_in,); 0 on atan inputs keeps x·0 = nan for x = ±inf
        self.enc_atan = (
            torch.as_tensor([kind == "atan" for kind, _ in table], dtype=dtype, device=device)
            if any(kind == "atan" for kind, _ in table)
            else None
        )
        self.enc_offsets = torch.as_tensor([0.0, math.pi / 2], dtype=dtype, device=device)
        self.enc_gather = torch.as_tensor(tables.enc_gather.reshape(-1), device=device)
        self.n_inputs = spec.n_inputs
        self.readout2 = torch.as_tensor(tables.readout2, dtype=dtype, device=device)  # (2D, m)
        self.readout2_t = self.readout2.T.contiguous()  # (m, 2D)
        self.readout2_conj_t = self.readout2_t * torch.as_tensor(
            [1.0, -1.0], dtype=dtype, device=device
        ).repeat(dim)  # (m, 2D): the imaginary columns negated


def _interleaved(index: np.ndarray, device: torch.device) -> Tensor:
    """Complex-entry indices as indices into the (re, im) interleaved real view, flattened."""
    return torch.as_tensor(np.stack([2 * index, 2 * index + 1], -1).reshape(-1), device=device)


def _fourier(rotations: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """R = R_{k-1}(θ_{k-1})⋯R_0(θ_0) as cos(θ/2 @ freq + offset) @ coef: freq (k, F) of ±1,
    offset (F,) of 0 (cos) or -π/2 (sin), coef (F, 8) real: the row-major entries as (re, im).

    Every entry is multilinear in the (cos, sin) of each half angle, so a trigonometric
    polynomial with frequencies ±1 per angle; coef is solved for exactly from sample points.
    """
    k = len(rotations)
    signs = np.array(
        [[1] + [1 - 2 * ((t >> j) & 1) for j in range(k - 1)] for t in range(2 ** (k - 1))]
    )
    freq = np.repeat(signs.T, 2, axis=1).astype(float)  # (k, F), F = 2^k
    offset = np.tile([0.0, -math.pi / 2], 2 ** (k - 1))
    pauli = {
        "X": np.array([[0, 1], [1, 0]]),
        "Y": np.array([[0, -1j], [1j, 0]]),
        "Z": np.array([[1, 0], [0, -1]]),
    }
    rng = np.random.default_rng(0)
    half = rng.uniform(-math.pi, math.pi, size=(8 * 2**k, k))
    target = []
    for h in half:
        mat = np.eye(2, dtype=complex)
        for j, axis in enumerate(rotations):
            mat = (math.cos(h[j]) * np.eye(2) - 1j * math.sin(h[j]) * pauli[axis]) @ mat
        target.append(np.stack([mat.reshape(4).real, mat.reshape(4).imag], -1).reshape(8))
    basis = np.cos(half @ freq + offset)
    coef = np.linalg.lstsq(basis, np.array(target), rcond=None)[0]
    coef = np.round(coef * 2**k) / 2**k  # the exact coefficients are multiples of 2^-(k-1)
    if not np.allclose(basis @ coef, target, atol=1e-12):
        raise AssertionError(f"no Fourier form found for rotations={rotations!r}")
    return freq, offset, coef


def fits(c: FastConsts, weights: Tensor, limit: int) -> bool:
    """Whether the leave-one-out table for these weights has at most ``limit`` complex entries."""
    return c.size * (weights.numel() // (c.n * c.n_layers * c.k)) <= limit


def product_state(c: FastConsts, x: Tensor) -> Tensor:
    """The real RX product state of the encoded wires. x (*X, n_in) -> r (*X, 2^n_in).

    Non-finite inputs give a non-finite r (also on atan inputs, where atan(±inf) is finite).
    """
    half = x * c.enc_scale  # (*X, n_in)
    if c.enc_atan is not None:
        half = torch.addcmul(half, torch.atan(x), c.enc_atan)
    pairs = torch.cos(half.unsqueeze(-1) - c.enc_offsets)  # (*X, n_in, 2): cos, sin
    gathered = pairs.flatten(-2).index_select(-1, c.enc_gather)  # (*X, n_in·2^n_in)
    return gathered.unflatten(-1, (c.n_inputs, -1)).prod(-2)


def _layers(c: FastConsts, weights: Tensor) -> Tensor:
    """X_lᵀ. weights (*P, n, L, k) -> (*P, L, D, D) complex."""
    rot = (torch.matmul(weights, c.freq0).add_(c.offset0).cos_() @ c.coef).flatten(-3)
    entries = rot.index_select(-1, c.base_gather).view(*weights.shape[:-3], c.n_layers, c.n, -1, 2)
    xt = torch.view_as_complex(entries).prod(-2)  # (*P, L, D²)
    if c.const is not None:
        xt = xt * c.const
    return xt.unflatten(-1, (c.dim, c.dim))


def _layer_parts(c: FastConsts, weights: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """X_lᵀ (*P, L, D, D); LOO_w = const·Π_{i≠w} R_i[entry_i] (*P, n, L, D²); the π-shifted
    rotations R_w^{(j)} = 2·∂R_w/∂θ_j, (*P, n, L, k, 8) real (re, im interleaved)."""
    p, n, k = weights.shape[:-3], c.n, c.k
    arg = torch.matmul(weights, c.freq).add_(c.offsets).cos_()  # (*P, n, L, (1+k)·F)
    rot = arg.view(*p, n, c.n_layers, 1 + k, c.n_freq) @ c.coef  # (*P, n, L, 1+k, 8)
    gathered = rot.flatten(-4).index_select(-1, c.loo_gather)
    entries = torch.view_as_complex(gathered.view(*p, n, c.n_layers, n, -1, 2))
    loo = entries[..., :-1, :].prod(-2)  # (*P, n, L, D²)
    if c.const is not None:
        loo *= c.const
    xt = loo[..., 0, :, :] * entries[..., 0, :, -1, :]  # (*P, L, D²)
    return xt.unflatten(-1, (c.dim, c.dim)), loo, rot[..., 1:, :]


def _chain(c: FastConsts, xt: Tensor, keep: bool) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """W = X_0⋯X_{L-1} (*P, D, D); with ``keep`` also the prefixes Pre_l = X_0⋯X_{l-1} and the
    suffixes Suf_l = X_{l+1}⋯X_{L-1}, l < L, stacked (*P, L, D, D)."""
    x = xt.mT  # (*P, L, D, D)
    pre = [x[..., 0, :, :]]
    for layer in range(1, c.n_layers):
        pre.append(pre[-1] @ x[..., layer, :, :])
    if not keep:
        return pre[-1], None, None
    eye = c.eye.expand_as(pre[0])
    suf = [eye]
    for layer in range(c.n_layers - 1, 0, -1):
        suf.insert(
            0, x[..., layer, :, :] if layer == c.n_layers - 1 else x[..., layer, :, :] @ suf[0]
        )
    return pre[-1], torch.stack([eye, *pre[:-1]], dim=-3), torch.stack(suf, dim=-3)


def _readout(c: FastConsts, w_total: Tensor, r: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(⟨Z⟩ (*O, m), amps (*O, 2D), W rows as real (*P, D', 2D))."""
    rows = w_total[..., :: c.stride, :] if c.stride > 1 else w_total
    wr = torch.view_as_real(rows).flatten(-2)  # (*P, D', 2D)
    amps = r @ wr  # (*O, 2D)
    return amps.square() @ c.readout2, amps, wr


class _FastExpval(torch.autograd.Function):
    """(weights (*P, n, L, k), r (*X, D')) -> ⟨Z⟩ (*O, m); see the module docstring."""

    @staticmethod
    def forward(ctx: Any, weights: Tensor, r: Tensor, c: FastConsts) -> Tensor:
        need_w = ctx.needs_input_grad[0]
        if need_w:
            xt, loo, shifted = _layer_parts(c, weights)
        else:
            xt = _layers(c, weights)
        w_total, pres, sufs = _chain(c, xt, keep=need_w)
        out, amps, wr = _readout(c, w_total, r)
        ctx.c = c
        if need_w:
            ctx.save_for_backward(weights, r, amps, wr, pres, sufs, loo, shifted)
        else:
            ctx.save_for_backward(weights, r, amps, wr)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        c: FastConsts = ctx.c
        weights, r, amps, wr, *rest = ctx.saved_tensors
        # ∂⟨Z⟩/∂amps = 2·amps·S; the 2 cancels the ½ of ∂R/∂θ = R^{(j)}/2 below
        grad_r = None
        if ctx.needs_input_grad[1]:
            g_amps = amps * (grad @ c.readout2_t)  # (*O, 2D)
            grad_r = (2.0 * (g_amps @ wr.mT)).sum_to_size(r.shape)
        if not ctx.needs_input_grad[0]:
            return None, grad_r, None
        pres, sufs, loo, shifted = rest
        g_conj = amps * (grad @ c.readout2_conj_t)  # (*O, 2D): conj of the amplitudes' gradient
        r2 = r.unsqueeze(-2) if r.ndim == 1 else r
        g2 = g_conj.unsqueeze(-2) if g_conj.ndim == 1 else g_conj
        g_w = (r2.mT @ g2).sum_to_size(wr.shape)  # (*P, D', 2D): conj(G), G = ∂loss/∂W rows
        g_h = torch.view_as_complex(g_w.unflatten(-1, (-1, 2))).mT  # (*P, D, D') = G^H
        left = g_h.unsqueeze(-3) @ pres[..., :: c.stride, :]  # (*P, L, D, D) = G^H·Pre_l
        h = sufs @ left  # (*P, L, D, D): H_l = Suf_l·G^H·Pre_l, in X_lᵀ's layout
        weighted = torch.view_as_real(h.flatten(-2).unsqueeze(-3) * loo)  # (*P, n, L, D², 2)
        bins = weighted.flatten(-2).unsqueeze(-2) @ c.bins  # (*P, n, L, 1, 8): conj of the bins
        dw = (shifted @ bins.mT)[..., 0]  # (*P, n, L, k) = Re Σ_a R^{(j)}[a]·bins[a]
        return dw.sum_to_size(weights.shape), grad_r, None


def expval_z(c: FastConsts, weights: Tensor, r: Tensor) -> Tensor:
    """⟨Z_m⟩ (*O, m) from weights (*P, n, L, k) and the real product state r (*X, D')."""
    if torch.is_grad_enabled() and (weights.requires_grad or r.requires_grad):
        out: Tensor = _FastExpval.apply(weights, r, c)
        return out
    return _readout(c, _chain(c, _layers(c, weights), keep=False)[0], r)[0]
