"""The closed-form fast path of the non-re-uploading, noiseless circuit (e.g. the QA2C paper's).

Row-vector convention: the final state is ``ψ = r @ W`` with r the real RX product state of the
encoded wires and ``W = X_0 X_1 ⋯ X_{L-1}``, ``X_l = A_l · U_lᵀ · B_l``. U_l = ⊗_w R_{w,l} is the
layer's Kronecker product of per-wire rotations; A_l, B_l are constant monomial matrices: the
transposed entangler (a signed permutation) on the side given by ``layer_order``, and in A_0 also
the phase diag((-i)^popcount) of the RX product state (so that r is real). So every entry of X_l is
a constant times a product of one entry of each wire's 2×2: X_l is built by one gather and one
product, with the permutations folded into the gather index.

Forward (one custom autograd Function; the number of kernels barely grows with L): the product
state r = cos(h @ F + o) @ C (product to sum over the half angles h; small encodings) or a gather
and a product; the per-wire 2×2s of every layer and their π-shifted variants from the cosines of
the half angles (one addmm, one cos, one matmul); one gather and one product for X_l and the
leave-one-out products LOO_w = const·Π_{i≠w} R_i (row w lists its entries sorted by wire w's
2×2 entry, for the gradient); the prefix chain Pre_{l+1} = Pre_l·X_l (and suffixes for L > 2);
amplitudes r @ W (real, re/im interleaved); outputs |ψ|² @ S with S the ±1 table of ⟨Z⟩ or the
0/1 table of P(wire reads 0) (``output="prob0"``).

Backward: with G the gradient of W (complex, conjugate-Wirtinger),
∂loss/∂θ_{w,l,j} = ½·Re Σ_e H_l[e]·LOO_{l,w}[e]·R_{w,l}^{(j)}[entry_w(e)] with
H_l = Suf_l·G^H·Pre_l (in X_lᵀ's layout) and R^{(j)} = R(θ_j + π) = 2·∂R/∂θ_j: two matmuls for all
layers, one gather of H into the LOO rows' order, one multiply, one sum per quarter (the four
entries of wire w's 2×2) and one contraction for all weights. Weights outside the light cone
(``dead``) get an exactly zero gradient. Higher orders (``create_graph=True``: a Hessian, a
gradient penalty) differentiate the same forward written in plain autograd ops (``expval_autograd``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import Tensor

from qa2c.sim.spec import PAULI, CircuitSpec, Tables, bit_table, signed_permutation

#: encodings of at most this many inputs use the trigonometric-polynomial product state
ENC_POLY_MAX_INPUTS = 6


def _monomial(m: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A matrix with one nonzero per row: (column of each row's nonzero, its value)."""
    col = np.abs(m).argmax(-1)
    val = np.take_along_axis(m, col[..., None], -1)[..., 0]
    if not np.allclose(np.abs(m).sum(-1), np.abs(val)):
        raise AssertionError("not a monomial matrix")
    return col, val


class Readout:
    """A readout table (2D, m) over the (re, im) interleaved squared amplitudes, with the two
    transposes the backward needs."""

    def __init__(self, table: Tensor, dim: int) -> None:
        self.table = table  # (2D, m)
        self.table_t = table.T.contiguous()  # (m, 2D)
        sign = torch.as_tensor([1.0, -1.0], dtype=table.dtype, device=table.device).repeat(dim)
        self.conj_t = self.table_t * sign  # (m, 2D): the imaginary columns negated


