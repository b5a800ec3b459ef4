"""The chunked linear + CE + NTL against materialised ``hidden @ W.T + b`` and the reference path."""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from ntl import NumberVocab, cross_entropy_with_ntl, linear_cross_entropy_with_ntl
from ntl.linear import default_linear_chunk_rows

KINDS = ("was", "mse", "mae", "huber")
REDUCTIONS = ("mean", "sum", "none")


def make_inputs(
    shape: tuple[int, ...],
    hidden_size: int,
    vocab_size: int,
    num_numbers: int,
    number_frac: float,
    ignore_frac: float,
    seed: int,
    dtype: torch.dtype = torch.float32,
    with_bias: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor, NumberVocab]:
    """hidden (*shape, H), weight (V, H), bias (V,), labels (*shape), vocab."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randperm(vocab_size, generator=gen)[:num_numbers]
    values = (torch.randint(-8, 40, (num_numbers,), generator=gen) / 4.0).tolist()
    vocab = NumberVocab.from_values(dict(zip(ids.tolist(), values)), vocab_size=vocab_size)
    hidden = torch.randn((*shape, hidden_size), generator=gen).to(dtype)
    weight = (torch.randn(vocab_size, hidden_size, generator=gen) / hidden_size**0.25).to(dtype)
    bias = torch.randn(vocab_size, generator=gen).to(dtype) if with_bias else None
    others = torch.ones(vocab_size, dtype=torch.bool)
    others[ids] = False
    pool = others.nonzero().squeeze(1) if bool(others.any()) else ids
    labels = pool[torch.randint(0, pool.numel(), shape, generator=gen)]
    is_number = torch.rand(shape, generator=gen) < number_frac
    labels[is_number] = ids[torch.randint(0, num_numbers, (int(is_number.sum()),), generator=gen)]
    labels[torch.rand(shape, generator=gen) < ignore_frac] = -100
    return hidden, weight, bias, labels, vocab


def compare(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    labels: torch.Tensor,
    vocab: NumberVocab,
    rel: float,
    chunk_size: int | None = None,
    grad_rel: float | None = None,
    ref_dtype: torch.dtype | None = None,
    **kwargs: object,
) -> None:
    """Values and gradients (hidden, weight, bias) of both paths under a random grad_output.

    ``ref_dtype`` runs the materialised reference on upcast copies of the inputs (an oracle for
    half-precision inputs, whose own reference sums gradients in half precision).
    """
    ref_in = [
        t.to(ref_dtype or t.dtype, copy=True).requires_grad_() if t is not None else None
        for t in (hidden, weight, bias)
    ]
    lin_in = [t.clone().requires_grad_() if t is not None else None for t in (hidden, weight, bias)]
    h, w, b = ref_in
    assert h is not None and w is not None
    logits = h @ w.T if b is None else h @ w.T + b
    ref = cross_entropy_with_ntl(logits, labels, vocab, fused=False, **kwargs)  # type: ignore[arg-type]
    out = linear_cross_entropy_with_ntl(
        lin_in[0],  # type: ignore[arg-type]
        lin_in[1],  # type: ignore[arg-type]
        labels,
        vocab,
        bias=lin_in[2],
        chunk_size=chunk_size,
        **kwargs,  # type: ignore[arg-type]
    )
    assert out.shape == ref.shape and out.dtype == torch.promote_types(ref.dtype, torch.float32)
    scale = float(ref.detach().abs().max().clamp_min(1e-30))
    torch.testing.assert_close(out.detach(), ref.detach(), rtol=rel, atol=rel * scale)
    grad_out = torch.rand(ref.shape, generator=torch.Generator().manual_seed(1)) + 0.5
    (ref * grad_out).sum().backward()
    (out * grad_out).sum().backward()
    grad_rel = rel if grad_rel is None else grad_rel
    for r, lin in zip(ref_in, lin_in):
        if r is None or lin is None:
            continue
        assert r.grad is not None and lin.grad is not None and lin.grad.dtype == lin.dtype
        g_scale = float(r.grad.abs().max().clamp_min(1e-30))
        # half precision: bf16 logits move each row's gradient by ~1e-3 absolute, which does not
        # shrink when rows cancel in a sum (the bias gradient of a tiny vocabulary)
        floor = 0.0 if ref_dtype is None else 2e-3
        torch.testing.assert_close(
            lin.grad.float(), r.grad.float(), rtol=grad_rel, atol=grad_rel * g_scale + floor
        )


@pytest.mark.parametrize(
    ("kind", "reduction", "normalize_by"),
    list(itertools.product(KINDS, REDUCTIONS, ("number_tokens", "tokens"))),
)
def test_linear_matches_reference_float32(kind: str, reduction: str, normalize_by: str) -> None:
    hidden, weight, bias, labels, vocab = make_inputs((3, 11), 16, 53, 6, 0.35, 0.2, seed=1)
    for chunk_size, label_smoothing in ((None, 0.0), (4, 0.1)):
        compare(
            hidden,
            weight,
            bias,
            labels,
            vocab,
            rel=1e-6,
            # grad_W sums over rows chunk by chunk: float32 sums in a different order
            grad_rel=2e-6,
            chunk_size=chunk_size,
            kind=kind,
            reduction=reduction,
            normalize_by=normalize_by,
            label_smoothing=label_smoothing,
            ntl_weight=0.6,
            huber_delta=0.8,
        )


@pytest.mark.parametrize(
    ("num_items", "num_number_items"), [(30, 7), (torch.tensor(30), torch.tensor(7)), (100, 50)]
)
def test_linear_denominator_overrides(
    num_items: int | torch.Tensor, num_number_items: int | torch.Tensor
) -> None:
    hidden, weight, bias, labels, vocab = make_inputs((2, 13), 8, 40, 5, 0.3, 0.1, seed=2)
    for normalize_by in ("number_tokens", "tokens"):
        compare(
            hidden,
            weight,
            bias,
            labels,
            vocab,
            rel=2e-6,
            chunk_size=5,
            normalize_by=normalize_by,
            num_items_in_batch=num_items,
            num_number_items_in_batch=num_number_items,
        )


@settings(max_examples=30, deadline=None)
@given(
    rows=st.integers(1, 30),
    hidden_size=st.integers(1, 24),
    vocab_size=st.integers(2, 200),
    num_numbers=st.integers(1, 12),
    number_frac=st.sampled_from([0.0, 0.2, 1.0]),
    ignore_frac=st.sampled_from([0.0, 0.3, 1.0]),
    dtype=st.sampled_from([torch.float32, torch.bfloat16]),
    with_bias=st.booleans(),
    kind=st.sampled_from(KINDS),
    reduction=st.sampled_from(REDUCTIONS),
    chunk_size=st.one_of(st.none(), st.integers(1, 40)),
    seed=st.integers(0, 2**16),
)
def test_linear_matches_reference_property(
    rows: int,
    hidden_size: int,
    vocab_size: int,
    num_numbers: int,
    number_frac: float,
    ignore_frac: float,
    dtype: torch.dtype,
    with_bias: bool,
    kind: str,
    reduction: str,
    chunk_size: int | None,
    seed: int,
) -> None:
    hidden, weight, bias, labels, vocab = make_inputs(
        (rows,),
        hidden_size,
        vocab_size,
        min(num_numbers, vocab_size),
        number_frac,
        ignore_frac,
        seed,
        dtype,
        with_bias,
    )
    # bf16: against a float32 oracle on the same (rounded) inputs; we round the logits to bf16
    # as the materialised path does, then compute and accumulate in float32
    half = dtype != torch.float32
    compare(
        hidden,
        weight,
        bias,
        labels,
        vocab,
        rel=3e-2 if half else 1e-5,
        chunk_size=chunk_size,
        ref_dtype=torch.float32 if half else None,
        kind=kind,
        reduction=reduction,
    )


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("kind", KINDS)
def test_linear_gradcheck_float64(kind: str, reduction: str) -> None:
    hidden, weight, bias, labels, vocab = make_inputs(
        (5,), 3, 7, 3, 0.6, 0.2, seed=3, dtype=torch.float64
    )
    inputs = tuple(t.requires_grad_() for t in (hidden, weight, bias) if t is not None)

    def fn(h: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return linear_cross_entropy_with_ntl(
            h,
            w,
            labels,
            vocab,
            bias=b,
            kind=kind,
            reduction=reduction,
            label_smoothing=0.1,
            chunk_size=2,
        )

    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, fast_mode=True)


def test_linear_double_backward_raises() -> None:
    hidden, weight, bias, labels, vocab = make_inputs((6,), 4, 10, 3, 0.5, 0.0, seed=4)
    h = hidden.requires_grad_()
    loss = linear_cross_entropy_with_ntl(h, weight, labels, vocab, bias=bias)
    with pytest.raises(RuntimeError, match="double backward"):
        torch.autograd.grad(loss, h, create_graph=True)


def test_linear_partial_requires_grad_and_no_grad() -> None:
    hidden, weight, bias, labels, vocab = make_inputs((9,), 4, 12, 3, 0.5, 0.1, seed=5)
    w = weight.clone().requires_grad_()
    loss = linear_cross_entropy_with_ntl(hidden, w, labels, vocab, bias=bias, chunk_size=4)
    loss.backward()
    assert w.grad is not None and hidden.grad is None
    with torch.no_grad():
        plain = linear_cross_entropy_with_ntl(hidden, w, labels, vocab, bias=bias)
    assert plain.grad_fn is None
    torch.testing.assert_close(plain, loss.detach(), rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize(
    ("change", "error", "match"),
    [
        ({"weight": torch.randn(12, 5)}, ValueError, "weight must have shape"),
        ({"weight": torch.randn(11, 4)}, ValueError, "vocab.vocab_size"),
        ({"weight": torch.randn(12, 4, dtype=torch.float64)}, TypeError, "must match hidden"),
        ({"bias": torch.randn(11)}, ValueError, "bias must have shape"),
        ({"labels": torch.full((9,), 12)}, ValueError, "labels must lie in"),
        ({"labels": torch.zeros(8, dtype=torch.long)}, ValueError, "labels must have shape"),
        ({"hidden": torch.full((9, 4), float("inf"))}, ValueError, "hidden must be finite"),
        ({"vocab": {1: 2.0}}, TypeError, "vocab must be"),
        ({"kind": "l1"}, ValueError, "kind"),
    ],
)
def test_linear_bad_input(change: dict[str, object], error: type[Exception], match: str) -> None:
    args: dict[str, object] = {
        "hidden": torch.randn(9, 4),
        "weight": torch.randn(12, 4),
        "labels": torch.zeros(9, dtype=torch.long),
        "vocab": NumberVocab.from_values({1: 1.0, 2: 2.0}, vocab_size=12),
        "bias": None,
    }
    args.update(change)
    with pytest.raises(error, match=match):
        linear_cross_entropy_with_ntl(**args)  # type: ignore[arg-type]


def test_linear_empty_batch_gives_zero_gradients() -> None:
    # the first chunk writes the weight gradient; with no rows there is no chunk, so it is zeros
    hidden, weight, bias, labels, vocab = make_inputs((0,), 4, 12, 3, 0.5, 0.0, seed=6)
    h, w = hidden.clone().requires_grad_(), weight.clone().requires_grad_()
    loss = linear_cross_entropy_with_ntl(h, w, labels, vocab, bias=bias)
    loss.backward()
    assert float(loss.detach()) == 0.0
    assert w.grad is not None and h.grad is not None and h.grad.shape == (0, 4)
    assert torch.equal(w.grad, torch.zeros_like(weight))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 100, 512, 2048, 8192, 100_000])
def test_default_linear_chunk_rows_memory_rule(rows: int, dtype: torch.dtype) -> None:
    # the chunk's float32 scratch (twice that per row in half precision) stays within 0.05 of the
    # ~2.6 (N, V) float32 buffers the materialised path keeps, once N is past 9 minimum chunks
    vocab_size = 32000
    n = default_linear_chunk_rows(rows, vocab_size, dtype)
    per_row = vocab_size * 4 * (2 if dtype == torch.bfloat16 else 1)
    assert n >= 1
    assert n * per_row <= 2**25  # at most 32 MiB
    if rows >= 9 * 48:
        assert n * per_row <= 0.05 * 2.6 * rows * vocab_size * 4
    assert n >= min(48 if dtype == torch.float32 else 24, 2**25 // per_row)
