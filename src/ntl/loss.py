"""Number Token Loss (Zausinger et al., ICML 2025): reference implementation.

At every position whose label is a number token with value ``y``, take the softmax over the
number-token logits only, ``p = softmax(z[token_ids])`` (K,), and

    was   : Σ_i p_i |v_i − y|                      (Wasserstein-1 to the point mass at y)
    mse   : (ŷ − y)²,  ŷ = Σ_i p_i v_i
    mae   : |ŷ − y|
    huber : huber_delta-Huber of ŷ − y

Positions with any other label (text tokens, ``ignore_index``) contribute nothing.
Normalisation is explicit: ``reduction="mean"`` divides the sum by ``num_items_in_batch`` when
given, else by the number of number-token positions (``normalize_by="number_tokens"``, the
paper) or of non-ignored positions (``normalize_by="tokens"``, like cross-entropy).

This file is the single source of truth the fused kernel (``ntl.fused``) is tested against.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ntl._validate import (
    check_logits,
    check_logits_labels,
    check_logits_shape,
    check_loss_options,
    check_num_items,
    check_target_probs,
)
from ntl.vocab import NumberVocab

__all__ = [
    "CrossEntropyWithNTL",
    "NTLoss",
    "cross_entropy_with_ntl",
    "gaussian_number_targets",
    "number_token_loss",
    "predict_numbers",
]


def _check_vocab(vocab: object) -> NumberVocab:
    if not isinstance(vocab, NumberVocab):
        raise TypeError(f"vocab must be a ntl.NumberVocab, got {type(vocab).__name__}")
    return vocab


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """Half-precision logits are upcast to float32; float32/float64 stay as they are."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def _check_weight(name: str, value: float, upper: float = math.inf) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    if not (0 <= value <= upper and math.isfinite(value)):
        raise ValueError(f"{name} must be finite and in [0, {upper}], got {value!r}")


def _denominator(override: int | Tensor | None, count: Tensor, dtype: torch.dtype) -> Tensor:
    """The divisor of a "mean": the override if given, else ``count``; 0 becomes 1 (sum is 0 then)."""
    value = count if override is None else torch.as_tensor(override, device=count.device)
    value = value.reshape(()).to(count.device, dtype)
    return torch.where(value > 0, value, torch.ones_like(value))


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


def _ntl_per_position(
    flat_logits: Tensor,
    where: _Positions,
    kind: str,
    huber_delta: float,
    q: Tensor | None,
) -> Tensor:
    """NTL at the M number positions: (M,). ``flat_logits`` (N, V) in the compute dtype; ``q`` (M, K)."""
    nt_logits = flat_logits[where.pos.unsqueeze(1), where.token_ids.unsqueeze(0)]  # (M, K)
    p = torch.softmax(nt_logits, dim=-1)  # (M, K)
    values = where.values  # (K,)
    if kind == "was":
        if q is None:
            y = values.index_select(0, where.k)  # (M,)
            return (p * (values.unsqueeze(0) - y.unsqueeze(1)).abs()).sum(-1)
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
    return F.huber_loss(y_hat, y, reduction="none", delta=huber_delta)


