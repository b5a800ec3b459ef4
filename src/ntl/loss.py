"""Number Token Loss (Zausinger et al., ICML 2025): reference implementation.

At every position whose label is a number token with value ``y``, take the softmax over the
number-token logits only, ``p = softmax(z[token_ids])`` (K,), and

    was   : Σ_i p_i |v_i − y|                      (Wasserstein-1 to the point mass at y)
    mse   : (ŷ − y)²,  ŷ = Σ_i p_i v_i
    mae   : |ŷ − y|
    huber : huber_delta-Huber of ŷ − y

Positions with any other label (text tokens, ``ignore_index``) contribute nothing.
Normalisation is explicit: ``reduction="mean"`` divides the sum by the number of number-token
positions (``normalize_by="number_tokens"``, the paper) or of non-ignored positions
(``normalize_by="tokens"``, like cross-entropy). For gradient accumulation the two counts over the
whole accumulated batch are passed in, with one meaning everywhere (see :func:`ntl.count_targets`):
``num_items_in_batch`` = non-ignored target tokens (transformers' meaning), and
``num_number_items_in_batch`` = number-token targets.

Options of the reference package ntloss 0.3.2, all off by default (the paper uses none of them):
``loss_weights`` (per-position weights), ``reweigh`` (ntloss's default: scale by the probability
mass the full softmax puts on number tokens, plus a penalty for the rest) and ``squash_factor``
(WAS distances squashed for vocabularies with large number values).

This file is the single source of truth the fused kernel (``ntl.fused``) is tested against.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ntl._validate import (
    check_label_tensor,
    check_logits_labels,
    check_logits_shape,
    check_loss_options,
    check_loss_weights,
    check_ntl_counts,
    check_options,
    check_sigma,
    check_soft_target_rows,
    check_softmax_rows,
    check_squash_factor,
    check_target_probs,
    check_vocab,
    compute_dtype,
    mean_denominator,
)
from ntl.fused import fused_loss, make_options, number_softmax
from ntl.vocab import NumberVocab, squash_distances

__all__ = [
    "CrossEntropyWithNTL",
    "NTLoss",
    "count_targets",
    "cross_entropy_with_ntl",
    "gaussian_number_targets",
    "number_token_loss",
    "predict_numbers",
]


class _Positions:
    """Where the number labels are in the flattened batch: (N,) positions, (M,) number subset."""

    def __init__(self, labels: Tensor, vocab: NumberVocab, ignore_index: int, dtype: torch.dtype):
        self.token_ids, self.values, index_of = vocab.device_tensors(labels.device, dtype)
        flat = labels.reshape(-1).long()  # (N,)
        self.valid = flat != ignore_index  # (N,)
        k_all = index_of[torch.where(self.valid, flat, torch.zeros_like(flat))]  # (N,)
        is_number = self.valid & (k_all >= 0)  # (N,)
        self.pos = is_number.nonzero().squeeze(1)  # (M,)
        self.k = k_all.index_select(0, self.pos)  # (M,) index into the K number tokens
        self.num_valid = self.valid.sum()
        self.num_number = is_number.sum()


def _max_distance(kind: str, values: Tensor, huber_delta: float, squash: float | None) -> Tensor:
    """The largest per-position NTL one wrong number token can give (ntloss's ``max_dist``)."""
    spread = values.max() - values.min()
    if kind == "was":
        return spread if squash is None else spread.new_tensor(float(squash))
    if kind == "mse":
        return spread.square()
    if kind == "mae":
        return spread
    if kind == "huber":
        return F.huber_loss(spread, torch.zeros_like(spread), delta=huber_delta)
    raise ValueError(f"unknown NTL kind {kind!r}")


def _reweigh(per_pos: Tensor, number_rows: Tensor, where: _Positions, max_dist: Tensor) -> Tensor:
    """ntloss's ``reweigh``: ``loss · m + 1.01 · max_dist · (1 − m)``, m = number-token mass.

    ``number_rows`` (M, V) are the full logits at the number positions; m is the probability
    the softmax over the whole vocabulary puts on the number tokens.
    """
    check_softmax_rows(number_rows, "logits at a number label (reweigh takes the full softmax)")
    number_part = number_rows.index_select(1, where.token_ids)  # (M, K)
    mass = torch.exp(torch.logsumexp(number_part, -1) - torch.logsumexp(number_rows, -1))  # (M,)
    return per_pos * mass + 1.01 * max_dist * (1.0 - mass)


def _ntl_per_position(
    number_rows: Tensor,
    where: _Positions,
    kind: str,
    huber_delta: float,
    q: Tensor | None,
    squash_factor: float | None = None,
) -> Tensor:
    """NTL at the M number positions: (M,). ``number_rows`` (M, V): the logits at those positions
    in the compute dtype; ``q`` (M, K) optional soft targets."""
    nt_logits = number_rows.index_select(1, where.token_ids)  # (M, K)
    p = number_softmax(nt_logits, "logits at the number tokens of a number label")  # (M, K)
    values = where.values  # (K,)
    if kind == "was":
        if q is None:
            y = values.index_select(0, where.k)  # (M,)
            dist = squash_distances(
                (values.unsqueeze(0) - y.unsqueeze(1)).abs(), values, squash_factor
            )
            return (p * dist).sum(-1)
        # Exact W1 between p and q over the sorted support: Σ_j |CDF_p − CDF_q|_j · gap_j.
        order = torch.argsort(values, stable=True)  # (K,)
        gaps = values[order].diff()  # (K-1,)
        cdf_gap = (p[:, order] - q[:, order]).cumsum(-1)[:, :-1]  # (M, K-1)
        return (cdf_gap.abs() * gaps).sum(-1)
    y = values.index_select(0, where.k) if q is None else q @ values  # (M,)
    y_hat = p @ values  # (M,)
    if kind == "mse":
        return (y_hat - y).square()
    if kind == "mae":
        return (y_hat - y).abs()
    if kind == "huber":
        return F.huber_loss(y_hat, y, reduction="none", delta=huber_delta)
    raise ValueError(f"unknown NTL kind {kind!r}")


def _scatter(per_pos: Tensor, where: _Positions, shape: torch.Size) -> Tensor:
    """(M,) values at number positions -> (*shape) with zeros elsewhere."""
    out = per_pos.new_zeros(where.valid.numel())
    return out.index_copy(0, where.pos, per_pos).reshape(shape)


def count_targets(
    labels: Tensor, vocab: NumberVocab, *, causal: bool = False, ignore_index: int = -100
) -> tuple[Tensor, Tensor]:
    """``(num_items, num_number_items)``: the targets a loss uses in ``labels`` (...), as 0-d tensors.

    ``num_items`` counts the non-ignored targets, ``num_number_items`` those that are number
    tokens. With ``causal=True`` the labels are first shifted as by :func:`ntl.hf.shift_labels`
    (a decoder-only LM predicts ``labels[..., t + 1]`` at t), so the first label of each sequence
    is not counted. Sum both over the micro-batches of an accumulated batch (and over data-parallel
    ranks) and pass them as ``num_items_in_batch`` / ``num_number_items_in_batch`` to every
    micro-batch's loss: the accumulated gradient then equals the one of the whole batch.
    """
    vocab = check_vocab(vocab)
    check_label_tensor(labels, vocab.vocab_size, ignore_index)
    used = labels[..., 1:] if causal else labels
    _, _, index_of = vocab.device_tensors(labels.device, torch.float32)
    valid = used != ignore_index
    is_number = valid & (index_of[used.masked_fill(~valid, 0).long()] >= 0)
    return valid.sum(), is_number.sum()


def number_token_loss(
    logits: Tensor,
    labels: Tensor,
    vocab: NumberVocab,
    kind: str = "was",
    ignore_index: int = -100,
    reduction: str = "mean",
    normalize_by: str = "number_tokens",
    num_items_in_batch: int | Tensor | None = None,
    huber_delta: float = 1.0,
    target_probs: Tensor | None = None,
    *,
    num_number_items_in_batch: int | Tensor | None = None,
    loss_weights: Tensor | None = None,
    reweigh: bool = False,
    squash_factor: float | None = None,
) -> Tensor:
    """Number Token Loss of ``logits`` (..., V) against integer ``labels`` (...).

    Args:
        logits: (..., V) with V == ``vocab.vocab_size``; half precision is upcast to float32.
            ``-inf`` masks a token; NaN, ``+inf`` and all-``-inf`` number-token rows are errors.
        labels: (...) token ids in [0, V) or ``ignore_index``.
        vocab: the number tokens and their values.
        kind: ``"was"``, ``"mse"``, ``"mae"`` or ``"huber"``.
        reduction: ``"mean"``, ``"sum"``, or ``"none"`` ((...) with zeros at non-number positions).
        normalize_by: denominator of ``"mean"``: ``"number_tokens"`` or ``"tokens"`` (non-ignored).
        num_items_in_batch: the non-ignored targets of the whole accumulated batch: the
            ``"mean"`` denominator when ``normalize_by="tokens"`` (an error with
            ``"number_tokens"``, where it would be a different quantity).
        huber_delta: threshold of ``kind="huber"``.
        target_probs: optional soft targets (..., K) over ``vocab.token_ids`` (rows sum to 1 at
            number positions). ``"was"`` then uses the exact sorted-CDF W1; the other kinds use
            the target's expected value ``Σ_j q_j v_j`` as ``y``.
        num_number_items_in_batch: the number-token targets of the whole accumulated batch: the
            ``"mean"`` denominator when ``normalize_by="number_tokens"``.
        loss_weights: optional (...) weights >= 0 per position (ntloss ``loss_weights``); the
            ``"mean"`` then divides by the sum of the weights at the counted positions.
        reweigh: ntloss's ``reweigh`` (its default; off here and in the paper).
        squash_factor: ntloss's ``squash_factor`` for ``kind="was"`` (off by default).

    Returns:
        A scalar for ``"mean"``/``"sum"``, else a tensor shaped like ``labels``. With no number
        positions the result is an exact zero that still back-propagates (zero gradient).
    """
    vocab = check_vocab(vocab)
    check_loss_options(kind, reduction, normalize_by, huber_delta)
    check_ntl_counts(normalize_by, num_items_in_batch, num_number_items_in_batch)
    check_squash_factor(squash_factor, kind, soft_targets=target_probs is not None)
    check_logits_labels(logits, labels, vocab.vocab_size, ignore_index, softmax_rows=False)
    check_loss_weights(loss_weights, labels)
    if target_probs is not None:
        check_target_probs(target_probs, labels, len(vocab))
    dtype = compute_dtype(logits.dtype)
    where = _Positions(labels, vocab, ignore_index, dtype)
    q = None
    if target_probs is not None:
        q = target_probs.reshape(-1, len(vocab)).index_select(0, where.pos).to(dtype)  # (M, K)
        check_soft_target_rows(q)
    flat_logits = logits.reshape(-1, vocab.vocab_size)  # (N, V)
    number_rows = flat_logits.index_select(0, where.pos).to(dtype)  # (M, V)
    per_pos = _ntl_per_position(number_rows, where, kind, huber_delta, q, squash_factor)
    if reweigh:
        max_dist = _max_distance(kind, where.values, huber_delta, squash_factor)
        per_pos = _reweigh(per_pos, number_rows, where, max_dist)
    weights = None
    if loss_weights is not None:
        weights = loss_weights.reshape(-1).to(dtype)  # (N,)
        per_pos = per_pos * weights.index_select(0, where.pos)
    if reduction == "none":
        return _scatter(per_pos, where, labels.shape)
    total = per_pos.sum()
    if reduction == "sum":
        return total
    if normalize_by == "number_tokens":
        count = where.num_number if weights is None else weights.index_select(0, where.pos).sum()
        override, name = num_number_items_in_batch, "num_number_items_in_batch"
    else:
        count = where.num_valid if weights is None else (weights * where.valid).sum()
        override, name = num_items_in_batch, "num_items_in_batch"
    return total / mean_denominator(name, override, float(count))


def cross_entropy_with_ntl(
    logits: Tensor,
    labels: Tensor,
    vocab: NumberVocab,
    *,
    kind: str = "was",
    ntl_weight: float = 0.3,
    ignore_index: int = -100,
    reduction: str = "mean",
    normalize_by: str = "number_tokens",
    num_items_in_batch: int | Tensor | None = None,
    num_number_items_in_batch: int | Tensor | None = None,
    label_smoothing: float = 0.0,
    huber_delta: float = 1.0,
    fused: bool = True,
    reweigh: bool = False,
    squash_factor: float | None = None,
) -> Tensor:
    """Cross-entropy plus ``ntl_weight`` · Number Token Loss, the paper's training objective.

    The CE part has ``torch.nn.functional.cross_entropy`` semantics (``label_smoothing``,
    ``ignore_index``, ``-inf`` logits allowed); its ``"mean"`` divides the summed CE by
    ``num_items_in_batch`` if given, else by the number of non-ignored positions. The NTL part
    is normalised as in :func:`number_token_loss`, with the same meaning of the two counts:
    ``num_items_in_batch`` (non-ignored targets, also the NTL denominator when
    ``normalize_by="tokens"``) and ``num_number_items_in_batch`` (number-token targets, the NTL
    denominator when ``normalize_by="number_tokens"``); :func:`count_targets` computes both.
    ``reduction="none"`` returns per-position CE + ``ntl_weight`` · NTL, shaped like ``labels``.

    ``fused=True`` dispatches to ``ntl.fused.fused_cross_entropy_with_ntl`` (same arguments,
    same result). ``reweigh=True`` (ntloss's option) always runs the reference path.
    """
    vocab = check_vocab(vocab)
    opts = make_options(
        kind, ntl_weight, ignore_index, reduction, normalize_by, num_items_in_batch,
        num_number_items_in_batch, label_smoothing, huber_delta, None, squash_factor,
    )  # fmt: skip
    if fused and not reweigh:
        check_logits_shape(logits, vocab.vocab_size)  # the fused path only sees token ids
        # the vocab's cached (already checked) tables; values in the compute dtype, so float64
        # logits see the vocab's exact float64 values
        table = vocab.number_table(logits.device, compute_dtype(logits.dtype), opts.squash_factor)
        return fused_loss(
            logits, labels, table, opts, num_items_in_batch, num_number_items_in_batch, None
        )
    check_logits_labels(logits, labels, vocab.vocab_size, ignore_index)
    dtype = compute_dtype(logits.dtype)
    where = _Positions(labels, vocab, ignore_index, dtype)
    flat_logits = logits.reshape(-1, vocab.vocab_size).to(dtype)  # (N, V)
    flat_labels = labels.reshape(-1).long()
    ce = F.cross_entropy(
        flat_logits,
        flat_labels,
        ignore_index=ignore_index,
        reduction="none",
        label_smoothing=label_smoothing,
    )  # (N,)
    # an ignored row holds 0, but its gradient path may carry inf * 0 from a -inf logit
    ce = ce.masked_fill(~where.valid, 0.0)
    number_rows = flat_logits.index_select(0, where.pos)  # (M, V)
    ntl = _ntl_per_position(number_rows, where, kind, huber_delta, None, squash_factor)
    if reweigh:
        max_dist = _max_distance(kind, where.values, huber_delta, squash_factor)
        ntl = _reweigh(ntl, number_rows, where, max_dist)
    if reduction == "none":
        return ce.reshape(labels.shape) + ntl_weight * _scatter(ntl, where, labels.shape)
    if reduction == "sum":
        return ce.sum() + ntl_weight * ntl.sum()
    num_valid = float(where.num_valid)
    ce_denominator = mean_denominator("num_items_in_batch", num_items_in_batch, num_valid)
    if normalize_by == "number_tokens":
        ntl_denominator = mean_denominator(
            "num_number_items_in_batch", num_number_items_in_batch, float(where.num_number)
        )
    else:
        ntl_denominator = ce_denominator
    return ce.sum() / ce_denominator + ntl_weight * (ntl.sum() / ntl_denominator)


def predict_numbers(logits: Tensor, vocab: NumberVocab) -> Tensor:
    """Expected number value per position, ``Σ_i p_i v_i`` with p the number-token softmax: (...).

    ``-inf`` logits are allowed; a position whose number-token logits are all ``-inf`` (or hold
    NaN / ``+inf``) is an error.
    """
    vocab = check_vocab(vocab)
    check_logits_shape(logits, vocab.vocab_size)
    dtype = compute_dtype(logits.dtype)
    token_ids, values, _ = vocab.device_tensors(logits.device, dtype)
    nt_logits = logits.index_select(-1, token_ids).to(dtype)  # (..., K)
    check_softmax_rows(nt_logits, "logits at the number tokens")
    return torch.softmax(nt_logits, dim=-1) @ values


def gaussian_number_targets(
    labels: Tensor, vocab: NumberVocab, sigma: float, ignore_index: int = -100
) -> Tensor:
    """Gaussian-smoothed soft targets over the K number tokens: (..., K) float32.

    At a position whose label is a number token with value ``y``, each *distinct* value ``u`` of
    the vocabulary gets mass ``∝ exp(−(u − y)² / (2 sigma²))`` (a symmetric kernel over values,
    whatever the number of tokens per value). The mass of ``y`` itself goes to the label token;
    the mass of another value is split equally among the tokens with that value (e.g. "07" and
    "007" for 7 in a "numbers" vocabulary). Rows at all other positions are zero. Use as
    ``target_probs`` of :func:`number_token_loss`, or scatter into ``vocab.token_ids`` for a
    Gaussian label-smoothed cross-entropy.
    """
    vocab = check_vocab(vocab)
    check_sigma(sigma)
    check_label_tensor(labels, vocab.vocab_size, ignore_index)
    flat = labels.reshape(-1).long()  # (N,)
    where = _Positions(labels, vocab, ignore_index, torch.float64)
    distinct, group = torch.unique(where.values, return_inverse=True)  # (U,), (K,)
    per_value = torch.zeros_like(distinct).index_add_(0, group, torch.ones_like(where.values))
    y = where.values.index_select(0, where.k)  # (M,)
    log_q = -(distinct.unsqueeze(0) - y.unsqueeze(1)).square() / (2.0 * sigma * sigma)  # (M, U)
    mass = torch.softmax(log_q, dim=-1)  # (M, U), symmetric in u - y
    token_q = (mass / per_value).index_select(1, group)  # (M, K): a value's mass split equally
    own = group.index_select(0, where.k)  # (M,) the label's value group
    same_value = group.unsqueeze(0) == own.unsqueeze(1)  # (M, K)
    token_q = token_q.masked_fill(same_value, 0.0)
    token_q.scatter_(1, where.k.unsqueeze(1), mass.gather(1, own.unsqueeze(1)))
    out = torch.zeros(flat.numel(), len(vocab), device=labels.device)  # (N, K)
    out = out.index_copy(0, where.pos, token_q.to(torch.float32))
    return out.reshape(*labels.shape, len(vocab))


class NTLoss(nn.Module):
    """Number Token Loss only, as a module (see :func:`number_token_loss`)."""

    def __init__(
        self,
        vocab: NumberVocab,
        kind: str = "was",
        ignore_index: int = -100,
        reduction: str = "mean",
        normalize_by: str = "number_tokens",
        huber_delta: float = 1.0,
        *,
        reweigh: bool = False,
        squash_factor: float | None = None,
    ) -> None:
        super().__init__()
        self.vocab = check_vocab(vocab)
        check_loss_options(kind, reduction, normalize_by, huber_delta)
        check_squash_factor(squash_factor, kind)
        self.kind, self.ignore_index, self.reduction = kind, ignore_index, reduction
        self.normalize_by, self.huber_delta = normalize_by, huber_delta
        self.reweigh, self.squash_factor = bool(reweigh), squash_factor

    def forward(
        self,
        logits: Tensor,
        labels: Tensor,
        num_items_in_batch: int | Tensor | None = None,
        num_number_items_in_batch: int | Tensor | None = None,
        loss_weights: Tensor | None = None,
    ) -> Tensor:
        """``logits`` (..., V), ``labels`` (...) -> scalar, or (...) for ``reduction="none"``."""
        return number_token_loss(
            logits,
            labels,
            self.vocab,
            kind=self.kind,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            normalize_by=self.normalize_by,
            num_items_in_batch=num_items_in_batch,
            huber_delta=self.huber_delta,
            num_number_items_in_batch=num_number_items_in_batch,
            loss_weights=loss_weights,
            reweigh=self.reweigh,
            squash_factor=self.squash_factor,
        )

    def extra_repr(self) -> str:
        return (
            f"kind={self.kind!r}, reduction={self.reduction!r}, normalize_by={self.normalize_by!r}, "
            f"reweigh={self.reweigh}, squash_factor={self.squash_factor}, vocab={self.vocab!r}"
        )


class CrossEntropyWithNTL(nn.Module):
    """Cross-entropy + ``ntl_weight`` · NTL as a module (see :func:`cross_entropy_with_ntl`)."""

    def __init__(
        self,
        vocab: NumberVocab,
        kind: str = "was",
        ntl_weight: float = 0.3,
        ignore_index: int = -100,
        reduction: str = "mean",
        normalize_by: str = "number_tokens",
        label_smoothing: float = 0.0,
        huber_delta: float = 1.0,
        fused: bool = True,
        *,
        reweigh: bool = False,
        squash_factor: float | None = None,
    ) -> None:
        super().__init__()
        self.vocab = check_vocab(vocab)
        check_options(
            kind, reduction, normalize_by, huber_delta, ntl_weight, label_smoothing,
            None, None, None, squash_factor,
        )  # fmt: skip
        self.kind, self.ntl_weight, self.ignore_index = kind, ntl_weight, ignore_index
        self.reduction, self.normalize_by = reduction, normalize_by
        self.label_smoothing, self.huber_delta, self.fused = label_smoothing, huber_delta, fused
        self.reweigh, self.squash_factor = bool(reweigh), squash_factor

    def forward(
        self,
        logits: Tensor,
        labels: Tensor,
        num_items_in_batch: int | Tensor | None = None,
        num_number_items_in_batch: int | Tensor | None = None,
    ) -> Tensor:
        """``logits`` (..., V), ``labels`` (...) -> scalar, or (...) for ``reduction="none"``."""
        return cross_entropy_with_ntl(
            logits,
            labels,
            self.vocab,
            kind=self.kind,
            ntl_weight=self.ntl_weight,
            ignore_index=self.ignore_index,
            reduction=self.reduction,
            normalize_by=self.normalize_by,
            num_items_in_batch=num_items_in_batch,
            num_number_items_in_batch=num_number_items_in_batch,
            label_smoothing=self.label_smoothing,
            huber_delta=self.huber_delta,
            fused=self.fused,
            reweigh=self.reweigh,
            squash_factor=self.squash_factor,
        )

    def extra_repr(self) -> str:
        return (
            f"kind={self.kind!r}, ntl_weight={self.ntl_weight}, reduction={self.reduction!r}, "
            f"normalize_by={self.normalize_by!r}, fused={self.fused}, vocab={self.vocab!r}"
        )
