"""The layered variational circuit of ``qa2c.VQC`` in JAX, with real elementwise arithmetic.

A state is a pair ``(re, im)`` of real arrays ``(B, 2**n)`` (wire 0 = most significant bit, as
``qa2c.sim``). Every gate is applied with plain multiplies and adds on the amplitude pairs it
mixes, an entangler is a static permutation (and signs) of the amplitudes: no complex dtype and no
small matrix products. (One array per amplitude instead was 25x slower: XLA then runs thousands
of tiny ops.) The conventions are those of :class:`qa2c.sim.spec.CircuitSpec`: encoding RX gates
(before the first layer, or before every layer with re-uploading), then per layer the entangler
(a signed permutation of the amplitudes) and the per-wire rotation string (``"ZYZ"`` = RZ, RY, RZ
applied in that order), or the reverse for ``layer_order="rotations_first"``.

The default gradient (``formulation="adjoint"``) is a hand-written adjoint sweep
(:func:`_adjoint_core`), tested against JAX's autodiff of the same gates and against torch.

Weights that the light cone proves dead (``qa2c.sim.diagnostics.dead_parameters``) enter through
``stop_gradient``: their gradient is exactly zero, so Adam never moves them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_batching import custom_vmap

from qa2c.sim.diagnostics import dead_parameters
from qa2c.sim.spec import CircuitSpec, bit_table, signed_permutation

__all__ = ["OUTPUTS", "CircuitFn", "circuit_fn"]

OUTPUTS = ("expval", "prob0")
Array = jax.Array
State = tuple[Array, Array]  # (re, im), each (B, 2**n)
# A 2x2 complex matrix as 8 real arrays: (u00r, u00i, u01r, u01i, u10r, u10i, u11r, u11i)
Mat = tuple[Array, ...]


def _split(state: State, wire: int, n: int) -> tuple[tuple[int, ...], list[Array]]:
    """The amplitude pairs that a gate on ``wire`` mixes: a0r, a1r, a0i, a1i (B, 2**w, 2**(n-1-w))."""
    re, im = state
    lead = re.shape[:-1]
    shape = (*lead, 2**wire, 2, 2 ** (n - 1 - wire))
    re, im = re.reshape(shape), im.reshape(shape)
    return lead, [re[..., 0, :], re[..., 1, :], im[..., 0, :], im[..., 1, :]]


def _join(lead: tuple[int, ...], n: int, n0r: Array, n1r: Array, n0i: Array, n1i: Array) -> State:
    re = jnp.stack([n0r, n1r], -2).reshape(*lead, 2**n)
    im = jnp.stack([n0i, n1i], -2).reshape(*lead, 2**n)
    return re, im


def _mix_1q(halves: list[Array], u: Mat) -> tuple[Array, Array, Array, Array]:
    """The 2x2 gate ``u`` on the amplitude pairs ``a0r, a1r, a0i, a1i``: n0r, n1r, n0i, n1i."""
    a0r, a1r, a0i, a1i = halves
    ar, ai, br, bi, cr, ci, dr, di = u
    n0r = ar * a0r - ai * a0i + br * a1r - bi * a1i
    n0i = ar * a0i + ai * a0r + br * a1i + bi * a1r
    n1r = cr * a0r - ci * a0i + dr * a1r - di * a1i
    n1i = cr * a0i + ci * a0r + dr * a1i + di * a1r
    return n0r, n1r, n0i, n1i


def _mix_rx(halves: list[Array], c: Array, s: Array) -> tuple[Array, Array, Array, Array]:
    """RX(θ) = [[c, -i s], [-i s, c]] on the amplitude pairs: n0r, n1r, n0i, n1i."""
    a0r, a1r, a0i, a1i = halves
    return c * a0r + s * a1i, s * a0i + c * a1r, c * a0i - s * a1r, -s * a0r + c * a1i


def _apply_1q(state: State, wire: int, n: int, u: Mat) -> State:
    """Apply the 2x2 gate ``u`` (entries: scalars, shared by the batch) to ``wire``."""
    lead, halves = _split(state, wire, n)
    return _join(lead, n, *_mix_1q(halves, u))


def _apply_rx(state: State, wire: int, n: int, c: Array, s: Array) -> State:
    """RX(θ) with c = cos(θ/2), s = sin(θ/2) of shape (B,)."""
    lead, halves = _split(state, wire, n)
    return _join(lead, n, *_mix_rx(halves, c[..., None, None], s[..., None, None]))


def _keep(x: Array) -> Array:
    """``x``, computed once and stored.

    XLA's CPU fusion recomputes an elementwise producer inside every consumer's loop, per output
    element: the cos/sin of a circuit's 24 weights were recomputed in a dozen kernels, and the
    product state's in every amplitude (HA2Q at 10 agents: 4.2 -> 2.3 µs per agent-step once
    stored); ``lax.optimization_barrier`` does not stop it. A reduction is a fusion root that XLA
    does not duplicate, so ``x`` is stored as the product of ``x`` and 1 (exact; XLA simplifies
    a max of ``x`` and itself away).
    """
    return jnp.stack([x, jnp.ones_like(x)]).prod(0)


@jax.custom_jvp
def _cos_sin(h: Array) -> tuple[Array, Array]:
    """``cos(h), sin(h)``, each stored once (:func:`_keep`), its JVP reusing them."""
    return _keep(jnp.cos(h)), _keep(jnp.sin(h))


@_cos_sin.defjvp
def _cos_sin_jvp(
    primals: tuple[Array], tangents: tuple[Array]
) -> tuple[tuple[Array, Array], tuple[Array, Array]]:
    c, s = _cos_sin(primals[0])
    return (c, s), (-s * tangents[0], c * tangents[0])


def _matmul(g: Mat, u: Mat) -> Mat:
    """g @ u for 2x2 complex matrices in 8-real form."""

    def mul(xr: Array, xi: Array, yr: Array, yi: Array) -> tuple[Array, Array]:
        return xr * yr - xi * yi, xr * yi + xi * yr

    out: list[Array] = []
    for row in range(2):
        for col in range(2):
            r0, i0 = mul(g[4 * row], g[4 * row + 1], u[2 * col], u[2 * col + 1])
            r1, i1 = mul(g[4 * row + 2], g[4 * row + 3], u[4 + 2 * col], u[4 + 2 * col + 1])
            out += [r0 + r1, i0 + i1]
    return tuple(out)


def _rotation(axis: str, c: Array, s: Array) -> Mat:
    """R_P(θ) = cos(θ/2) I - i sin(θ/2) P in 8-real form."""
    z = jnp.zeros_like(c)
    if axis == "X":
        return (c, z, z, -s, z, -s, c, z)
    if axis == "Y":
        return (c, z, -s, z, s, z, c, z)
    return (c, -s, z, z, z, z, c, s)  # Z


@dataclass(frozen=True)
class CircuitFn:
    """``fn(weights (n, L, k), x (B, n_in), input_weights (n_enc, n_in) | None) -> (B, m)``."""

    spec: CircuitSpec
    output: str
    dead: np.ndarray  # (n, L, k) bool
    fn: Callable[[Array, Array, Array | None], Array]

    def __call__(self, weights: Array, x: Array, input_weights: Array | None = None) -> Array:
        return self.fn(weights, x, input_weights)


FORMULATIONS = ("adjoint", "elementwise", "layer_matrix")


def circuit_fn(
    spec: CircuitSpec,
    output: str = "expval",
    zero_dead: bool = True,
    formulation: str = "adjoint",
) -> CircuitFn:
    """The circuit of ``spec`` as a pure JAX function (see :class:`CircuitFn`).

    ``output``: ``"expval"`` (⟨Z_i⟩ of the measured wires) or ``"prob0"`` ((1 + ⟨Z_i⟩)/2).
    ``zero_dead``: give light-cone-dead weights an exactly zero gradient.
    ``formulation``: ``"adjoint"`` (default: elementwise gates, gradient by the adjoint sweep of
    :func:`_adjoint_core`), ``"elementwise"`` (the same gates, gradient by JAX's autodiff: the
    reference the adjoint is tested against) or ``"layer_matrix"`` (one 16x16 product per layer).
    """
    if output not in OUTPUTS:
        raise ValueError(f"output: expected one of {OUTPUTS}, got {output!r}")
    if formulation not in FORMULATIONS:
        raise ValueError(f"formulation: expected one of {FORMULATIONS}, got {formulation!r}")
    n, n_in, dim = spec.n_qubits, spec.n_inputs, spec.dim
    bits = bit_table(n)  # (n, D)
    perm, sign = signed_permutation(spec.gates, n)
    has_sign = not np.all(sign == 1.0)
    identity_perm = bool(np.all(perm == np.arange(dim)))
    # the RX product state: amplitude r[b]·(-i)^popcount(b) (encoded wires; the rest stay |0⟩)
    pop = bits[:n_in].sum(0) % 4
    phase_re = np.array([1.0, 0.0, -1.0, 0.0])[pop]
    phase_im = np.array([0.0, -1.0, 0.0, 1.0])[pop]
    unencoded = bits[n_in:].sum(0) == 0  # (D,) amplitudes with every unencoded wire at 0
    table = spec.encoding_table()
    atan_mask = np.array([kind == "atan" for kind, _ in table])
    half_scale = np.array([sc / 2 for _, sc in table])  # the torch engine's constants
    z = 1.0 - 2.0 * bits[list(spec.measure)].T  # (D, m)
    readout = z if output == "expval" else (z + 1.0) / 2.0
    dead = dead_parameters(spec) if zero_dead else np.zeros((n, spec.n_layers, spec.n_rot), bool)
    any_dead = bool(dead.any())

    def half_angles(x: Array, lam: Array | None, block: int) -> Array:
        xs = x if lam is None else x * lam[block]
        if spec.encoding == "angle":
            return xs * 0.5
        return jnp.where(atan_mask, jnp.arctan(xs), xs * half_scale.astype(x.dtype))

    def product_state(h: Array) -> State:
        c, s = _cos_sin(h)  # (B, n_in)
        r = jnp.where(bits[:n_in].T == 0, c[..., None, :], s[..., None, :]).prod(-1)  # (B, D)
        if n_in < n:
            r = jnp.where(unencoded, r, 0.0)
        return r * phase_re.astype(r.dtype), r * phase_im.astype(r.dtype)

    def entangle(state: State) -> State:
        re, im = state
        if not identity_perm:
            re, im = re[..., perm], im[..., perm]
        if has_sign:
            sg = sign.astype(re.dtype)
            re, im = re * sg, im * sg
        return re, im

    inv = np.argsort(perm)
    first = spec.layer_order == "entangler_first"

    def rotations(weights: Array) -> Mat:
        """Every wire's and layer's rotation string as one 2x2 matrix: 8 arrays (n, L)."""
        hw = weights * 0.5
        cw, sw = _cos_sin(hw)  # (n, L, k)
        u = _rotation(spec.rotations[0], cw[..., 0], sw[..., 0])
        for j in range(1, spec.n_rot):
            u = _matmul(_rotation(spec.rotations[j], cw[..., j], sw[..., j]), u)
        return u

    def layer_matrix(u: Mat, layer: int) -> tuple[Array, Array]:
        """The layer's 2**n x 2**n unitary (re, im), entangler folded in: ψ' = M ψ."""
        cplx = (jnp.stack(u[0::2], -1) + 1j * jnp.stack(u[1::2], -1)).reshape(n, -1, 2, 2)
        mats = [cplx[w, layer] for w in range(n)]
        big = mats[0]
        for m in mats[1:]:
            big = jnp.kron(big, m)  # U[b, c] = Π_w u_w[b_w, c_w]
        sg = sign.astype(big.real.dtype)
        if first:  # M = U·E, (Eψ)[c] = sign[c]·ψ[perm[c]]  =>  M[:, j] = U[:, inv[j]]·sign[inv[j]]
            big = (big * sg)[:, inv]
        else:  # M = E·U  =>  M[i, :] = sign[i]·U[perm[i], :]
            big = big[perm, :] * sg[:, None]
        return big.real, big.imag

    def fn_matrix(weights: Array, x: Array, input_weights: Array | None) -> Array:
        if any_dead:
            weights = jnp.where(dead, jax.lax.stop_gradient(weights), weights)
        u = rotations(weights)
        re, im = product_state(half_angles(x, input_weights, 0))
        for layer in range(spec.n_layers):
            if layer > 0 and spec.reupload:
                h = half_angles(x, input_weights, layer)
                c, s = jnp.cos(h), jnp.sin(h)
                for w in range(n_in):
                    re, im = _apply_rx((re, im), w, n, c[..., w], s[..., w])
            mr, mi = layer_matrix(u, layer)
            re, im = re @ mr.T - im @ mi.T, re @ mi.T + im @ mr.T
        return (re * re + im * im) @ readout.astype(re.dtype)  # (B, m)

    def fn(weights: Array, x: Array, input_weights: Array | None) -> Array:
        if any_dead:
            weights = jnp.where(dead, jax.lax.stop_gradient(weights), weights)
        u = rotations(weights)
        state = product_state(half_angles(x, input_weights, 0))
        for layer in range(spec.n_layers):
            if layer > 0 and spec.reupload:
                h = half_angles(x, input_weights, layer)
                c, s = jnp.cos(h), jnp.sin(h)
                for w in range(n_in):
                    state = _apply_rx(state, w, n, c[..., w], s[..., w])
            if spec.layer_order == "entangler_first":
                state = entangle(state)
            for w in range(n):
                state = _apply_1q(state, w, n, tuple(e[w, layer] for e in u))
            if spec.layer_order != "entangler_first":
                state = entangle(state)
        re, im = state
        return (re * re + im * im) @ readout.astype(re.dtype)  # (B, m)

    core = _adjoint_core(spec, perm, sign)

    def fn_adjoint(weights: Array, x: Array, input_weights: Array | None) -> Array:
        if any_dead:
            weights = jnp.where(dead, jax.lax.stop_gradient(weights), weights)
        u = jnp.stack(rotations(weights), -1)  # (n, L, 8)
        re0, im0 = product_state(half_angles(x, input_weights, 0))
        if spec.reupload and spec.n_layers > 1:
            h = jnp.stack([half_angles(x, input_weights, k) for k in range(1, spec.n_layers)], -2)
            enc = jnp.stack(_cos_sin(h), -1)  # (B, L-1, n_in, 2)
        else:
            enc = jnp.zeros((*x.shape[:-1], 0, n_in, 2), x.dtype)
        # A barrier before the gates, from an earlier release (measured then: without it XLA
        # recomputed the cos/sin and 2x2 products in every gate's kernel, 2.6x the run time).
        # XLA's CPU fusion now crosses it; the cos/sin are stored by _cos_sin. It stays because
        # removing it changes the compiled program, and that change is unmeasured.
        u, enc, re0, im0 = jax.lax.optimization_barrier((u, enc, re0, im0))
        probs = core(u, enc, re0, im0)  # (B, D)
        return probs @ readout.astype(probs.dtype)  # (B, m)

    fns = {"adjoint": fn_adjoint, "elementwise": fn, "layer_matrix": fn_matrix}
    return CircuitFn(spec, output, dead, fns[formulation])


def _lanes(dtype: Any) -> int:
    """Agents per 64-byte vector register (AVX-512: 16 in float32, 8 in float64)."""
    return max(1, 64 // np.dtype(dtype).itemsize)


def _adjoint_core(
    spec: CircuitSpec, perm: np.ndarray, sign: np.ndarray
) -> Callable[[Array, Array, Array, Array], Array]:
    """``core(u (n, L, 8), enc (B, L-1, n_in, 2), re0, im0 (B, D)) -> |ψ|² (B, D)``.

    The circuit after its first encoding: per layer the re-uploaded RX gates (``enc``: their
    cos and sin of the half angle, per row), the entangler (a signed permutation) and one 2x2
    gate per wire (``u``: the wire's whole rotation string, entries u00, u01, u10, u11 as (re, im)
    pairs), applied with the elementwise arithmetic of :func:`_mix_1q`.

    The gradient is the adjoint method: the cotangent ``λ = ∂L/∂ψ`` runs backwards through the
    transposed gates (``U†``), and a gate's entry ``u_ij = a + ib`` gets ``∂L/∂a = Re S_ij``,
    ``∂L/∂b = -Im S_ij`` with ``S_ij = Σ conj(λ_i)·ψ_j`` over the amplitude pairs the gate mixes
    (``ψ_j``: the half of the state with the gate's bit = j, before the gate; ``λ_i``: after).
    (JAX's autodiff of the same forward reduces every gate entry separately: 1.45x the gradient's
    run time and 3-6x its compile time at 10 agents.)

    Layout. Both sweeps run on a population with the AGENTS LAST: states ``(D, B, A)``, gate
    entries ``(A,)``, so every gate is one loop over contiguous runs of agents that the compiler
    vectorises. ``jax.vmap`` over agents (how the engine runs a population) would put the agent
    axis first, where XLA's loops run 1-16 scalar iterations per amplitude; the sweeps are
    therefore ``custom_vmap`` functions whose batching rule moves the agents last and pads them to
    a whole number of vector registers (:func:`_lanes`; padded agents have zero gates and states).
    A call outside ``vmap`` is a population of one. The backward sweep recomputes the forward
    states (rather than return them from the forward rule in the agent-first layout); XLA merges
    the two identical forward sweeps of one program into one.
    """
    n, n_layers, dim = spec.n_qubits, spec.n_layers, spec.dim
    n_in, first = spec.n_inputs, spec.layer_order == "entangler_first"
    identity_perm = bool(np.all(perm == np.arange(dim)))
    has_sign = not np.all(sign == 1.0)
    inv = np.argsort(perm)
    # the program, in order of application: ("rx", layer - 1, wire) | ("ent",) | ("u", layer, wire)
    ops: list[tuple[Any, ...]] = []
    for layer in range(n_layers):
        if layer > 0 and spec.reupload:
            ops += [("rx", layer - 1, w) for w in range(n_in)]
        if first:
            ops.append(("ent",))
        ops += [("u", layer, w) for w in range(n)]
        if not first:
            ops.append(("ent",))

    # -- the sweeps on the agents-last layout: state (D, B, A), u (n, L, 8, A), enc (L-1, n_in, 2, B, A)

    def split(state: State, w: int) -> list[Array]:
        """a0r, a1r, a0i, a1i: the halves with wire w's bit = 0, 1 (2**w, 2**(n-1-w), B, A)."""
        re, im = state
        shape = (2**w, 2, 2 ** (n - 1 - w), *re.shape[1:])
        re, im = re.reshape(shape), im.reshape(shape)
        return [re[:, 0], re[:, 1], im[:, 0], im[:, 1]]

    def join(like: Array, n0r: Array, n1r: Array, n0i: Array, n1i: Array) -> State:
        re = jnp.stack([n0r, n1r], 1).reshape(like.shape)
        im = jnp.stack([n0i, n1i], 1).reshape(like.shape)
        return re, im

    def gate(state: State, w: int, e: list[Array]) -> State:
        return join(state[0], *_mix_1q(split(state, w), tuple(e)))

    def rx(state: State, w: int, c: Array, s: Array) -> State:
        return join(state[0], *_mix_rx(split(state, w), c, s))

    def signs(x: Array) -> Array:
        return jnp.asarray(sign, x.dtype).reshape(dim, *(1,) * (x.ndim - 1))

    def entangle(state: State) -> State:  # (Eψ)[c] = sign[c]·ψ[perm[c]]
        re, im = state
        if not identity_perm:
            re, im = re[perm], im[perm]
        if has_sign:
            re, im = re * signs(re), im * signs(im)
        return re, im

    def entangle_t(state: State) -> State:  # (E^T λ)[j] = sign[inv[j]]·λ[inv[j]]
        re, im = state
        if has_sign:
            re, im = re * signs(re), im * signs(im)
        if not identity_perm:
            re, im = re[inv], im[inv]
        return re, im

    def forward(u: Array, enc: Array, state: State) -> list[State]:
        """The state before every op, then the final state."""
        states = [state]
        for op in ops:
            if op[0] == "ent":
                state = entangle(state)
            elif op[0] == "rx":
                state = rx(state, op[2], enc[op[1], op[2], 0], enc[op[1], op[2], 1])
            else:
                state = gate(state, op[2], [u[op[2], op[1], k] for k in range(8)])
            states.append(state)
        return states

    def backward(u: Array, enc: Array, states: list[State], g: Array) -> tuple[Array, ...]:
        re, im = states[-1]
        lam: State = (2.0 * g * re, 2.0 * g * im)  # ∂L/∂ψ of L(|ψ|²)
        du = [[jnp.zeros(0)] * n_layers for _ in range(n)]  # per gate (8, A)
        d_enc = jnp.zeros_like(enc)
        for k in range(len(ops) - 1, -1, -1):
            op = ops[k]
            if op[0] == "ent":
                lam = entangle_t(lam)
                continue
            w = op[2]
            x0r, x1r, x0i, x1i = split(states[k], w)
            l0r, l1r, l0i, l1i = split(lam, w)
            if op[0] == "rx":
                c, s = enc[op[1], w, 0], enc[op[1], w, 1]
                # d/dc = Re Σ conj(λ_j)·ψ_j, d/ds = Σ Im(conj(λ_0)·ψ_1 + conj(λ_1)·ψ_0)
                dc = l0r * x0r + l0i * x0i + l1r * x1r + l1i * x1i
                ds = l0r * x1i - l0i * x1r + l1r * x0i - l1i * x0r
                d_enc = d_enc.at[op[1], w].set(jnp.stack([dc.sum((0, 1)), ds.sum((0, 1))]))
                lam = rx(lam, w, c, -s)  # RX† = RX(-θ)
                continue
            # (Re, -Im) of conj(λ_i)·ψ_j for ij = 00, 01, 10, 11, summed over the amplitude
            # pairs and the rows: the gradients of u's entries, per agent
            q = jnp.stack(
                [
                    l0r * x0r + l0i * x0i,
                    l0i * x0r - l0r * x0i,
                    l0r * x1r + l0i * x1i,
                    l0i * x1r - l0r * x1i,
                    l1r * x0r + l1i * x0i,
                    l1i * x0r - l1r * x0i,
                    l1r * x1r + l1i * x1i,
                    l1i * x1r - l1r * x1i,
                ]
            )  # (8, 2**w, 2**(n-1-w), B, A)
            du[w][op[1]] = q.sum((1, 2, 3))
            e = [u[w, op[1], j] for j in range(8)]
            # U† = [[conj(u00), conj(u10)], [conj(u01), conj(u11)]]
            lam = gate(lam, w, [e[0], -e[1], e[4], -e[5], e[2], -e[3], e[6], -e[7]])
        return jnp.stack([jnp.stack(d) for d in du]), d_enc, lam[0], lam[1]

    # -- population in (agents first, as vmap hands it) <-> agents-last layout, padded

    def to_last(args: tuple[Array, ...], batched: tuple[bool, ...], size: int) -> tuple[Any, ...]:
        u, enc, *states = (
            x if b else jnp.broadcast_to(x, (size, *x.shape)) for x, b in zip(args, batched)
        )
        pad = -size % _lanes(states[0].dtype) if size > 1 else 0

        def last(x: Array) -> Array:
            x = jnp.moveaxis(x, 0, -1)
            return jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, pad)]) if pad else x

        # u (A, n, L, 8) -> (n, L, 8, A); enc (A, B, L-1, n_in, 2) -> (L-1, n_in, 2, B, A);
        # states (A, B, D) -> (D, B, A)
        return (
            last(u),
            last(jnp.moveaxis(enc, 1, -1)),
            *(last(x.swapaxes(1, 2)) for x in states),
        )

    def first_state(x: Array, size: int) -> Array:  # (D, B, A') -> (A, B, D)
        return jnp.moveaxis(x[..., :size], -1, 0).swapaxes(1, 2)

    @custom_vmap
    def probs_sweep(u: Array, enc: Array, re0: Array, im0: Array) -> Array:
        out, _ = probs_rule(1, (False,) * 4, u, enc, re0, im0)
        return out[0]

    @probs_sweep.def_vmap
    def probs_rule(size: int, batched: Any, *args: Array) -> tuple[Array, bool]:
        u, enc, re0, im0 = jax.lax.optimization_barrier(to_last(args, tuple(batched), size))
        re, im = forward(u, enc, (re0, im0))[-1]
        return first_state(re * re + im * im, size), True

    @custom_vmap
    def grad_sweep(u: Array, enc: Array, re0: Array, im0: Array, g: Array) -> tuple[Array, ...]:
        out, _ = grad_rule(1, (False,) * 5, u, enc, re0, im0, g)
        return tuple(x[0] for x in out)

    @grad_sweep.def_vmap
    def grad_rule(
        size: int, batched: Any, *args: Array
    ) -> tuple[tuple[Array, ...], tuple[bool, ...]]:
        u, enc, re0, im0, g = jax.lax.optimization_barrier(to_last(args, tuple(batched), size))
        du, d_enc, lre, lim = backward(u, enc, forward(u, enc, (re0, im0)), g)
        du = jnp.moveaxis(du[..., :size], -1, 0)  # (A, n, L, 8)
        d_enc = jnp.moveaxis(jnp.moveaxis(d_enc[..., :size], -1, 0), -1, 1)  # (A, B, L-1, n_in, 2)
        return (du, d_enc, first_state(lre, size), first_state(lim, size)), (True,) * 4

    @jax.custom_vjp
    def core(u: Array, enc: Array, re0: Array, im0: Array) -> Array:
        return probs_sweep(u, enc, re0, im0)

    def core_fwd(u: Array, enc: Array, re0: Array, im0: Array) -> tuple[Array, Any]:
        return probs_sweep(u, enc, re0, im0), (u, enc, re0, im0)

    def core_bwd(res: Any, g: Array) -> tuple[Array, ...]:
        return grad_sweep(*res, g)

    core.defvjp(core_fwd, core_bwd)
    return core