def _scatter(per_pos: Tensor, where: _Positions, shape: torch.Size) -> Tensor:
    """(M,) values at number positions -> (*shape) with zeros elsewhere."""
    out = per_pos.new_zeros(where.valid.numel())
    return out.index_copy(0, where.pos, per_pos).reshape(shape)


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
) -> Tensor:
    """Number Token Loss of ``logits`` (..., V) against integer ``labels`` (...).

    Args:
        logits: (..., V) with V == ``vocab.vocab_size``; half precision is upcast to float32.
        labels: (...) token ids in [0, V) or ``ignore_index``.
        vocab: the number tokens and their values.
        kind: ``"was"``, ``"mse"``, ``"mae"`` or ``"huber"``.
        reduction: ``"mean"``, ``"sum"``, or ``"none"`` ((...) with zeros at non-number positions).
        normalize_by: denominator of ``"mean"``: ``"number_tokens"`` or ``"tokens"`` (non-ignored).
        num_items_in_batch: overrides the ``"mean"`` denominator (gradient accumulation).
        huber_delta: threshold of ``kind="huber"``.
        target_probs: optional soft targets (..., K) over ``vocab.token_ids`` (rows sum to 1 at
            number positions). ``"was"`` then uses the exact sorted-CDF W1; the other kinds use
            the target's expected value ``Σ_j q_j v_j`` as ``y``.

    Returns:
        A scalar for ``"mean"``/``"sum"``, else a tensor shaped like ``labels``. With no number
        positions the result is an exact zero that still back-propagates (zero gradient).
    """
    vocab = _check_vocab(vocab)
    check_loss_options(kind, reduction, normalize_by, huber_delta)
    check_num_items("num_items_in_batch", num_items_in_batch)
    check_logits_labels(logits, labels, vocab.vocab_size, ignore_index)
    if target_probs is not None:
        check_target_probs(target_probs, labels, len(vocab))
    dtype = _compute_dtype(logits.dtype)
    where = _Positions(labels, vocab, ignore_index, dtype)
    q = None
    if target_probs is not None:
        q = target_probs.reshape(-1, len(vocab)).index_select(0, where.pos).to(dtype)  # (M, K)
        row_sums = q.detach().sum(-1)
        if not bool(torch.allclose(row_sums, torch.ones_like(row_sums), atol=1e-4)):
            raise ValueError(
                "target_probs rows must sum to 1 at number-token positions, "
                f"got sums in [{row_sums.min().item():g}, {row_sums.max().item():g}]"
            )
    flat_logits = logits.reshape(-1, vocab.vocab_size).to(dtype)  # (N, V)
    per_pos = _ntl_per_position(flat_logits, where, kind, huber_delta, q)  # (M,)
    if reduction == "none":
        return _scatter(per_pos, where, labels.shape)
    total = per_pos.sum()
    if reduction == "sum":
        return total
    count = where.num_number if normalize_by == "number_tokens" else where.num_valid
    return total / _denominator(num_items_in_batch, count, dtype)


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
) -> Tensor:
    """Cross-entropy plus ``ntl_weight`` · Number Token Loss, the paper's training objective.

    The CE part has ``torch.nn.functional.cross_entropy`` semantics (``label_smoothing``,
    ``ignore_index``); its ``"mean"`` divides the summed CE by ``num_items_in_batch`` if given,
    else by the number of non-ignored positions. The NTL part is normalised as in
    :func:`number_token_loss`, with the denominator override ``num_number_items_in_batch`` when
    ``normalize_by="number_tokens"`` and ``num_items_in_batch`` when ``normalize_by="tokens"``.
    ``reduction="none"`` returns per-position CE + ``ntl_weight`` · NTL, shaped like ``labels``.

    ``fused=True`` dispatches to ``ntl.fused.fused_cross_entropy_with_ntl`` (same arguments,
    same result; validation of the tensors is done there).
    """
    vocab = _check_vocab(vocab)
    check_loss_options(kind, reduction, normalize_by, huber_delta)
    _check_weight("ntl_weight", ntl_weight)
    _check_weight("label_smoothing", label_smoothing, upper=1.0)
    check_num_items("num_items_in_batch", num_items_in_batch)
    check_num_items("num_number_items_in_batch", num_number_items_in_batch)
    if fused:
        check_logits_shape(logits, vocab.vocab_size)  # the fused path only sees token ids
        from ntl.fused import fused_cross_entropy_with_ntl

        # values in the compute dtype, so float64 logits see the vocab's exact float64 values
        token_ids, values, _ = vocab.device_tensors(logits.device, _compute_dtype(logits.dtype))
        return fused_cross_entropy_with_ntl(
            logits,
            labels,
            token_ids,
            values,
            kind=kind,
            ntl_weight=ntl_weight,
            ignore_index=ignore_index,
            reduction=reduction,
            normalize_by=normalize_by,
            num_items_in_batch=num_items_in_batch,
            num_number_items_in_batch=num_number_items_in_batch,
            label_smoothing=label_smoothing,
            huber_delta=huber_delta,
        )
    check_logits_labels(logits, labels, vocab.vocab_size, ignore_index)
    dtype = _compute_dtype(logits.dtype)
    where = _Positions(labels, vocab, ignore_index, dtype)
    flat_logits = logits.reshape(-1, vocab.vocab_size).to(dtype)  # (N, V)
    ce = F.cross_entropy(
        flat_logits,
        labels.reshape(-1).long(),
        ignore_index=ignore_index,
        reduction="none" if reduction == "none" else "sum",
        label_smoothing=label_smoothing,
    )  # (N,) or ()
    ntl = _ntl_per_position(flat_logits, where, kind, huber_delta, None)  # (M,)
    if reduction == "none":
        return ce.reshape(labels.shape) + ntl_weight * _scatter(ntl, where, labels.shape)
    if reduction == "sum":
        return ce + ntl_weight * ntl.sum()
    if normalize_by == "number_tokens":
        ntl_denominator = _denominator(num_number_items_in_batch, where.num_number, dtype)
    else:
        ntl_denominator = _denominator(num_items_in_batch, where.num_valid, dtype)
    ce_denominator = _denominator(num_items_in_batch, where.num_valid, dtype)
    return ce / ce_denominator + ntl_weight * (ntl.sum() / ntl_denominator)