class FastConsts:
    """Constant tensors of the fast path for one spec on one (device, dtype)."""

    def __init__(
        self,
        spec: CircuitSpec,
        tables: Tables,
        device: torch.device,
        dtype: torch.dtype,
        live: Tensor | None = None,
    ) -> None:
        n, k, n_layers, dim = spec.n_qubits, spec.n_rot, spec.n_layers, spec.dim
        #: (n, L, k) 1.0 for weights in the light cone, 0.0 for dead ones (None: none are dead)
        self.live = live
        cdtype = torch.complex64 if dtype == torch.float32 else torch.complex128
        self.n, self.k, self.n_layers, self.dim = n, k, n_layers, dim
        self.stride = 2 ** (n - spec.n_inputs)
        self.size = n_layers * n * dim * dim
        # R(θ) as a trigonometric polynomial of the half angles h = θ/2 (frequencies ±1 each):
        # rot = cos(θ @ freq + offset) @ coef. Variant 1 + j shifts θ_j by π (h_j by π/2). With
        # gradients all 1 + k variants are computed at once, plus a constant entry 1 (cos 0).
        freq, offset, coef = _fourier(spec.rotations)  # (k, F), (F,), (F, 8)
        n_f = len(offset)
        shifts = np.concatenate([np.zeros((1, n_f)), freq * math.pi / 2])  # (1+k, F)
        freq_all = np.concatenate([np.tile(freq / 2, 1 + k), np.zeros((k, 1))], 1)
        offsets_all = np.append((offset[None] + shifts).reshape(-1), 0.0)
        coef_all = np.zeros(((1 + k) * n_f + 1, (1 + k) * 8 + 2))
        for v in range(1 + k):
            coef_all[v * n_f : (v + 1) * n_f, v * 8 : (v + 1) * 8] = coef
            if v > 0:  # the π-shifted variants only feed the backward, as (re, -im)
                coef_all[v * n_f : (v + 1) * n_f, v * 8 + 1 : (v + 1) * 8 : 2] *= -1
        coef_all[-1, -2] = 1.0  # the constant entry 1 + 0i
        self.freq_all = torch.as_tensor(freq_all, dtype=dtype, device=device)  # (k, (1+k)F+1)
        self.offsets_all = torch.as_tensor(offsets_all, dtype=dtype, device=device)
        self.coef_all = torch.as_tensor(coef_all, dtype=dtype, device=device)  # (.., (1+k)·8+2)
        self.freq0 = torch.as_tensor(freq / 2, dtype=dtype, device=device)  # (k, F)
        self.offset0 = torch.as_tensor(offset, dtype=dtype, device=device)  # (F,)
        self.coef = torch.as_tensor(coef, dtype=dtype, device=device)  # (F, 8)
        n_rot = (1 + k) * 4 + 1  # complex entries per (wire, layer) with gradients
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
        # e = a·D + b: entry 2·row + col of wire w's 2×2 in X[a, b]
        entry = (2 * bits[:, beta][:, None, :] + bits[:, alpha[0]][:, :, None]).reshape(n, -1)
        const = c_a[:, :, None] * c_b[None, None, :]  # (L, D, D)
        self.const = (
            None
            if np.allclose(const, 1)
            else torch.as_tensor(const.reshape(n_layers, -1), dtype=cdtype, device=device)
        )  # (L, D²), for X_l alone
        # (row, layer, slot, e): row w < n: the entries of the other wires and the constant 1
        # (LOO_w); row n: all wires (X_l). Indices into the flattened (n, L, n_rot) complex entries
        # (rotation variant 0).
        # Row w < n lists the entries e sorted by entry_w(e) (D²/4 of each of wire w's four 2×2
        # entries, in order), so that the backward bins by a plain sum; row n is X_l in order.
        order = np.argsort(entry, axis=1, kind="stable")  # (n, D²)
        if not (
            np.take_along_axis(entry, order, 1).reshape(n, 4, -1) == np.arange(4)[:, None]
        ).all():
            raise AssertionError("unbalanced entry classes")
        index = np.zeros((n + 1, n_layers, n, dim * dim), dtype=np.int64)
        first = np.arange(n_layers)[:, None] * n_rot  # (L, 1)
        for w in range(n + 1):
            cols = order[w] if w < n else np.arange(dim * dim)
            for slot, i in enumerate([i for i in range(n) if i != w]):
                index[w, :, slot] = first + i * n_layers * n_rot + entry[i][cols][None]
            if w < n:
                index[w, :, n - 1] = first + w * n_layers * n_rot + n_rot - 1
        self.loo_gather = _interleaved(index, device)
        # the backward's gather of H_l (L, D²) into each wire's sorted order: (n, L, D²)
        h_index = np.arange(n_layers)[None, :, None] * dim * dim + order[:, None, :]
        self.h_gather = _interleaved(h_index, device)
        self.loo_const: Tensor | None = None  # (n+1, L, D²): row w's constant in its sorted order
        if self.const is not None:
            flat = const.reshape(n_layers, -1)  # (L, D²)
            rows = np.stack([flat[:, order[w]] for w in range(n)] + [flat])
            self.loo_const = torch.as_tensor(rows, dtype=cdtype, device=device)
        # (L, n, D²) into the flattened (n, L, 4) complex entries (no gradients)
        base = (np.arange(n)[None, :, None] * n_layers + np.arange(n_layers)[:, None, None]) * 4
        self.base_gather = _interleaved(base + entry[None], device)
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
        self.enc_scale2 = self.enc_scale[:, None]  # (n_in, 1)
        self.enc_atan2 = None if self.enc_atan is None else self.enc_atan[:, None]
        self.enc_negoff = torch.as_tensor([0.0, -math.pi / 2], dtype=dtype, device=device).expand(
            spec.n_inputs, 2
        )  # cos(h - π/2) = sin h
        self.enc_gather = torch.as_tensor(tables.enc_gather.reshape(-1), device=device)
        # small encodings: r = cos(h @ freq + offset) @ coef, a trigonometric polynomial of the half
        # angles h (h = scale·x or atan x, folded into the two input matrices): three or five
        # vectorised kernels instead of a gather and a strided product
        self.enc_poly: tuple[Tensor, Tensor | None, Tensor, Tensor] | None = None
        if spec.n_inputs <= ENC_POLY_MAX_INPUTS:
            freq_e, off_e, coef_e = _product_fourier(tables.enc_gather)
            lin = np.array([sc / 2 if kind == "linear" else 0.0 for kind, sc in table])
            atan = np.array([kind == "atan" for kind, _ in table], dtype=float)
            self.enc_poly = (
                torch.as_tensor(lin[:, None] * freq_e, dtype=dtype, device=device),
                torch.as_tensor(atan[:, None] * freq_e, dtype=dtype, device=device)
                if atan.any()
                else None,
                torch.as_tensor(off_e, dtype=dtype, device=device),
                torch.as_tensor(coef_e, dtype=dtype, device=device),
            )  # (n_in, F), (n_in, F) | None, (F,), (F, 2^n_in)
        self.n_inputs = spec.n_inputs
        z_table = torch.as_tensor(tables.readout2, dtype=dtype, device=device)  # (2D, m) of ±1
        # "expval": ⟨Z_i⟩; "prob0": P(wire i reads 0) = (1 + ⟨Z_i⟩)/2 from the 0/1 table (the
        # squared amplitudes sum to 1), so a head that wants p_i needs no extra kernels
        self.readouts = {
            "expval": Readout(z_table, dim),
            "prob0": Readout((z_table + 1) / 2, dim),
        }


