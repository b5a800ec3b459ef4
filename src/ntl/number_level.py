"""Number-level NTL ("NL-NTL", ntloss ``NumberLevelLoss``): a loss on whole numbers, not digits.

With a digit vocabulary a number such as 314 is three label tokens. The token-level NTL compares
each digit on its own; the number-level loss rebuilds the number the model expects,

    ŷ = Σ_d ŷ_d · 10^(e_d),   ŷ_d = Σ_i p_i v_i  (number-token softmax at digit position d),

from the consecutive digit labels of one span (e_d = the digit's power of ten) and compares it
with the labelled number y by the symmetric relative error ``|ŷ − y| / (|ŷ| + |y| + eps)``, which
is bounded in [0, 1] whatever the numbers' size. A span is a run of consecutive positions whose
labels are digits; any other label (text, ``ignore_index``) ends it. The decimal point either
ends a span (default: 12.34 gives the numbers 12 and 34) or, with ``float_level=True``, a single
dot between two digits joins them and adds no digit (12.34 is compared as 1234), as in ntloss.

Everything is vectorised: spans come from a cumulative sum over the flattened positions, digits
are weighted by powers of ten relative to each span's leading digit (so no number overflows),
and the per-span sums are one ``index_add``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ntl._validate import (
    check_choice,
    check_digit_vocab,
    check_dot_token,
    check_label_tensor,
    check_logits_labels,
    check_loss_weights,
    check_num_items,
    check_softmax_rows,
    check_vocab,
    compute_dtype,
    mean_denominator,
)
from ntl.vocab import NumberVocab

__all__ = ["number_level_loss"]


def _shift(mask: Tensor, step: int) -> Tensor:
    """``out[..., t] = mask[..., t - step]`` along the last dim, False where that is outside."""
    out = torch.zeros_like(mask)
    if step > 0:
        out[..., step:] = mask[..., :-step]
    else:
        out[..., :step] = mask[..., -step:]
    return out


def number_level_loss(
    logits: Tensor,
    labels: Tensor,
    vocab: NumberVocab,
    *,
    float_level: bool = False,
    dot_token_id: int | None = None,
    ignore_index: int = -100,
    reduction: str = "mean",
    num_numbers_in_batch: int | Tensor | None = None,
    loss_weights: Tensor | None = None,
    reweigh: bool = False,
) -> Tensor:
    """Symmetric relative error between the expected and the labelled whole numbers.

    Args:
        logits: (..., T, V) with V == ``vocab.vocab_size``; half precision is computed in float32.
        labels: (..., T) token ids in [0, V) or ``ignore_index``; spans run along the last dim.
        vocab: a digit vocabulary: every value is one of 0..9 (several tokens per digit are fine,
            e.g. "7" and "Ġ7").
        float_level: a single ``dot_token_id`` label between two digits joins them (ntloss).
        dot_token_id: the id of the decimal point; required with ``float_level=True``.
        reduction: ``"mean"`` (over the numbers), ``"sum"``, or ``"none"`` (labels' shape, the
            loss of each number at its first digit, zeros elsewhere).
        num_numbers_in_batch: the ``"mean"`` denominator for gradient accumulation: the count
            (or, with ``loss_weights``, the summed weights) of the numbers in the whole batch.
        loss_weights: optional (..., T) weights >= 0; a number takes its first digit's weight,
            and ``"mean"`` divides by the sum of those weights (ntloss).
        reweigh: ntloss's ``reweigh`` with its bound 1: ``loss · m + 1.01 · (1 − m)``, m the
            probability the full softmax puts on number tokens at the first digit.

    Returns:
        A scalar for ``"mean"``/``"sum"``, else a tensor shaped like ``labels``.
    """
    vocab = check_vocab(vocab)
    check_choice("reduction", reduction, ("mean", "sum", "none"))
    check_num_items("num_numbers_in_batch", num_numbers_in_batch)
    check_digit_vocab(vocab)
    check_dot_token(float_level, dot_token_id)
    check_logits_labels(logits, labels, vocab.vocab_size, ignore_index, softmax_rows=False)
    check_label_tensor(labels)
    check_loss_weights(loss_weights, labels)
    dtype = compute_dtype(logits.dtype)
    token_ids, token_values, index_of = vocab.device_tensors(labels.device, dtype)

    lab = labels.long()  # (..., T)
    valid = lab != ignore_index
    k = index_of[lab.masked_fill(~valid, 0)].masked_fill(~valid, -1)  # (..., T)
    is_digit = k >= 0
    in_span = is_digit
    if float_level:
        joined = (lab == dot_token_id) & _shift(is_digit, 1) & _shift(is_digit, -1)
        in_span = is_digit | joined
    start = in_span & ~_shift(in_span, 1)  # a span always starts at a digit

    flat_digit = is_digit.reshape(-1)  # (N,)
    span_of = torch.cumsum(start.reshape(-1), 0) - 1  # (N,) span index of in-span positions
    digit_pos = flat_digit.nonzero().squeeze(1)  # (D,)
    starts = start.reshape(-1).nonzero().squeeze(1)  # (S,)
    num_spans = starts.numel()
    digit_span = span_of.index_select(0, digit_pos)  # (D,)
    # digit rank inside its span: 0 for the leading digit
    rank = torch.arange(digit_pos.numel(), device=lab.device)
    first_rank = torch.full((num_spans,), digit_pos.numel(), device=lab.device, dtype=torch.long)
    first_rank = first_rank.scatter_reduce(0, digit_span, rank, reduce="amin")
    depth = rank - first_rank.index_select(0, digit_span)  # (D,)
    digits_per_span = torch.zeros(num_spans, device=lab.device, dtype=torch.long)
    digits_per_span.index_add_(0, digit_span, torch.ones_like(digit_span))
    # powers of ten relative to the leading digit: 1, 0.1, 0.01, ... (never overflows)
    scale = torch.pow(torch.tensor(10.0, dtype=dtype, device=lab.device), -depth.to(dtype))

    flat_logits = logits.reshape(-1, vocab.vocab_size)
    digit_rows = flat_logits.index_select(0, digit_pos).to(dtype)  # (D, V)
    digit_logits = digit_rows.index_select(1, token_ids)  # (D, K)
    check_softmax_rows(digit_logits, "logits at the number tokens of a digit label")
    y_digit = token_values.index_select(0, k.reshape(-1).index_select(0, digit_pos))  # (D,)
    y_hat_digit = torch.softmax(digit_logits, dim=-1) @ token_values  # (D,)
    y = torch.zeros(num_spans, dtype=dtype, device=lab.device).index_add(
        0, digit_span, y_digit * scale
    )
    y_hat = torch.zeros(num_spans, dtype=dtype, device=lab.device).index_add(
        0, digit_span, y_hat_digit * scale
    )
    # ntloss's eps on the unscaled numbers, in the scaled units
    eps = torch.finfo(dtype).eps * torch.pow(
        torch.tensor(10.0, dtype=dtype, device=lab.device),
        -(digits_per_span - 1).to(dtype),
    )
    loss = (y_hat - y).abs() / (y_hat.abs() + y.abs() + eps)  # (S,)
    if reweigh:
        rows = flat_logits.index_select(0, starts).to(dtype)  # (S, V)
        check_softmax_rows(rows, "logits at a number's first digit (reweigh)")
        mass = torch.exp(
            torch.logsumexp(rows.index_select(1, token_ids), -1) - torch.logsumexp(rows, -1)
        )
        loss = loss * mass + 1.01 * (1.0 - mass)
    weights = None
    if loss_weights is not None:
        weights = loss_weights.reshape(-1).index_select(0, starts).to(dtype)  # (S,)
        loss = loss * weights
    if reduction == "none":
        out = loss.new_zeros(lab.numel()).index_copy(0, starts, loss)
        return out.reshape(labels.shape)
    total = loss.sum()
    if reduction == "sum":
        return total
    count = float(num_spans) if weights is None else float(weights.sum())
    return total / mean_denominator("num_numbers_in_batch", num_numbers_in_batch, count)
