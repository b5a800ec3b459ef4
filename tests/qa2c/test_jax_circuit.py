"""The JAX circuit against ``qa2c.VQC`` (float64): outputs and Jacobians, and dead weights."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

pytest.importorskip("jax")

import jax
import jax.numpy as jnp

import qa2c.jax_engine  # noqa: F401
from qa2c.jax_engine.circuit import circuit_fn
from qa2c.vqc import VQC

_SPECS: list[dict[str, Any]] = [
    {},  # the paper: cartpole encoding, 2 layers, ZYZ, CNOT ring first, <Z> of all wires
    {"output": "prob0", "measure": (0, 1)},
    {"reupload": True, "input_scaling": True, "n_layers": 3},
    {"encoding": "angle", "rotations": "XY", "entangler": "cz_ring"},
    {"layer_order": "rotations_first", "entangler": "cnot_chain", "measure": (0, 2)},
    {"encoding": "angle", "n_qubits": 5, "n_inputs": 3, "entangler": "cnot_all", "rotations": "Y"},
]


@pytest.mark.parametrize("kw", _SPECS, ids=[str(i) for i in range(len(_SPECS))])
def test_outputs_and_jacobians_match_vqc(kw: dict[str, Any]) -> None:
    torch.manual_seed(0)
    v = VQC(dtype=torch.float64, **kw)
    if v.input_weights is not None:
        with torch.no_grad():
            v.input_weights.uniform_(0.5, 1.5)
    x = torch.randn(6, v.n_inputs, dtype=torch.float64)
    f = circuit_fn(v.spec, v.output, zero_dead=False)
    w = jnp.asarray(v.weights.detach().numpy())
    iw = None if v.input_weights is None else jnp.asarray(v.input_weights.detach().numpy())
    out = np.asarray(f(w, jnp.asarray(x.numpy()), iw))
    np.testing.assert_allclose(out, v(x).detach().numpy(), rtol=0, atol=1e-13)
    if kw not in (_SPECS[0], _SPECS[2]):  # Jacobians: the paper's circuit and re-uploading
        return
    # Jacobian of every output w.r.t. the weights, for one input
    x0 = x[:1]
    jw = np.asarray(jax.jacrev(lambda ww: f(ww, jnp.asarray(x0.numpy()), iw))(w))
    ref = torch.autograd.functional.jacobian(
        lambda ww: v.functional(ww, x0, v.input_weights), v.weights.detach()
    ).numpy()
    np.testing.assert_allclose(jw, ref, rtol=0, atol=1e-12)
    jx = np.asarray(jax.jacrev(lambda xx: f(w, xx, iw))(jnp.asarray(x0.numpy())))
    ref_x = torch.autograd.functional.jacobian(
        lambda xx: v.functional(v.weights.detach(), xx, v.input_weights), x0
    ).numpy()
    np.testing.assert_allclose(jx, ref_x, rtol=0, atol=1e-12)


@pytest.mark.parametrize("kw", _SPECS, ids=[str(i) for i in range(len(_SPECS))])
def test_adjoint_gradient_equals_autodiff(kw: dict[str, Any]) -> None:
    """The hand-written adjoint sweep against JAX's autodiff of the same gates, every spec."""
    torch.manual_seed(1)
    v = VQC(dtype=torch.float64, **kw)
    rng = np.random.default_rng(2)
    w = jnp.asarray(rng.normal(size=tuple(v.weights.shape)))
    x = jnp.asarray(rng.normal(size=(3, v.n_inputs)))
    iw = (
        None
        if v.input_weights is None
        else jnp.asarray(rng.uniform(0.5, 1.5, v.input_weights.shape))
    )
    cot = jnp.asarray(rng.normal(size=(3, len(v.spec.measure))))
    grads = []
    for form in ("adjoint", "elementwise"):
        f = circuit_fn(v.spec, v.output, zero_dead=False, formulation=form)
        argnums = (0, 1) if iw is None else (0, 1, 2)
        grads.append(jax.grad(lambda *a, f=f: (f(*a) * cot).sum(), argnums)(w, x, iw))
    for a, b in zip(*grads):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=0, atol=1e-13)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
