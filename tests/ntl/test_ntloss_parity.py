"""Parity with the reference package ntloss 0.3.2: its options reweigh, squash_factor and
loss_weights, and its number-level loss (NL-NTL), on one offline digit tokenizer."""

from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F

from ntl import (
    NTLoss,
    NumberVocab,
    count_targets,
    cross_entropy_with_ntl,
    number_level_loss,
    number_token_loss,
)

ntloss = pytest.importorskip("ntloss")

# specials, the ten digits, the decimal point, operators and words
WORDS = ["[PAD]", "[UNK]", *[str(d) for d in range(10)], ".", "+", "=", "is", "x", "y"]
IDS = {w: i for i, w in enumerate(WORDS)}
DOT = IDS["."]
V = len(WORDS)


def _tokenizer() -> object:
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(WordLevel(IDS, unk_token="[UNK]"))
    backend.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]")


def _batch(seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """float64 logits (3, 12, V), labels with multi-digit numbers, decimals and ignored spots."""
    rows = [
        "x = 3 1 4 . 1 5 is y 7 [PAD]",
        "2 0 0 7 + 9 = 1 . 5 . 2",
        "0 . 0 0 4 2 is . 8 6 = .",
    ]
    labels = torch.tensor([[IDS[w] for w in row.split()] for row in rows])
    labels[labels == IDS["[PAD]"]] = -100
    labels[1, 5] = -100  # an ignored digit breaks a number
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(*labels.shape, V, generator=gen, dtype=torch.float64) * 2
    weights = torch.rand(labels.shape, generator=gen, dtype=torch.float64)
    return logits, labels, weights


def _vocab() -> NumberVocab:
    return NumberVocab.from_tokenizer(_tokenizer())


REDUCTIONS = ("mean", "sum", "none")


@pytest.mark.parametrize(
    ("reweigh", "squash", "weighted"),
    list(itertools.product([False, True], [None, 3.0], [False, True])),
)
def test_was_matches_ntloss(reweigh: bool, squash: float | None, weighted: bool) -> None:
    ref = ntloss.NTLoss(_tokenizer(), vocab_size=V, reweigh=reweigh, squash_factor=squash)
    vocab = _vocab()
    ours = NTLoss(vocab, kind="was", reweigh=reweigh, squash_factor=squash)
    for seed, reduction in itertools.product(range(2), REDUCTIONS):
        logits, labels, weights = _batch(seed)
        w = weights if weighted else None
        expected = ref(logits, labels, loss_weights=w, reduction=reduction)
        ours.reduction = reduction
        torch.testing.assert_close(ours(logits, labels, loss_weights=w), expected)


@pytest.mark.parametrize(
    ("kind", "loss_function"), [("mse", F.mse_loss), ("mae", F.l1_loss), ("huber", F.huber_loss)]
)
@pytest.mark.parametrize("reweigh", [False, True])
def test_dot_product_kinds_match_ntloss(kind: str, loss_function: object, reweigh: bool) -> None:
    ref = ntloss.NTLossDotProduct(
        _tokenizer(), vocab_size=V, reweigh=reweigh, loss_function=loss_function
    )
    vocab = _vocab()
    for reduction in REDUCTIONS:
        logits, labels, weights = _batch(3)
        expected = ref(logits, labels, loss_weights=weights, reduction=reduction)
        got = number_token_loss(
            logits, labels, vocab, kind=kind, reduction=reduction, loss_weights=weights,
            reweigh=reweigh,
        )  # fmt: skip
        torch.testing.assert_close(got, expected)


def test_fused_squash_matches_reference_and_ntloss() -> None:
    vocab = _vocab()
    logits, labels, _ = _batch(4)
    ref = ntloss.NTLoss(_tokenizer(), vocab_size=V, reweigh=False, squash_factor=4.0)
    expected = F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1)) + 0.3 * ref(
        logits, labels
    )
    grads = []
    for fused in (True, False):
        x = logits.clone().requires_grad_()
        loss = cross_entropy_with_ntl(x, labels, vocab, squash_factor=4.0, fused=fused)
        torch.testing.assert_close(loss, expected)
        grads.append(torch.autograd.grad(loss, x)[0])
    torch.testing.assert_close(grads[0], grads[1])
    # reweigh always runs the reference path
    x = logits.clone().requires_grad_()
    reweighed = cross_entropy_with_ntl(x, labels, vocab, reweigh=True)
    ref_rw = ntloss.NTLoss(_tokenizer(), vocab_size=V, reweigh=True)
    torch.testing.assert_close(
        reweighed,
        F.cross_entropy(logits.reshape(-1, V), labels.reshape(-1)) + 0.3 * ref_rw(logits, labels),
    )


