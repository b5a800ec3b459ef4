"""Options added for parity with ntloss (reweigh, squash_factor, loss_weights, NL-NTL): oracles,
gradient checks, bad input, and the structure rules (one branch per kind, one denominator)."""

from __future__ import annotations

import pytest
import torch

from ntl import (
    CrossEntropyWithNTL,
    NTLoss,
    NumberVocab,
    count_targets,
    cross_entropy_with_ntl,
    linear_cross_entropy_with_ntl,
    number_level_loss,
    number_token_loss,
)
from ntl._validate import mean_denominator
from ntl.fused import ntl_columns, squash_distances


def _vocab() -> NumberVocab:
    return NumberVocab.from_values({1: 0.0, 2: 1.0, 3: 2.0, 4: 5.0}, vocab_size=8)


def test_squash_oracle() -> None:
    """Distances 1..5 between values {0, 1, 2, 5}: min non-zero 1 -> 1, max 5 -> factor."""
    values = torch.tensor([0.0, 1.0, 2.0, 5.0], dtype=torch.float64)
    dist = torch.tensor([[0.0, 1.0, 2.0, 5.0]], dtype=torch.float64)
    squashed = squash_distances(dist, values, 3.0)
    torch.testing.assert_close(squashed, torch.tensor([[0.0, 1.0, 1.5, 3.0]], dtype=torch.float64))
    assert squash_distances(dist, values, None) is dist


def test_reweigh_oracle() -> None:
    """All mass on text tokens -> the NTL is 1.01 x the largest distance (5 for WAS)."""
    vocab = _vocab()
    logits = torch.zeros(1, 1, 8, dtype=torch.float64)
    logits[0, 0, 6] = 60.0  # a text token takes (almost) all the mass
    labels = torch.tensor([[2]])
    loss = number_token_loss(logits, labels, vocab, reweigh=True)
    assert loss.item() == pytest.approx(1.01 * 5.0, rel=1e-9)
    mse = number_token_loss(logits, labels, vocab, kind="mse", reweigh=True)
    assert mse.item() == pytest.approx(1.01 * 25.0, rel=1e-9)


@pytest.mark.parametrize("fused", [False, True])
def test_options_gradcheck(fused: bool) -> None:
    vocab = _vocab()
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 4, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[1, 2, 6, -100], [4, 3, 0, 2]])

    def fn(x: torch.Tensor) -> torch.Tensor:
        return cross_entropy_with_ntl(x, labels, vocab, squash_factor=2.5, fused=fused)

    assert torch.autograd.gradcheck(fn, (logits,))
    weights = torch.rand(2, 4, generator=gen, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda x: number_token_loss(x, labels, vocab, reweigh=True, loss_weights=weights),
        (logits,),
    )


def test_number_level_gradcheck() -> None:
    vocab = NumberVocab.from_values({i: float(i) for i in range(10)}, vocab_size=12)
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 6, 12, generator=gen, dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([[3, 1, 4, 10, 1, 5], [11, 2, 10, 7, -100, 9]])
    for float_level in (False, True):
        assert torch.autograd.gradcheck(
            lambda x, f=float_level: number_level_loss(
                x, labels, vocab, float_level=f, dot_token_id=10, reweigh=True
            ),
            (logits,),
        )


def test_modules_carry_the_options() -> None:
    vocab = _vocab()
    gen = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 4, 8, generator=gen)
    labels = torch.tensor([[1, 2, 6, -100], [4, 3, 0, 2]])
    module = NTLoss(vocab, reweigh=True, squash_factor=2.0)
    torch.testing.assert_close(
        module(logits, labels),
        number_token_loss(logits, labels, vocab, reweigh=True, squash_factor=2.0),
    )
    ce = CrossEntropyWithNTL(vocab, reweigh=True)
    torch.testing.assert_close(
        ce(logits, labels), cross_entropy_with_ntl(logits, labels, vocab, reweigh=True)
    )
    assert "reweigh=True" in repr(module)


def test_linear_path_squash_matches_materialised() -> None:
    vocab = _vocab()
    gen = torch.Generator().manual_seed(3)
    hidden = torch.randn(3, 5, 4, generator=gen, dtype=torch.float64)
    weight = torch.randn(8, 4, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 8, (3, 5), generator=gen)
    torch.testing.assert_close(
        linear_cross_entropy_with_ntl(hidden, weight, labels, vocab, squash_factor=3.0),
        cross_entropy_with_ntl(hidden @ weight.T, labels, vocab, squash_factor=3.0),
    )


@pytest.mark.parametrize(
    ("call", "error", "match"),
    [
        (lambda v, x, y: number_token_loss(x, y, v, squash_factor=1.0), ValueError, "> 1"),
        (lambda v, x, y: number_token_loss(x, y, v, squash_factor="2"), TypeError, "float"),
        (lambda v, x, y: number_token_loss(x, y, v, kind="mse", squash_factor=2.0), ValueError,
         "kind='was'"),
        (lambda v, x, y: cross_entropy_with_ntl(x, y, v, kind="mae", squash_factor=2.0),
         ValueError, "kind='was'"),
        (lambda v, x, y: number_token_loss(x, y, v, loss_weights=torch.ones(3)), ValueError,
         "shape of labels"),
        (lambda v, x, y: number_token_loss(x, y, v, loss_weights=torch.ones(2, 4).long()),
         TypeError, "floating"),
        (lambda v, x, y: number_token_loss(x, y, v, normalize_by="tokens",
                                           num_number_items_in_batch=3), ValueError,
         "number_tokens' denominator"),
        (lambda v, x, y: count_targets(x, v), TypeError, "integer"),
        (lambda v, x, y: count_targets(torch.full((2, 3), 9), v), ValueError, "found 9"),
        (lambda v, x, y: count_targets(y, {1: 2.0}), TypeError, "NumberVocab"),
    ],
)  # fmt: skip
def test_option_bad_input(call: object, error: type[Exception], match: str) -> None:
    vocab = _vocab()
    logits = torch.zeros(2, 4, 8)
    labels = torch.tensor([[1, 2, 6, -100], [4, 3, 0, 2]])
    with pytest.raises(error, match=match):
        call(vocab, logits, labels)  # type: ignore[operator]


def test_one_branch_per_kind() -> None:
    table = _vocab().number_table(torch.device("cpu"), torch.float32)
    logits = torch.zeros(4, 2)  # (K, M): two number rows of the K = 4 number tokens
    with pytest.raises(ValueError, match="unknown NTL kind 'l2'"):
        ntl_columns(logits, torch.tensor([1, 2]), table, "l2", 1.0)


def test_mean_denominator_rule() -> None:
    assert mean_denominator("n", None, 4.0) == 4.0
    assert mean_denominator("n", 10, 4.0) == 10.0
    assert mean_denominator("n", None, 0.0) == 1.0
    assert mean_denominator("n", torch.tensor(0), 0.0) == 1.0
    with pytest.raises(ValueError, match=r"n=0 but this batch has 4 items"):
        mean_denominator("n", 0, 4.0)


def test_count_targets_values() -> None:
    vocab = _vocab()
    labels = torch.tensor([[1, 6, 2, -100], [4, 3, 0, -100]])
    items, numbers = count_targets(labels, vocab)
    assert (int(items), int(numbers)) == (6, 4)
    items, numbers = count_targets(labels, vocab, causal=True)
    assert (int(items), int(numbers)) == (4, 2)