@pytest.mark.parametrize(
    "kw", [_SPECS[0], _SPECS[2], _SPECS[4]], ids=["paper", "reupload", "chain"]
)
def test_population_under_vmap_equals_its_members(kw: dict[str, Any], dtype: str) -> None:
    """vmap over agents (the agents-last, padded batching rule of the adjoint sweeps) gives every
    member the values and gradients it gets alone; also with the weights shared (unbatched)."""
    v = VQC(dtype=torch.float64, **kw)
    rng = np.random.default_rng(3)
    n_agents, rows = 3, 2  # 3 agents: padded to a whole vector register inside the rule
    w = jnp.asarray(rng.normal(size=(n_agents, *v.weights.shape)), dtype)
    x = jnp.asarray(rng.normal(size=(n_agents, rows, v.n_inputs)), dtype)
    iw = None
    if v.input_weights is not None:
        iw = jnp.asarray(rng.uniform(0.5, 1.5, (n_agents, *v.input_weights.shape)), dtype)
    cot = jnp.asarray(rng.normal(size=(n_agents, rows, len(v.spec.measure))), dtype)
    tol = 1e-12 if dtype == "float64" else 2e-5
    adj = circuit_fn(v.spec, v.output, zero_dead=False)
    ref = circuit_fn(v.spec, v.output, zero_dead=False, formulation="elementwise")

    def value_and_grads(f: Any, w: Any, x: Any, iw: Any, c: Any) -> Any:
        argnums = (0, 1) if iw is None else (0, 1, 2)
        return f(w, x, iw), jax.grad(lambda *a: (f(*a) * c).sum(), argnums)(w, x, iw)

    batched = jax.jit(jax.vmap(lambda *a: value_and_grads(adj, *a)))(w, x, iw, cot)
    alone = jax.jit(lambda *a: value_and_grads(ref, *a))
    for i in range(n_agents):
        one = alone(w[i], x[i], None if iw is None else iw[i], cot[i])
        for got, want in zip(jax.tree.leaves(batched), jax.tree.leaves(one)):
            np.testing.assert_allclose(np.asarray(got[i]), np.asarray(want), rtol=0, atol=tol)
    # weights shared by the population, inputs per agent
    shared = jax.jit(jax.vmap(lambda xx, cc: value_and_grads(adj, w[0], xx, None, cc)))(x, cot)
    for i in range(n_agents):
        one = alone(w[0], x[i], None, cot[i])
        for got, want in zip(jax.tree.leaves(shared), jax.tree.leaves(one)):
            np.testing.assert_allclose(np.asarray(got[i]), np.asarray(want), rtol=0, atol=tol)


@pytest.mark.parametrize("measure", [(0, 1), (0,), (0, 1, 2, 3)])
def test_dead_weights_get_exactly_zero_gradient(measure: tuple[int, ...]) -> None:
    v = VQC(dtype=torch.float64, measure=measure)
    dead = v.dead_parameters().numpy()
    assert dead.sum() == {2: 9, 1: 12, 4: 4}[len(measure)]  # the paper's counts (qa2c.md)
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 4)))
    w = jnp.asarray(v.weights.detach().numpy())
    for zero_dead in (True, False):
        f = circuit_fn(v.spec, "prob0", zero_dead=zero_dead)
        g = np.asarray(jax.grad(lambda ww, f=f: f(ww, x, None).sum())(w))
        if zero_dead:
            assert np.all(g[dead] == 0.0)  # exactly, so Adam never moves them
        else:
            assert np.abs(g[dead]).max() < 1e-14  # zero up to round-off only
        assert np.all(np.abs(g[~dead]) > 0)


@pytest.mark.parametrize(
    ("kw", "sources"), [({}, 2), ({"reupload": True, "input_scaling": True, "n_layers": 3}, 3)]
)
def test_compiled_gradient_computes_each_cos_once(kw: dict[str, Any], sources: int) -> None:
    """XLA's CPU fusion would recompute cos/sin in every consumer's kernel (per element; 4 and 11
    cosines here, the engine 1.7x slower); the circuit stores them once per source: the weights,
    the first encoding and, with re-uploading, the later encodings."""
    v = VQC(**kw)
    f = circuit_fn(v.spec, v.output)
    iw = None if v.input_weights is None else jnp.asarray(v.input_weights.detach().numpy())
    w = jnp.stack([jnp.asarray(v.weights.detach().numpy())] * 3)

    def loss(ww: jax.Array, xx: jax.Array, iw: jax.Array | None) -> jax.Array:
        return f(ww, xx, iw).sum()

    grad = jax.vmap(
        jax.value_and_grad(loss, argnums=(0, 2) if iw is not None else 0), in_axes=(0, 0, None)
    )
    hlo = jax.jit(grad).lower(w, jnp.ones((3, 2, v.n_inputs), w.dtype), iw).compile().as_text()
    assert hlo.count(" cosine(") == sources
    assert hlo.count(" sine(") == sources


def test_bad_arguments() -> None:
    spec = VQC().spec
    with pytest.raises(ValueError, match="output"):
        circuit_fn(spec, "probs")
    with pytest.raises(ValueError, match="formulation"):
        circuit_fn(spec, formulation="complex")