@pytest.mark.parametrize(
    ("float_level", "reweigh", "weighted"),
    list(itertools.product([False, True], [False, True], [False, True])),
)
def test_number_level_matches_ntloss(float_level: bool, reweigh: bool, weighted: bool) -> None:
    ref = ntloss.NumberLevelLoss(
        _tokenizer(), vocab_size=V, float_level=float_level, reweigh=reweigh
    )
    vocab = _vocab()
    for seed, reduction in itertools.product(range(2), REDUCTIONS):
        logits, labels, weights = _batch(seed)
        w = weights if weighted else None
        expected = ref(logits, labels, loss_weights=w, reduction=reduction)
        got = number_level_loss(
            logits, labels, vocab, float_level=float_level, dot_token_id=DOT,
            reduction=reduction, loss_weights=w, reweigh=reweigh,
        )  # fmt: skip
        torch.testing.assert_close(got, expected)


def test_number_level_oracle_and_spans() -> None:
    """Hand-built: certain digits give 0; 31 predicted for 34 gives |31-34|/(31+34)."""
    vocab = _vocab()
    labels = torch.tensor([[IDS["3"], IDS["4"], IDS["x"], IDS["1"], IDS["."], IDS["2"]]])
    logits = torch.full((1, 6, V), -30.0, dtype=torch.float64)
    for t, word in enumerate(["3", "1", "x", "1", ".", "2"]):
        logits[0, t, IDS[word]] = 30.0
    none = number_level_loss(logits, labels, vocab, reduction="none")
    # spans: 34 (predicted 31), 1 and 2 (exact); the loss sits at each number's first digit
    torch.testing.assert_close(
        none,
        torch.tensor([[3 / 65, 0.0, 0.0, 0.0, 0.0, 0.0]], dtype=torch.float64),
        atol=1e-9,
        rtol=1e-6,
    )
    assert number_level_loss(logits, labels, vocab).item() == pytest.approx(3 / 65 / 3, rel=1e-6)
    joined = number_level_loss(
        logits, labels, vocab, float_level=True, dot_token_id=DOT, reduction="none"
    )
    assert joined[0, 3].item() == pytest.approx(0.0, abs=1e-9) and joined[0, 4] == 0
    # gradient accumulation: the per-half losses with the whole batch's count add up
    halves = [number_level_loss(logits[:, :3], labels[:, :3], vocab, num_numbers_in_batch=3)]
    halves.append(number_level_loss(logits[:, 3:], labels[:, 3:], vocab, num_numbers_in_batch=3))
    torch.testing.assert_close(sum(halves), number_level_loss(logits, labels, vocab))


def test_number_level_long_numbers_do_not_overflow() -> None:
    vocab = _vocab()
    labels = torch.tensor([[IDS["9"]] * 60]).to(torch.long)
    logits = torch.zeros(1, 60, V, dtype=torch.float32, requires_grad=True)
    loss = number_level_loss(logits, labels, vocab)
    loss.backward()
    assert bool(torch.isfinite(loss)) and logits.grad is not None
    assert bool(torch.isfinite(logits.grad).all())
    # 99..9 vs a uniform guess of 4.5 per digit, i.e. half the number: |y/2| / (3y/2) = 1/3
    assert loss.item() == pytest.approx(1 / 3, rel=1e-5)


def test_number_level_bad_input() -> None:
    vocab = _vocab()
    logits, labels, _ = _batch(0)
    with pytest.raises(ValueError, match="dot_token_id"):
        number_level_loss(logits, labels, vocab, float_level=True)
    numbers = NumberVocab.from_values({2: 12.0, 3: 1.0}, vocab_size=V)
    with pytest.raises(ValueError, match="digit vocabulary"):
        number_level_loss(logits, labels, numbers)
    with pytest.raises(ValueError, match="reduction"):
        number_level_loss(logits, labels, vocab, reduction="avg")
    with pytest.raises(ValueError, match=r"loss_weights must be finite and >= 0.*-1"):
        number_level_loss(logits, labels, vocab, loss_weights=-torch.ones(labels.shape))


def test_count_targets_for_accumulation() -> None:
    """Exact paper normalisation under accumulation: counts summed over micro-batches."""
    vocab = _vocab()
    logits, labels, _ = _batch(5)
    x = logits.clone().requires_grad_()
    full = cross_entropy_with_ntl(x[..., :-1, :], labels[..., 1:], vocab)
    (expected,) = torch.autograd.grad(full, x)
    parts = [slice(0, 1), slice(1, 3)]
    totals = [sum(c) for c in zip(*(count_targets(labels[p], vocab, causal=True) for p in parts))]
    assert int(totals[0]) == int((labels[:, 1:] != -100).sum())
    accumulated = torch.zeros_like(logits)
    for p in parts:
        loss = cross_entropy_with_ntl(
            x[p][..., :-1, :], labels[p][..., 1:], vocab,
            num_items_in_batch=totals[0], num_number_items_in_batch=totals[1],
        )  # fmt: skip
        accumulated += torch.autograd.grad(loss, x)[0]
    torch.testing.assert_close(accumulated, expected)