def _interleaved(index: np.ndarray, device: torch.device) -> Tensor:
    """Complex-entry indices as indices into the (re, im) interleaved real view, flattened."""
    return torch.as_tensor(np.stack([2 * index, 2 * index + 1], -1).reshape(-1), device=device)


def _cosine_form(
    n: int, target: Callable[[np.ndarray], np.ndarray], what: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A function of n half angles h that is multilinear in each (cos h_i, sin h_i), written as
    cos(h @ freq + offset) @ coef: freq (n, F) of ±1 (h_0 always +), offset (F,) of 0 (cos) or
    -π/2 (sin), F = 2^n (product to sum; cos is even, so half the sign patterns suffice).
    coef (F, T) is solved for from sample points and rounded to exact multiples of 2^-n.
    target: half angles (S, n) -> values (S, T)."""
    signs = np.array(
        [[1] + [1 - 2 * ((t >> j) & 1) for j in range(n - 1)] for t in range(2 ** (n - 1))]
    )
    freq = np.repeat(signs.T, 2, axis=1).astype(float)  # (n, F)
    offset = np.tile([0.0, -math.pi / 2], 2 ** (n - 1))
    half = np.random.default_rng(0).uniform(-math.pi, math.pi, size=(8 * 2**n, n))
    values = target(half)
    basis = np.cos(half @ freq + offset)
    coef = np.linalg.lstsq(basis, values, rcond=None)[0]
    coef = np.round(coef * 2**n) / 2**n
    if not np.allclose(basis @ coef, values, atol=1e-12):
        raise AssertionError(f"no cosine form found for {what}")
    return freq, offset, coef


def _fourier(rotations: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """R = R_{k-1}(θ_{k-1})⋯R_0(θ_0) as cos(θ/2 @ freq + offset) @ coef, coef (F, 8): the
    row-major entries of R as (re, im)."""

    def entries(half: np.ndarray) -> np.ndarray:
        out = []
        for h in half:
            mat = np.eye(2, dtype=complex)
            for j, axis in enumerate(rotations):
                mat = (math.cos(h[j]) * np.eye(2) - 1j * math.sin(h[j]) * PAULI[axis]) @ mat
            out.append(np.stack([mat.reshape(4).real, mat.reshape(4).imag], -1).reshape(8))
        return np.array(out)

    return _cosine_form(len(rotations), entries, f"rotations={rotations!r}")


def _product_fourier(enc_gather: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The product state r_b = Π_i (cos h_i, sin h_i)[bit_i(b)] as cos(h @ freq + offset) @ coef,
    coef (2^n, 2^n). enc_gather (n, 2^n): index 2·i + bit of input i for every basis state."""
    n = enc_gather.shape[0]

    def product(half: np.ndarray) -> np.ndarray:
        pairs = np.stack([np.cos(half), np.sin(half)], -1).reshape(len(half), 2 * n)
        return pairs[:, enc_gather].prod(1)  # (S, 2^n)

    return _cosine_form(n, product, "the product state")


def fits(c: FastConsts, weights: Tensor, limit: int) -> bool:
    """Whether the leave-one-out table for these weights has at most ``limit`` complex entries."""
    return c.size * (weights.numel() // (c.n * c.n_layers * c.k)) <= limit


def product_state(c: FastConsts, x: Tensor, half: Tensor | None = None) -> Tensor:
    """The real RX product state of the encoded wires. x (*X, n_in) -> r (*X, 2^n_in).

    With ``half`` (*X, n_in) the encoding half-angles are given (input scaling) and x is unused.
    Non-finite inputs give a non-finite r (also on atan inputs, where atan(±inf) is finite).
    """
    if half is not None:  # r_b = Π_i (cos h_i, sin h_i)[bit_i(b)]
        pairs = torch.cos(half.unsqueeze(-1) + c.enc_negoff).flatten(-2)  # (*X, n_in·2)
        gathered = pairs.index_select(-1, c.enc_gather)  # (*X, n_in·2^n_in)
        return _prod_dim(gathered.view(*gathered.shape[:-1], c.n_inputs, -1), -2)
    if c.enc_poly is not None:
        lin, atan, off, coef = c.enc_poly
        x2 = x.reshape(-1, c.n_inputs)  # (N, n_in)
        arg = torch.addmm(off, x2, lin)  # inf·0 = nan on atan inputs keeps non-finite x visible
        if atan is not None:
            arg = arg.addmm_(x2.atan(), atan)
        r = arg.cos_().mm(coef)  # (N, 2^n_in)
        return r.view(*x.shape[:-1], -1)
    xe = x.unsqueeze(-1)  # (*X, n_in, 1)
    half = torch.addcmul(c.enc_negoff, xe, c.enc_scale2)  # (*X, n_in, 2): h, h - π/2
    if c.enc_atan2 is not None:
        half = torch.addcmul(half, xe.atan(), c.enc_atan2)
    pairs = half.cos_().flatten(-2)  # (*X, n_in·2): cos h, sin h per input
    gathered = pairs.index_select(-1, c.enc_gather)  # (*X, n_in·2^n_in)
    return gathered.view(*gathered.shape[:-1], c.n_inputs, -1).prod(-2)


def _prod_dim(t: Tensor, dim: int) -> Tensor:
    """Product over ``dim`` as a chain of multiplies (a differentiable product even through zeros)."""
    parts = t.unbind(dim)
    out = parts[0]
    for part in parts[1:]:
        out = out * part
    return out


def _layers(c: FastConsts, weights: Tensor) -> Tensor:
    """X_l. weights (*P, n, L, k) -> (*P, L, D, D) complex."""
    arg = torch.matmul(weights, c.freq0).add_(c.offset0).cos_()
    rot = (arg @ c.coef).flatten(-3)  # (*P, n·L·8)
    entries = rot.index_select(-1, c.base_gather).view(*weights.shape[:-3], c.n_layers, c.n, -1, 2)
    x = torch.view_as_complex(entries).prod(-2)  # (*P, L, D²)
    if c.const is not None:
        x = x * c.const
    return x.view(*x.shape[:-1], c.dim, c.dim)


def _layer_parts(c: FastConsts, weights: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """X_l (*P, L, D, D); LOO_w = const·Π_{i≠w} R_i[entry_i] (*P, n, L, D²) (the first n rows of
    the returned (*P, n+1, L, D²)); the rotations and their π-shifted variants, (*P, n, L, ·) real:
    entries 8·(1+j) .. 8·(2+j) are R_w^{(j)} = 2·∂R_w/∂θ_j, (re, im) interleaved."""
    p, n, n_layers = weights.shape[:-3], c.n, c.n_layers
    if weights.dim() == 3:  # one parameter set: 2-D kernels
        arg = torch.addmm(c.offsets_all, weights.reshape(n * n_layers, -1), c.freq_all).cos_()
        rot = arg.mm(c.coef_all).view(n, n_layers, -1)  # (n, L, (1+k)·8 + 2)
    else:
        arg = torch.matmul(weights, c.freq_all).add_(c.offsets_all).cos_()
        rot = arg @ c.coef_all  # (*P, n, L, (1+k)·8 + 2)
    gathered = rot.flatten(-3).index_select(-1, c.loo_gather)
    prods = torch.view_as_complex(gathered.view(*p, n + 1, n_layers, n, -1, 2)).prod(-2)
    if c.loo_const is not None:
        prods *= c.loo_const  # (*P, n+1, L, D²)
    return prods[..., n, :, :].view(*p, n_layers, c.dim, c.dim), prods, rot


def _chain(c: FastConsts, x: Tensor, keep: bool) -> tuple[Tensor, Tensor, Tensor]:
    """W = X_0⋯X_{L-1} (*P, D, D); with ``keep`` the transposed prefixes Pre_lᵀ,
    Pre_l = X_0⋯X_{l-1}, and suffixes Suf_lᵀ, Suf_l = X_{l+1}⋯X_{L-1}, l < L, stacked (*P, L, D, D),
    else X_0 and X_{L-1}."""
    layers = x.unbind(-3)
    pre = [layers[0]]
    for layer in layers[1:]:
        pre.append(pre[-1] @ layer)
    if not keep:
        return pre[-1], layers[0], layers[-1]
    eye = c.eye.expand_as(pre[0])
    suf = [eye]
    for layer in reversed(layers[1:]):
        suf.insert(0, layer if len(suf) == 1 else layer @ suf[0])
    pres = torch.stack([eye, *pre[:-1]], dim=-3)
    return pre[-1], pres.mT, torch.stack([*suf[:-1], eye], dim=-3).mT


def _readout(
    c: FastConsts, ro: Readout, w_total: Tensor, r: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """(outputs (*O, m), amps (*O, 2D), W rows as real (*P, D', 2D))."""
    rows = w_total[..., :: c.stride, :] if c.stride > 1 else w_total
    wr = torch.view_as_real(rows).flatten(-2)  # (*P, D', 2D)
    amps = r @ wr  # (*O, 2D)
    return amps.square() @ ro.table, amps, wr


class _FastExpval(torch.autograd.Function):
    """(weights (*P, n, L, k), r (*X, D')) -> ⟨Z⟩ or P(0) (*O, m); see the module docstring."""

    @staticmethod
    def forward(ctx: Any, weights: Tensor, r: Tensor, c: FastConsts, ro: Readout) -> Tensor:
        need_w = ctx.needs_input_grad[0]
        if need_w:
            x, prods, rot = _layer_parts(c, weights)
        else:
            x = _layers(c, weights)
        # two layers, all rows encoded (the paper circuit): Pre = (I, X_0), Suf = (X_1, I) are
        # used directly in the backward instead of being stacked
        two = c.n_layers == 2 and c.stride == 1
        # with two: pres_t, sufs_t are X_0, X_1
        w_total, pres_t, sufs_t = _chain(c, x, keep=need_w and not two)
        out, amps, wr = _readout(c, ro, w_total, r)
        ctx.c, ctx.ro = c, ro
        # intermediates ride on ctx (the docs' rule: save_for_backward is for inputs and outputs)
        ctx.save_for_backward(weights, r)
        ctx.w_shape = weights.shape
        ctx.parts = (amps, wr, pres_t, sufs_t, prods, rot) if need_w else (amps, wr)
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        if torch.is_grad_enabled():  # create_graph=True: differentiable to any order
            weights, r = ctx.saved_tensors
            return differentiable_backward(
                lambda w, r_: expval_autograd(ctx.c, ctx.ro, w, r_), ctx, grad, weights, r
            )
        return _backward(ctx, grad)


def differentiable_backward(
    forward: Callable[[Tensor, Tensor], Tensor],
    ctx: Any,
    grad: Tensor,
    weights: Tensor,
    other: Tensor,
) -> tuple[Tensor | None, Tensor | None, None, None]:
    """The backward of a hand-written Function under ``create_graph=True``: ``forward`` in plain
    autograd ops is recomputed from the saved inputs and differentiated with a graph, so the
    gradient is itself differentiable (Hessians, gradient penalties)."""
    need = ctx.needs_input_grad[:2]
    inputs = [t for t, n in zip((weights, other), need, strict=True) if n]
    with torch.enable_grad():
        out = forward(weights, other)
        grads = list(torch.autograd.grad(out, inputs, grad, create_graph=True, allow_unused=True))
    g_w = grads.pop(0) if need[0] else None
    g_o = grads.pop(0) if need[1] else None
    return g_w, g_o, None, None


def _backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
    """The backward of ``_FastExpval`` (first order: saved tensors carry no graph)."""
    c: FastConsts = ctx.c
    ro: Readout = ctx.ro
    _, r = ctx.saved_tensors
    amps, wr, *rest = ctx.parts
    # ∂⟨Z⟩/∂amps = 2·amps·S; the 2 cancels the ½ of ∂R/∂θ = R^{(j)}/2 below
    grad_r = None
    if ctx.needs_input_grad[1]:
        g_amps = amps * (grad @ ro.table_t)  # (*O, 2D)
        grad_r = (2.0 * (g_amps @ wr.mT)).sum_to_size(r.shape)
    if not ctx.needs_input_grad[0]:
        return None, grad_r, None, None
    pres_t, sufs_t, prods, rot = rest
    g_conj = amps * (grad @ ro.conj_t)  # (*O, 2D): conj of the amplitudes' gradient
    r2 = r.unsqueeze(-2) if r.ndim == 1 else r
    g2 = g_conj.unsqueeze(-2) if g_conj.ndim == 1 else g_conj
    g_w = r2.mT @ g2  # (*P, D', 2D): conj(G), G = ∂loss/∂W on the encoded rows
    if g_w.shape != wr.shape:
        g_w = g_w.sum_to_size(wr.shape)
    g_c = torch.view_as_complex(g_w.view(*g_w.shape[:-1], -1, 2))  # (*P, D', D)
    n, n_layers, dim, p = c.n, c.n_layers, c.dim, g_c.shape[:-2]
    if n_layers == 2 and c.stride == 1:
        x_0, x_1 = pres_t, sufs_t
        h_t = torch.stack([g_c @ x_1.mT, x_0.mT @ g_c], dim=-3)
    else:
        rows = pres_t[..., :: c.stride] if c.stride > 1 else pres_t  # (*P, L, D, D')
        left = (rows.reshape(*p, n_layers * dim, -1) @ g_c).view(*p, n_layers, dim, dim)
        h_t = left @ sufs_t  # (*P, L, D, D)
    # h_t[l] = (Suf_l·G^H·Pre_l)ᵀ = Pre_lᵀ·conj(G)·Suf_lᵀ, in X_l's layout; gathered into each
    # wire's sorted order of the LOO rows, where entry a of wire w is the a-th quarter
    h_w = torch.view_as_real(h_t).reshape(*p, -1).index_select(-1, c.h_gather)
    weighted = torch.view_as_complex(h_w.view(*p, n, n_layers, -1, 2)) * prods[..., :n, :, :]
    bins = weighted.view(*p, n, n_layers, 4, -1).sum(-1)  # (*P, n, L, 4)
    shifted = rot[..., 8 : 8 * (1 + c.k)].view(*rot.shape[:-1], c.k, 8)  # (re, -im) of R^{(j)}
    # (*P, n, L, k) = Re Σ_a R^{(j)}[a]·bins[a]
    dw = (shifted * torch.view_as_real(bins).view(*p, n, n_layers, 1, 8)).sum(-1)
    if c.live is not None:  # exactly zero, not round-off, for weights outside the light cone
        dw.mul_(c.live)
    if dw.shape != ctx.w_shape:
        dw = dw.sum_to_size(ctx.w_shape)
    return dw, grad_r, None, None


def expval_autograd(c: FastConsts, ro: Readout, weights: Tensor, r: Tensor) -> Tensor:
    """The forward of ``_FastExpval`` in plain autograd ops (any order of derivatives, torch.func
    transforms). Dead weights are cut from the graph, so their gradient is exactly zero."""
    if c.live is not None:
        weights = torch.where(c.live.bool(), weights, weights.detach())
    return _readout(c, ro, _chain(c, _layers(c, weights), keep=False)[0], r)[0]


def expval_z(c: FastConsts, weights: Tensor, r: Tensor, output: str = "expval") -> Tensor:
    """⟨Z_m⟩ (or P(0) of wire m with ``output="prob0"``) (*O, m) from weights (*P, n, L, k) and
    the real product state r (*X, D')."""
    ro = c.readouts[output]
    if torch.is_grad_enabled() and (weights.requires_grad or r.requires_grad):
        out: Tensor = _FastExpval.apply(weights, r, c, ro)
        return out
    return _readout(c, ro, _chain(c, _layers(c, weights), keep=False)[0], r)[0]