def predict_numbers(logits: Tensor, vocab: NumberVocab) -> Tensor:
    """Expected number value per position, ``Σ_i p_i v_i`` with p the number-token softmax: (...)."""
    vocab = _check_vocab(vocab)
    check_logits(logits, vocab.vocab_size)
    dtype = _compute_dtype(logits.dtype)
    token_ids, values, _ = vocab.device_tensors(logits.device, dtype)
    nt_logits = logits.index_select(-1, token_ids).to(dtype)  # (..., K)
    return torch.softmax(nt_logits, dim=-1) @ values


def gaussian_number_targets(
    labels: Tensor, vocab: NumberVocab, sigma: float, ignore_index: int = -100
) -> Tensor:
    """Gaussian-smoothed soft targets over the K number tokens: (..., K) float32.

    At a position whose label is a number token with value ``y``,
    ``q_j ∝ exp(−(v_j − y)² / (2 sigma²))`` (tokens with equal values share mass equally); rows at
    all other positions are zero. Use as ``target_probs`` of :func:`number_token_loss`, or scatter
    into ``vocab.token_ids`` for a Gaussian label-smoothed cross-entropy.
    """
    vocab = _check_vocab(vocab)
    if isinstance(sigma, bool) or not isinstance(sigma, int | float):
        raise TypeError(f"sigma must be a float, got {type(sigma).__name__}")
    if not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma must be finite and > 0, got {sigma!r}")
    if not isinstance(labels, Tensor) or labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(
            f"labels must be an integer tensor, got {getattr(labels, 'dtype', type(labels))}"
        )
    flat = labels.reshape(-1).long()  # (N,)
    bad = ((flat < 0) | (flat >= vocab.vocab_size)) & (flat != ignore_index)
    if bool(bad.any()):
        raise ValueError(
            f"labels must lie in [0, {vocab.vocab_size}) or equal ignore_index={ignore_index}, "
            f"found {int(flat[bad][0])}"
        )
    where = _Positions(labels, vocab, ignore_index, torch.float32)
    y = where.values.index_select(0, where.k)  # (M,)
    log_q = -(where.values.unsqueeze(0) - y.unsqueeze(1)).square() / (2.0 * sigma * sigma)  # (M, K)
    out = torch.zeros(flat.numel(), len(vocab), device=labels.device)  # (N, K)
    out = out.index_copy(0, where.pos, torch.softmax(log_q, dim=-1))
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
    ) -> None:
        super().__init__()
        self.vocab = _check_vocab(vocab)
        check_loss_options(kind, reduction, normalize_by, huber_delta)
        self.kind, self.ignore_index, self.reduction = kind, ignore_index, reduction
        self.normalize_by, self.huber_delta = normalize_by, huber_delta

    def forward(
        self, logits: Tensor, labels: Tensor, num_items_in_batch: int | Tensor | None = None
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
        )

    def extra_repr(self) -> str:
        return f"kind={self.kind!r}, reduction={self.reduction!r}, normalize_by={self.normalize_by!r}, vocab={self.vocab!r}"


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
    ) -> None:
        super().__init__()
        self.vocab = _check_vocab(vocab)
        check_loss_options(kind, reduction, normalize_by, huber_delta)
        _check_weight("ntl_weight", ntl_weight)
        _check_weight("label_smoothing", label_smoothing, upper=1.0)
        self.kind, self.ntl_weight, self.ignore_index = kind, ntl_weight, ignore_index
        self.reduction, self.normalize_by = reduction, normalize_by
        self.label_smoothing, self.huber_delta, self.fused = label_smoothing, huber_delta, fused

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
        )

    def extra_repr(self) -> str:
        return (
            f"kind={self.kind!r}, ntl_weight={self.ntl_weight}, reduction={self.reduction!r}, "
            f"normalize_by={self.normalize_by!r}, fused={self.fused}, vocab={self.vocab!r}"
        )
