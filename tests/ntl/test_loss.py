"""Tests of ntl.loss: oracles, gradients, normalisation, agreement with ntloss, properties, bad input."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from ntl import (
    CrossEntropyWithNTL,
    NTLoss,
    NumberVocab,
    cross_entropy_with_ntl,
    gaussian_number_targets,
    number_token_loss,
    predict_numbers,
)

from .conftest import WORDS, make_fast_tokenizer

PROPS = settings(max_examples=40, deadline=None, derandomize=True, database=None)


def oracle_batch(dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """(1, 4, 6) logits whose number-token softmax is p = (0.1, 0.2, 0.3, 0.4) at every position.

    Labels: id 2 (value 1), id 4 (value 5), id 0 (text), ignore. Hand values:
    ŷ = 0.2 + 0.6 + 2.0 = 2.8; WAS = 0.1·1 + 0.3·1 + 0.4·4 = 2.0 and 0.1·5 + 0.2·4 + 0.3·3 = 2.2.
    """
    number_logits = torch.tensor([0.1, 0.2, 0.3, 0.4], dtype=torch.float64).log() + 0.7
    row = torch.cat([torch.tensor([3.0], dtype=torch.float64), number_logits, torch.tensor([-2.0])])
    logits = row.expand(1, 4, 6).clone().to(dtype)
    labels = torch.tensor([[2, 4, 0, -100]])
    return logits, labels


# Per position (label value 1, label value 5): diff ŷ − y = 1.8, −2.2.
ORACLE = {
    "was": (2.0, 2.2),
    "mse": (1.8**2, 2.2**2),
    "mae": (1.8, 2.2),
    "huber": (1.8 - 0.5, 2.2 - 0.5),
}


@pytest.mark.parametrize("kind", list(ORACLE))
def test_hand_computed_oracles(kind: str, small_vocab: NumberVocab) -> None:
    logits, labels = oracle_batch(torch.float64)
    a, b = ORACLE[kind]
    none = number_token_loss(logits, labels, small_vocab, kind=kind, reduction="none")
    torch.testing.assert_close(none, torch.tensor([[a, b, 0.0, 0.0]], dtype=torch.float64))
    mean = number_token_loss(logits, labels, small_vocab, kind=kind)
    assert mean.item() == pytest.approx((a + b) / 2)
    by_tokens = number_token_loss(logits, labels, small_vocab, kind=kind, normalize_by="tokens")
    assert by_tokens.item() == pytest.approx((a + b) / 3)  # three non-ignored positions
    total = number_token_loss(logits, labels, small_vocab, kind=kind, reduction="sum")
    assert total.item() == pytest.approx(a + b)
    override = number_token_loss(
        logits, labels, small_vocab, kind=kind, num_number_items_in_batch=7
    )
    assert override.item() == pytest.approx((a + b) / 7)


def test_huber_delta(small_vocab: NumberVocab) -> None:
    logits, labels = oracle_batch(torch.float64)
    loss = number_token_loss(
        logits, labels, small_vocab, kind="huber", huber_delta=2.0, reduction="none"
    )
    # |1.8| < 2 -> 0.5·1.8²; |2.2| > 2 -> 2·(2.2 − 1)
    torch.testing.assert_close(
        loss[0, :2], torch.tensor([0.5 * 1.8**2, 2 * (2.2 - 1.0)], dtype=torch.float64)
    )


def test_soft_target_w1_oracle_and_expected_value(small_vocab: NumberVocab) -> None:
    logits, labels = oracle_batch(torch.float64)
    q = torch.zeros(1, 4, 4, dtype=torch.float64)
    q[0, 0] = torch.tensor([0.0, 0.5, 0.5, 0.0])  # half on 1, half on 2
    q[0, 1, 3] = 1.0  # point mass on 5: must equal the hard-label WAS
    loss = number_token_loss(logits, labels, small_vocab, target_probs=q, reduction="none")
    # CDF_p = .1 .3 .6, CDF_q = 0 .5 1, gaps 1 1 3 -> .1 + .2 + .4·3 = 1.5
    torch.testing.assert_close(loss[0, :2], torch.tensor([1.5, 2.2], dtype=torch.float64))
    mse = number_token_loss(
        logits, labels, small_vocab, kind="mse", target_probs=q, reduction="none"
    )
    torch.testing.assert_close(
        mse[0, :2], torch.tensor([(2.8 - 1.5) ** 2, 2.2**2], dtype=torch.float64)
    )


def test_soft_target_w1_unsorted_values_and_duplicates() -> None:
    # Ids in an order unrelated to values, with a duplicate value (like "7" and " 7").
    vocab = NumberVocab.from_values({0: 5.0, 2: 1.0, 3: 7.0, 5: 1.0, 6: 3.0}, vocab_size=8)
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 5, 8, generator=gen, dtype=torch.float64)
    labels = torch.tensor([0, 2, 3, 5, 6, 1, -100, 0, 2, 3, 6, 5, 7, 4, 0]).reshape(3, 5)
    hard = number_token_loss(logits, labels, vocab, reduction="none")
    index_of = {int(t): i for i, t in enumerate(vocab.token_ids)}
    onehot = torch.zeros(3, 5, 5, dtype=torch.float64)
    for pos, label in enumerate(labels.reshape(-1).tolist()):
        if label in index_of:
            onehot.view(-1, 5)[pos, index_of[label]] = 1.0
    soft = number_token_loss(logits, labels, vocab, target_probs=onehot, reduction="none")
    torch.testing.assert_close(soft, hard)
    # W1 by the quantile form: ∫_0^1 |F_p^{-1}(u) − F_q^{-1}(u)| du, integrated on a fine grid.
    q = gaussian_number_targets(labels, vocab, sigma=2.0).double()
    soft = number_token_loss(logits, labels, vocab, target_probs=q, reduction="none")
    order = torch.argsort(vocab.values)
    sorted_values = vocab.values[order].double()
    u = (torch.arange(20000, dtype=torch.float64) + 0.5) / 20000
    p_all = torch.softmax(logits[..., vocab.token_ids], -1)
    for pos in range(15):
        b, t = divmod(pos, 5)
        if int(labels[b, t]) not in index_of:
            continue
        cdf_p = p_all[b, t][order].cumsum(0)
        cdf_q = q[b, t][order].cumsum(0)
        inv_p = sorted_values[torch.searchsorted(cdf_p, u).clamp(max=4)]
        inv_q = sorted_values[torch.searchsorted(cdf_q, u).clamp(max=4)]
        assert soft[b, t].item() == pytest.approx((inv_p - inv_q).abs().mean().item(), abs=2e-3)


def test_gaussian_targets(small_vocab: NumberVocab) -> None:
    labels = torch.tensor([[2, 0, -100, 4]])
    q = gaussian_number_targets(labels, small_vocab, sigma=1.0)
    assert q.shape == (1, 4, 4) and q.dtype == torch.float32
    w = torch.exp(-((torch.tensor([0.0, 1.0, 2.0, 5.0]) - 1.0) ** 2) / 2)
    torch.testing.assert_close(q[0, 0], w / w.sum())
    assert q[0, 1].abs().sum() == 0 and q[0, 2].abs().sum() == 0
    assert q[0, 3].argmax() == 3 and q[0, 3].sum().item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_number_targets(labels, small_vocab, sigma=0.0)


@pytest.mark.parametrize("kind", list(ORACLE))
def test_predict_numbers_and_mse_consistency(kind: str, small_vocab: NumberVocab) -> None:
    logits, labels = oracle_batch(torch.float64)
    pred = predict_numbers(logits, small_vocab)
    torch.testing.assert_close(pred, torch.full((1, 4), 2.8, dtype=torch.float64))
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 3, 6, generator=gen, dtype=torch.float64)
    labels = torch.tensor([[1, 2, 3], [4, 0, 5]])
    values = torch.tensor([float("nan"), 0.0, 1.0, 2.0, 5.0, float("nan")], dtype=torch.float64)
    diff = predict_numbers(logits, small_vocab) - values[labels]
    expected = {
        "was": None,
        "mse": diff**2,
        "mae": diff.abs(),
        "huber": F.huber_loss(diff, 0 * diff, reduction="none"),
    }[kind]
    if expected is not None:
        got = number_token_loss(logits, labels, small_vocab, kind=kind, reduction="none")
        mask = labels.ge(1) & labels.le(4)
        torch.testing.assert_close(got[mask], expected[mask])


@pytest.mark.parametrize("kind", list(ORACLE))
def test_gradcheck(kind: str, small_vocab: NumberVocab) -> None:
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 4, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[1, 2, 0, 4], [3, -100, 5, 2]])
    assert torch.autograd.gradcheck(
        lambda z: number_token_loss(z, labels, small_vocab, kind=kind), (logits,)
    )
    assert torch.autograd.gradcheck(
        lambda z: number_token_loss(z, labels, small_vocab, kind=kind, reduction="none"), (logits,)
    )
    assert torch.autograd.gradcheck(
        lambda z: cross_entropy_with_ntl(z, labels, small_vocab, kind=kind, label_smoothing=0.1),
        (logits,),
    )
    q = gaussian_number_targets(labels, small_vocab, sigma=1.5).double()
    assert torch.autograd.gradcheck(
        lambda z: number_token_loss(z, labels, small_vocab, kind=kind, target_probs=q), (logits,)
    )


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("normalize_by", ["number_tokens", "tokens"])
def test_cross_entropy_with_ntl_matches_parts(
    reduction: str, normalize_by: str, small_vocab: NumberVocab
) -> None:
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 7, 6, generator=gen)
    labels = torch.randint(0, 6, (3, 7), generator=gen)
    labels[0, :3] = -100
    kw = {"reduction": reduction, "normalize_by": normalize_by}
    got = cross_entropy_with_ntl(
        logits, labels, small_vocab, ntl_weight=0.8, label_smoothing=0.1, **kw
    )
    ce = F.cross_entropy(
        logits.reshape(-1, 6), labels.reshape(-1), label_smoothing=0.1, reduction=reduction
    )
    ntl = number_token_loss(logits, labels, small_vocab, **kw)
    torch.testing.assert_close(got, ce.reshape(ntl.shape) + 0.8 * ntl)
    module = CrossEntropyWithNTL(small_vocab, ntl_weight=0.8, label_smoothing=0.1, **kw)
    torch.testing.assert_close(module(logits, labels), got)
    torch.testing.assert_close(NTLoss(small_vocab, **kw)(logits, labels), ntl)


def test_cross_entropy_with_ntl_denominator_overrides(small_vocab: NumberVocab) -> None:
    gen = torch.Generator().manual_seed(4)
    logits = torch.randn(2, 5, 6, generator=gen, dtype=torch.float64)
    labels = torch.tensor([[1, 2, 0, 5, 4], [3, -100, 0, 2, 1]])
    ce_sum = F.cross_entropy(logits.reshape(-1, 6), labels.reshape(-1), reduction="sum")
    ntl_sum = number_token_loss(logits, labels, small_vocab, reduction="sum")
    got = cross_entropy_with_ntl(
        logits, labels, small_vocab, num_items_in_batch=20, num_number_items_in_batch=11
    )
    torch.testing.assert_close(got, ce_sum / 20 + 0.3 * ntl_sum / 11)
    got = cross_entropy_with_ntl(
        logits,
        labels,
        small_vocab,
        normalize_by="tokens",
        num_items_in_batch=torch.tensor(20),
        num_number_items_in_batch=11,
    )
    torch.testing.assert_close(got, ce_sum / 20 + 0.3 * ntl_sum / 20)


@pytest.mark.parametrize("normalize_by", ["number_tokens", "tokens"])
def test_gradient_accumulation_equals_full_batch(
    normalize_by: str, small_vocab: NumberVocab
) -> None:
    gen = torch.Generator().manual_seed(5)
    logits = torch.randn(4, 9, 6, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = torch.randint(0, 6, (4, 9), generator=gen)
    labels[0, 5:] = -100
    labels[3, :] = torch.tensor([1, 2, 3, 4, 1, 2, 0, 0, -100])  # halves have unequal counts
    full = cross_entropy_with_ntl(logits, labels, small_vocab, normalize_by=normalize_by)
    (full_grad,) = torch.autograd.grad(full, logits)
    n_tokens = int((labels != -100).sum())
    n_numbers = int(((labels >= 1) & (labels <= 4)).sum())
    accumulated = torch.zeros_like(logits)
    for half in (slice(0, 1), slice(1, 4)):
        part = cross_entropy_with_ntl(
            logits[half], labels[half], small_vocab, normalize_by=normalize_by,
            num_items_in_batch=n_tokens, num_number_items_in_batch=n_numbers,
        )  # fmt: skip
        accumulated += torch.autograd.grad(part, logits)[0]
    torch.testing.assert_close(accumulated, full_grad)
    # The NTL alone, with its own denominator override.
    denominator = n_numbers if normalize_by == "number_tokens" else n_tokens
    key = "num_number_items_in_batch" if normalize_by == "number_tokens" else "num_items_in_batch"
    full = number_token_loss(logits, labels, small_vocab, normalize_by=normalize_by)
    (full_grad,) = torch.autograd.grad(full, logits)
    accumulated = sum(
        torch.autograd.grad(
            number_token_loss(
                logits[h], labels[h], small_vocab, normalize_by=normalize_by, **{key: denominator}
            ),
            logits,
        )[0]
        for h in (slice(0, 2), slice(2, 4))
    )
    torch.testing.assert_close(accumulated, full_grad)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("normalize_by", ["number_tokens", "tokens"])
def test_no_number_tokens_gives_differentiable_zero(
    reduction: str, normalize_by: str, small_vocab: NumberVocab
) -> None:
    logits = torch.randn(2, 3, 6, requires_grad=True)
    for labels in (torch.tensor([[0, 5, -100], [5, 0, 0]]), torch.full((2, 3), -100)):
        loss = number_token_loss(
            logits, labels, small_vocab, reduction=reduction, normalize_by=normalize_by
        )
        assert loss.grad_fn is not None and torch.all(loss == 0)
        (grad,) = torch.autograd.grad(loss.sum(), logits)
        assert torch.all(grad == 0)
    # CE + NTL when every label is ignored: zero (torch's own mean would be NaN here).
    loss = cross_entropy_with_ntl(
        logits, torch.full((2, 3), -100), small_vocab, reduction=reduction
    )
    assert loss.grad_fn is not None and not torch.isnan(loss).any() and torch.all(loss == 0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_upcast(dtype: torch.dtype, small_vocab: NumberVocab) -> None:
    gen = torch.Generator().manual_seed(6)
    logits = torch.randn(2, 5, 6, generator=gen).to(dtype)
    labels = torch.tensor([[1, 2, 3, 4, 0], [5, 4, 3, -100, 1]])
    for fn in (number_token_loss, cross_entropy_with_ntl):
        low = fn(logits, labels, small_vocab)
        assert low.dtype == torch.float32
        torch.testing.assert_close(low, fn(logits.float(), labels, small_vocab))
    assert predict_numbers(logits, small_vocab).dtype == torch.float32


# --- agreement with the reference package ntloss 0.3.2 ----------------------------------------


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_agrees_with_ntloss(reduction: str) -> None:
    import ntloss

    tokenizer = make_fast_tokenizer()
    vocab = NumberVocab.from_tokenizer(tokenizer)
    assert vocab.token_ids.tolist() == list(range(3, 13))
    width = len(WORDS) + 3  # a padded model head
    vocab = NumberVocab.from_tokenizer(tokenizer, vocab_size=width)
    # ntloss calls tokenizer.add_tokens on the tokenizer it is given: hand it a copy.
    ref_was = ntloss.NTLoss(copy.deepcopy(tokenizer), vocab_size=width, reweigh=False)
    ref_mse = ntloss.NTLossDotProduct(copy.deepcopy(tokenizer), vocab_size=width, reweigh=False)
    gen = torch.Generator().manual_seed(7)
    logits = 3 * torch.randn(4, 16, width, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, width, (4, 16), generator=gen)
    labels[1, ::3] = -100
    for kind, ref in (("was", ref_was), ("mse", ref_mse)):
        ours = number_token_loss(logits, labels, vocab, kind=kind, reduction=reduction)
        theirs = ref(logits, labels, reduction=reduction)
        torch.testing.assert_close(ours, theirs.to(ours.dtype), atol=1e-6, rtol=1e-6)


# --- properties (hypothesis) -------------------------------------------------------------------

VALUES = st.lists(st.integers(-20, 20).map(float), min_size=2, max_size=6)


@st.composite
def problems(draw: st.DrawFn) -> tuple[NumberVocab, torch.Tensor, torch.Tensor]:
    values = draw(VALUES)
    k = len(values)
    width = k + draw(st.integers(1, 3))
    vocab = NumberVocab.from_values(dict(enumerate(values)), vocab_size=width)
    n = draw(st.integers(1, 6))
    logits = torch.tensor(draw(st.lists(st.floats(-8, 8), min_size=n * width, max_size=n * width)))
    labels = torch.tensor(draw(st.lists(st.integers(0, width - 1), min_size=n, max_size=n)))
    return vocab, logits.reshape(n, width).double(), labels


@PROPS
@given(problems())
def test_property_was_nonnegative_and_zero_iff_mass_on_target(
    problem: tuple[NumberVocab, torch.Tensor, torch.Tensor],
) -> None:
    vocab, logits, labels = problem
    loss = number_token_loss(logits, labels, vocab, reduction="none")
    assert torch.all(loss >= 0)
    p = torch.softmax(logits[:, vocab.token_ids], -1)
    values = vocab.values.double()
    for i, label in enumerate(labels.tolist()):
        if label >= len(vocab):
            assert loss[i] == 0
            continue
        distance = (values - values[label]).abs()
        off_target = p[i][distance > 0].sum()
        positive = distance[distance > 0]
        if positive.numel() == 0:
            assert loss[i] == 0
            continue
        # min gap · mass off target <= WAS <= max gap · mass off target: zero iff all mass on target.
        assert positive.min() * off_target - 1e-9 <= loss[i] <= positive.max() * off_target + 1e-9


def test_was_is_exactly_zero_when_all_mass_on_target(small_vocab: NumberVocab) -> None:
    logits = torch.zeros(1, 6)
    logits[0, 2] = 200.0  # all number mass on id 2 (value 1) in float32
    assert number_token_loss(logits, torch.tensor([2]), small_vocab).item() == 0.0
    assert number_token_loss(logits, torch.tensor([3]), small_vocab).item() == pytest.approx(1.0)


@PROPS
@given(problems(), st.floats(0.05, 0.95))
def test_property_mse_minimal_at_target(
    problem: tuple[NumberVocab, torch.Tensor, torch.Tensor], share: float
) -> None:
    vocab, logits, labels = problem
    loss = number_token_loss(logits, labels, vocab, kind="mse", reduction="none")
    assert torch.all(loss >= 0)
    # Put two-token mass so that ŷ equals the target exactly: the loss is 0 and stationary.
    values = vocab.values.double()
    lo, hi = int(values.argmin()), int(values.argmax())
    if values[lo] == values[hi]:
        return
    target = float(values[lo] + share * (values[hi] - values[lo]))
    vocab2 = NumberVocab.from_values(
        {**vocab.to_dict(), vocab.vocab_size: target}, vocab_size=vocab.vocab_size + 1
    )
    z = torch.full((1, vocab2.vocab_size), -1e4, dtype=torch.float64)
    z[0, lo], z[0, hi] = math.log(1 - share), math.log(share)
    z.requires_grad_(True)
    at_target = number_token_loss(z, torch.tensor([vocab.vocab_size]), vocab2, kind="mse")
    (grad,) = torch.autograd.grad(at_target, z)
    assert at_target.item() == pytest.approx(0.0, abs=1e-12)
    assert grad.abs().max().item() < 1e-8


@PROPS
@given(problems(), st.sampled_from(["was", "mse", "mae", "huber"]), st.integers(0, 2**31 - 1))
def test_property_invariant_to_non_number_logits(
    problem: tuple[NumberVocab, torch.Tensor, torch.Tensor], kind: str, seed: int
) -> None:
    vocab, logits, labels = problem
    text = torch.ones(vocab.vocab_size, dtype=torch.bool)
    text[vocab.token_ids] = False
    noise = 50 * torch.randn(
        logits.shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64
    )
    perturbed = torch.where(text, logits + noise, logits)
    for reduction in ("none", "mean"):
        a = number_token_loss(logits, labels, vocab, kind=kind, reduction=reduction)
        b = number_token_loss(perturbed, labels, vocab, kind=kind, reduction=reduction)
        assert torch.equal(a, b)


# --- bad input ------------------------------------------------------------------------------------


def _good(small_vocab: NumberVocab) -> dict[str, object]:
    return {
        "logits": torch.zeros(2, 3, 6),
        "labels": torch.ones(2, 3, dtype=torch.long),
        "vocab": small_vocab,
    }


BAD_INPUTS = [
    ({"logits": torch.zeros(2, 3, 7)}, ValueError, r"7 classes.*vocab_size is 6"),
    ({"logits": torch.zeros(6)}, ValueError, r"at least 2 dims.*\(6,\)"),
    ({"logits": torch.zeros(2, 3, 6, dtype=torch.long)}, TypeError, r"logits.*floating.*int64"),
    ({"logits": [[0.0] * 6]}, TypeError, r"logits must be a torch.Tensor"),
    (
        {"labels": torch.ones(2, 4, dtype=torch.long)},
        ValueError,
        r"labels must have shape.*\(2, 3\).*\(2, 4\)",
    ),
    ({"labels": torch.ones(6, dtype=torch.long)}, ValueError, r"labels must have shape"),
    ({"labels": torch.ones(2, 3)}, TypeError, r"labels must be an integer tensor.*float32"),
    ({"labels": torch.ones(2, 3, dtype=torch.bool)}, TypeError, r"labels.*bool"),
    (
        {"labels": torch.tensor([[1, 2, 6], [0, 0, 0]])},
        ValueError,
        r"labels must lie in \[0, 6\).*found 6 at index \(0, 2\)",
    ),
    ({"labels": torch.tensor([[1, 2, -1], [0, 0, 0]])}, ValueError, r"found -1"),
    (
        {"logits": torch.zeros(2, 3, 6).index_fill(2, torch.tensor([5]), float("nan"))},
        ValueError,
        r"must not contain NaN.*index \(0, 0, 5\)",
    ),
    (
        {"logits": torch.zeros(2, 3, 6).index_fill(1, torch.tensor([1]), float("inf"))},
        ValueError,
        r"\+inf at index .*softmax of that row is undefined",
    ),
    ({"vocab": {1: 2.0}}, TypeError, r"vocab must be a ntl.NumberVocab"),
    ({"kind": "rmse"}, ValueError, r"kind must be one of.*'rmse'"),
    ({"reduction": "avg"}, ValueError, r"reduction must be one of.*'avg'"),
    ({"normalize_by": "numbers"}, ValueError, r"normalize_by must be one of.*'numbers'"),
    ({"num_items_in_batch": -1}, ValueError, r"num_items_in_batch.*-1"),
    (
        {"num_items_in_batch": torch.tensor([1, 2])},
        ValueError,
        r"num_items_in_batch must be a scalar.*\(2,\)",
    ),
    ({"huber_delta": 0.0}, ValueError, r"huber_delta"),
    (
        {"target_probs": torch.ones(2, 3, 5)},
        ValueError,
        r"target_probs must have shape.*\(2, 3, 4\)",
    ),
    ({"target_probs": torch.full((2, 3, 4), -0.5)}, ValueError, r"non-negative"),
    ({"target_probs": torch.full((2, 3, 4), 0.5)}, ValueError, r"sum to 1"),
]


@pytest.mark.parametrize(("override", "error", "match"), BAD_INPUTS)
def test_bad_input_raises(
    override: dict[str, object], error: type[Exception], match: str, small_vocab: NumberVocab
) -> None:
    kwargs = {**_good(small_vocab), **override}
    with pytest.raises(error, match=match):
        number_token_loss(**kwargs)  # type: ignore[arg-type]
    ce_kwargs = {k: v for k, v in kwargs.items() if k not in ("target_probs",)}
    if "target_probs" not in override:
        with pytest.raises(error, match=match):
            cross_entropy_with_ntl(**ce_kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"ntl_weight": -0.1}, "ntl_weight"),
        ({"ntl_weight": float("nan")}, "ntl_weight"),
        ({"label_smoothing": 1.5}, "label_smoothing"),
        ({"num_number_items_in_batch": -3}, "num_number_items_in_batch"),
    ],
)
def test_bad_ce_options(kwargs: dict[str, float], match: str, small_vocab: NumberVocab) -> None:
    with pytest.raises(ValueError, match=match):
        cross_entropy_with_ntl(
            torch.zeros(2, 6), torch.ones(2, dtype=torch.long), small_vocab, **kwargs
        )  # type: ignore[arg-type]
    if "items" not in match:
        with pytest.raises(ValueError, match=match):
            CrossEntropyWithNTL(small_vocab, **kwargs)  # type: ignore[arg-type]


def test_module_rejects_bad_options_at_construction(small_vocab: NumberVocab) -> None:
    with pytest.raises(ValueError, match="kind"):
        NTLoss(small_vocab, kind="l2")
    with pytest.raises(TypeError, match="vocab"):
        CrossEntropyWithNTL(object())  # type: ignore[arg-type]


def test_inputs_are_not_mutated(small_vocab: NumberVocab) -> None:
    logits = torch.randn(2, 3, 6, dtype=torch.float16)
    labels = torch.tensor([[1, 2, -100], [4, 0, 3]], dtype=torch.int32)
    before = (logits.clone(), labels.clone(), small_vocab.to_dict())
    cross_entropy_with_ntl(logits, labels, small_vocab, reduction="none")
    number_token_loss(
        logits, labels, small_vocab, target_probs=gaussian_number_targets(labels, small_vocab, 1.0)
    )
    assert torch.equal(logits, before[0]) and torch.equal(labels, before[1])
    assert small_vocab.to_dict() == before[2]


def test_fused_flag_dispatches_to_fused_module(small_vocab: NumberVocab) -> None:
    fused = pytest.importorskip("ntl.fused", reason="ntl.fused (issue 3) not in this checkout")
    assert hasattr(fused, "fused_cross_entropy_with_ntl")
    gen = torch.Generator().manual_seed(8)
    logits = torch.randn(2, 5, 6, generator=gen)
    labels = torch.tensor([[1, 2, 3, 4, 0], [5, 4, 3, -100, 1]])
    reference = cross_entropy_with_ntl(logits, labels, small_vocab, fused=False)
    torch.testing.assert_close(
        cross_entropy_with_ntl(logits, labels, small_vocab, fused=True), reference
    )


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu(small_vocab: NumberVocab) -> None:
    gen = torch.Generator().manual_seed(9)
    logits = torch.randn(3, 8, 6, generator=gen)
    labels = torch.randint(0, 6, (3, 8), generator=gen)
    for kind in ORACLE:
        cpu = cross_entropy_with_ntl(logits, labels, small_vocab, kind=kind)
        gpu = cross_entropy_with_ntl(logits.cuda(), labels.cuda(), small_vocab, kind=kind)
        torch.testing.assert_close(gpu.cpu(), cpu)
