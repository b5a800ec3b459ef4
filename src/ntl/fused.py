"""Fused cross-entropy + Number Token Loss: one pass over the logits, gradient written in forward.

The reference path (``fused=False``) lets autograd differentiate ``F.cross_entropy`` plus the
NTL expression; its backward materialises ``log_softmax`` and a dense (N, V) zero gradient for the
number-token indexing. This module computes the same loss and gradient in one chunked pass:

* per chunk of rows (small enough to stay in cache): ``softmax`` straight into the gradient
  buffer, the log-sum-exp from the row max and the largest probability, the one-hot (and label
  smoothing) subtraction, the per-row normalisation;
* NTL only touches the K number-token columns of the M rows whose label is a number token, as a
  few ops on a (K, M) block whatever N and V: one ``take`` of those logits, their softmax, the
  analytic gradient of the chosen ``kind`` and one ``index_add_`` into the gradient buffer. The
  index tensors (slot of each token id, WAS distances) are built once per vocabulary
  (:class:`ntl.vocab.NumberTable`);
* backward only multiplies the prepared buffer by ``grad_output`` (nothing when it is 1).

Nothing of size (N, V) is allocated beyond the one gradient buffer (none at all when the logits
do not require grad). Half-precision logits are computed in float32 chunk by chunk; the gradient is
returned in the logits dtype. Double backward is not supported and raises ``RuntimeError``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from ntl._validate import (
    check_logits_labels,
    check_logits_shape,
    check_number_tokens,
    check_options,
    check_softmax_rows,
    compute_dtype,
    mean_denominator,
)
from ntl.vocab import NumberTable, number_table, squash_distances

__all__ = [
    "LabelPlan",
    "LossOptions",
    "ce_rows_from_lse",
    "chunk_bounds",
    "combine_loss",
    "default_chunk_rows",
    "fused_cross_entropy_with_ntl",
    "fused_loss",
    "make_options",
    "ntl_columns",
    "ntl_total",
    "number_positions",
    "number_softmax",
    "plan_labels",
    "softmax_ce_grad_",
    "softmax_ce_grad_inplace_",
    "squash_distances",
]

# Logit entries per chunk and CPU thread: 2**22 float32 = 16 MiB. Measured on a 2-core EPYC
# (V = 32000, 2048 rows): 16..2048-row chunks cost the same on one thread (each softmax row
# already fits in L2), while every extra chunk costs one parallel region per op on more threads.
# On CUDA a chunk only bounds the float32 scratch of half-precision logits.
_CHUNK_ELEMENTS = 2**22
_CUDA_CHUNK_ELEMENTS = 2**26


def default_chunk_rows(
    vocab_size: int, device: torch.device, elements: int = _CHUNK_ELEMENTS
) -> int:
    """Rows per chunk: about ``elements`` logits per CPU thread (``_CUDA_CHUNK_ELEMENTS`` on CUDA)."""
    if device.type == "cuda":
        elements = max(elements, _CUDA_CHUNK_ELEMENTS)
    else:
        elements *= max(1, torch.get_num_threads())
    return max(1, elements // max(1, vocab_size))


@dataclass(frozen=True)
class LossOptions:
    """The keyword options shared by the fused and the linear paths (already validated)."""

    kind: str
    ntl_weight: float
    ignore_index: int
    reduction: str
    normalize_by: str
    label_smoothing: float
    huber_delta: float
    squash_factor: float | None = None


def make_options(
    kind: str,
    ntl_weight: float,
    ignore_index: int,
    reduction: str,
    normalize_by: str,
    num_items_in_batch: int | Tensor | None,
    num_number_items_in_batch: int | Tensor | None,
    label_smoothing: float,
    huber_delta: float,
    chunk_size: int | None,
    squash_factor: float | None,
) -> LossOptions:
    """Check the keyword options of a CE + NTL call (:func:`ntl._validate.check_options`)."""
    check_options(
        kind, reduction, normalize_by, huber_delta, ntl_weight, label_smoothing,
        num_items_in_batch, num_number_items_in_batch, chunk_size, squash_factor,
    )  # fmt: skip
    return LossOptions(
        kind,
        float(ntl_weight),
        ignore_index,
        reduction,
        normalize_by,
        float(label_smoothing),
        float(huber_delta),
        None if squash_factor is None else float(squash_factor),
    )


@dataclass
class LabelPlan:
    """Everything derived from the labels alone, computed once per call (N = flattened rows).

    ``number_rows`` are sorted row indices whose label is a number token, ``number_slots`` their
    labels' slots in the :class:`ntl.vocab.NumberTable`; ``ce_weight`` and ``ntl_scale`` are the
    factors of the gradient (normalisation folded in).
    """

    safe_labels: Tensor  # (N,) long, ignored rows replaced by a non-number token id
    valid: Tensor  # (N,) bool
    number_rows: Tensor  # (M,) long, sorted
    number_slots: Tensor  # (M,) long, 1 + index into the K number tokens
    ce_weight: Tensor  # (N,) compute dtype: 0 for ignored rows, else 1 or 1 / CE denominator
    ce_scale: float  # 1 or 1 / CE denominator
    ntl_scale: float  # ntl_weight or ntl_weight / NTL denominator


def plan_labels(
    labels: Tensor,
    table: NumberTable | None,
    opts: LossOptions,
    num_items_in_batch: int | Tensor | None,
    num_number_items_in_batch: int | Tensor | None,
    dtype: torch.dtype,
) -> LabelPlan:
    """Masks, number-label rows and the normalisation of one call.

    Args:
        labels: (N,) integer labels; table: the number tokens, or None when the NTL is off
            (``ntl_weight == 0``: no number rows).
    """
    labels = labels.long()
    valid = labels != opts.ignore_index  # (N,)
    # an ignored row's stand-in label is not a number token, so it needs no mask below
    plain = table.plain_id if table is not None and table.plain_id is not None else 0
    safe = labels.masked_fill(~valid, plain)  # (N,)
    if table is None or opts.ntl_weight == 0.0:
        rows = slots = torch.empty(0, dtype=torch.long, device=labels.device)
    else:
        slot = table.slot_of.index_select(0, safe)  # (N,), 0 for non-number labels
        if table.plain_id is None:  # every token id is a number token
            slot = slot.masked_fill(~valid, 0)
        rows = torch.nonzero(slot).reshape(-1)  # (M,) sorted
        slots = slot.index_select(0, rows)
    ce_weight = valid.to(dtype)
    ce_scale, ntl_scale = 1.0, opts.ntl_weight
    if opts.reduction == "mean":
        num_valid = int(ce_weight.sum())
        ce_scale = 1.0 / mean_denominator("num_items_in_batch", num_items_in_batch, num_valid)
        if opts.normalize_by == "number_tokens":
            ntl_scale /= mean_denominator(
                "num_number_items_in_batch", num_number_items_in_batch, rows.numel()
            )
        else:
            ntl_scale *= ce_scale
        ce_weight.mul_(ce_scale)
    return LabelPlan(safe, valid, rows, slots, ce_weight, ce_scale, ntl_scale)


def number_softmax(number_logits: Tensor, name: str) -> Tensor:
    """Softmax of each row of ``number_logits`` (M, K), after checking its maximum is finite.

    Differentiable (the reference path's autograd uses it). Computed as the softmax over dim 0
    of the (K, M) transpose, the layout of :func:`ntl_columns`, so that the paths' probabilities
    agree to the bit (torch's CPU softmax over a short last dim, K ~ 10, is ~5x slower than
    over the first). ``ValueError`` naming ``name`` for a row with NaN, +inf or only -inf.
    """
    row_max = number_logits.detach().amax(dim=-1)  # (M,); NaN propagates
    if not math.isfinite(float(row_max.sum())):
        check_softmax_rows(number_logits, name)  # raises, naming the first bad row
    return torch.softmax(number_logits.transpose(-1, -2).contiguous(), dim=-2).transpose(-1, -2)


def number_positions(token_ids: Tensor, rows: Tensor, vocab_size: int) -> Tensor:
    """(K, M) flat positions ``row * V + token_id`` of the number-token logits of ``rows`` (M,)."""
    return torch.add(token_ids.unsqueeze(1), rows, alpha=vocab_size)


def ntl_columns(
    number_logits: Tensor, slots: Tensor, table: NumberTable, kind: str, huber_delta: float
) -> tuple[Tensor, Tensor]:
    """NTL of each number row and its gradient wrt the number logits, in (K, M) layout.

    Args:
        number_logits: (K, M) the K number-token logits of M number-label rows, one column per
            row (compute dtype; the layout makes the softmax and the reductions over K run along
            contiguous rows). ``slots`` (M,): the labels' slots in ``table``.
        table: the vocabulary's :class:`ntl.vocab.NumberTable` (its WAS distances are already
            squashed if ``squash_factor`` was asked for).
    Returns:
        loss (M,) and d loss / d number_logits (K, M). A column whose softmax is undefined
        yields NaN: callers check the loss (:func:`ntl_total`).
    """
    probs = torch.softmax(number_logits, dim=0)  # (K, M)
    if kind == "was":
        weighted = table.slot_dist.index_select(1, slots).mul_(probs)  # p_k d_k, (K, M)
        loss = weighted.sum(0)  # (M,)
        # d/dz_k sum_i p_i d_i = p_k (d_k - loss)
        return loss, weighted.addcmul_(probs, loss, value=-1.0)  # in place: one buffer less
    # centred[s] = v_s - pred = sum_j p_j (v_s - v_j): exact value differences weighted by p,
    # free of the cancellation of v_s - pred (its rounding is amplified by |v| / |resid|)
    centred = torch.mm(table.slot_diff, probs)  # (K + 1, M), row 0 unused
    resid = centred.gather(0, slots.unsqueeze(0)).squeeze(0).neg_()  # pred - y, (M,)
    if kind == "mse":
        loss, dloss = resid.square(), 2.0 * resid
    elif kind == "mae":
        loss, dloss = resid.abs(), resid.sign()
    elif kind == "huber":
        small = resid.abs() < huber_delta
        loss = torch.where(
            small, 0.5 * resid.square(), huber_delta * (resid.abs() - 0.5 * huber_delta)
        )
        dloss = resid.clamp(-huber_delta, huber_delta)
    else:
        raise ValueError(f"unknown NTL kind {kind!r}")
    # d pred / d z_k = p_k (v_k - pred)
    grad = centred[1:].mul_(probs).mul_(dloss)
    return loss, grad


def ntl_total(
    ntl_rows: Tensor,
    number_logits: Tensor,
    name: str = "logits at the number tokens of a number label",
) -> Tensor:
    """The sum of ``ntl_rows`` (M,), after checking it: one host sync for the whole block.

    A non-finite sum sends ``number_logits`` (K, M) through :func:`check_softmax_rows`, which
    raises ``ValueError`` naming ``name`` for a column with NaN, +inf or only -inf (an
    undefined softmax); a sum that merely overflowed is returned as it is.
    """
    total = ntl_rows.sum()
    if not math.isfinite(float(total)):
        check_softmax_rows(number_logits.t(), name)
    return total


def softmax_ce_grad_(
    x: Tensor, out: Tensor, safe_labels: Tensor, ce_weight: Tensor, label_smoothing: float
) -> Tensor:
    """Write the CE gradient of a chunk into ``out`` and return the row log-sum-exp.

    Args:
        x: (n, V) logits in the compute dtype.
        out: (n, V) buffer in the compute dtype (may not alias ``x``).
        safe_labels: (n,) labels with ignored rows mapped to any valid id.
        ce_weight: (n,) per-row factor, 0 on ignored rows.
    Returns:
        lse (n,); ``out`` holds ce_weight * (softmax(x) - (1 - eps) onehot - eps / V).
    """
    torch.softmax(x, dim=1, out=out)
    # softmax = exp(x - max) / s, so its largest entry is exactly 1 / s: lse = max + log s.
    lse = x.amax(dim=1).sub_(out.amax(dim=1).log_())  # (n,)
    weight = ce_weight.unsqueeze(1)  # (n, 1)
    out.mul_(weight)
    out.scatter_add_(1, safe_labels.unsqueeze(1), weight * -(1.0 - label_smoothing))
    if label_smoothing > 0.0:
        out.sub_(weight * (label_smoothing / x.shape[1]))
    return lse


def softmax_ce_grad_inplace_(
    x: Tensor, safe_labels: Tensor, ce_weight: Tensor, label_smoothing: float
) -> Tensor:
    """:func:`softmax_ce_grad_` overwriting ``x`` (n, V) with the gradient (one buffer, not two).

    Read everything else needed from ``x`` (label logits, sums, number-token logits) first.
    """
    row_max = x.amax(dim=1, keepdim=True)  # (n, 1), finite: rows were checked
    probs = x.sub_(row_max).exp_()  # unnormalised
    total = probs.sum(dim=1, keepdim=True)  # (n, 1)
    weight = ce_weight.unsqueeze(1)  # (n, 1)
    probs.mul_(weight / total)
    probs.scatter_add_(1, safe_labels.unsqueeze(1), weight * -(1.0 - label_smoothing))
    if label_smoothing > 0.0:
        probs.sub_(weight * (label_smoothing / x.shape[1]))
    return (row_max + total.log()).squeeze(1)


def ce_rows_from_lse(
    lse: Tensor,
    label_logit: Tensor,
    logit_sum: Tensor | None,
    label_smoothing: float,
    vocab_size: int,
) -> Tensor:
    """Per-row CE: lse - (1 - eps) z_y - eps / V * sum_j z_j (torch's label smoothing)."""
    ce = lse - (1.0 - label_smoothing) * label_logit
    if logit_sum is not None:
        ce = ce - (label_smoothing / vocab_size) * logit_sum
    return ce


def combine_loss(
    ce_rows: Tensor,
    ntl_rows: Tensor | None,
    ntl_sum: Tensor | None,
    plan: LabelPlan,
    opts: LossOptions,
    shape: torch.Size,
) -> Tensor:
    """Reduce per-row CE (N,) and per-number-row NTL (M,) (sum ``ntl_sum``) into the loss."""
    if opts.reduction == "none":
        out = ce_rows.masked_fill(~plan.valid, 0.0)
        if ntl_rows is not None and ntl_rows.numel() > 0:
            out.index_add_(0, plan.number_rows, ntl_rows, alpha=opts.ntl_weight)
        return out.reshape(shape)
    # ignored rows have weight 0 (and may hold inf where their stand-in label's logit is -inf)
    total = torch.dot(ce_rows.masked_fill(~plan.valid, 0.0), plan.ce_weight)
    if ntl_sum is not None:
        total = torch.add(total, ntl_sum, alpha=plan.ntl_scale)
    return total


def chunk_bounds(rows: Tensor, starts: list[int]) -> list[int]:
    """For each chunk start, the first index into the sorted ``rows`` at or after it."""
    if rows.numel() == 0:
        return [0] * len(starts)
    if len(starts) == 2:  # one chunk
        return [0, rows.numel()]
    at = torch.tensor(starts, dtype=rows.dtype, device=rows.device)
    return [int(b) for b in torch.searchsorted(rows, at).tolist()]


def _fused_pass(
    logits: Tensor,
    plan: LabelPlan,
    table: NumberTable | None,
    opts: LossOptions,
    chunk_rows: int,
    need_grad: bool,
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """Loss pieces and (optionally) the gradient buffer for flattened ``logits`` (N, V).

    Returns per-row CE (N,), per-number-row NTL (M,) and its checked sum (or None, None),
    gradient (N, V) or None.
    """
    n_rows, vocab = logits.shape
    dtype = compute_dtype(logits.dtype)
    half = dtype != logits.dtype
    eps = opts.label_smoothing
    source = logits.detach()
    ntl_rows = ntl_sum = ntl_grad = at = None
    if table is not None and opts.ntl_weight != 0.0 and plan.number_rows.numel() > 0:
        at = number_positions(table.token_ids, plan.number_rows, vocab)  # (K, M)
        number_logits = torch.take(source, at)  # (K, M)
        if half:
            number_logits = number_logits.to(dtype)
        ntl_rows, ntl_grad = ntl_columns(
            number_logits, plan.number_slots, table, opts.kind, opts.huber_delta
        )
        ntl_sum = ntl_total(ntl_rows, number_logits)
    label_logit = source.gather(1, plan.safe_labels.unsqueeze(1)).squeeze(1)
    if half:
        label_logit = label_logit.to(dtype)
    lse = torch.empty(n_rows, dtype=dtype, device=logits.device)
    logit_sum = torch.empty(n_rows, dtype=dtype, device=logits.device) if eps > 0 else None
    grad = torch.empty_like(logits, memory_format=torch.contiguous_format) if need_grad else None
    scratch = (
        torch.empty((min(chunk_rows, n_rows), vocab), dtype=dtype, device=logits.device)
        if need_grad and half
        else None
    )
    starts = list(range(0, n_rows, chunk_rows))
    # half precision adds the NTL gradient per chunk, before rounding; else once, after the loop
    bounds = (
        chunk_bounds(plan.number_rows, [*starts, n_rows])
        if ntl_grad is not None and scratch is not None
        else []
    )
    for c, r0 in enumerate(starts):
        r1 = min(r0 + chunk_rows, n_rows)
        x = source[r0:r1].to(dtype)  # (n, V), a view unless half precision
        if logit_sum is not None:
            torch.sum(x, dim=1, out=logit_sum[r0:r1])
        if grad is None:
            torch.logsumexp(x, dim=1, out=lse[r0:r1])
            continue
        work = grad[r0:r1] if scratch is None else scratch[: r1 - r0]
        lse[r0:r1] = softmax_ce_grad_(x, work, plan.safe_labels[r0:r1], plan.ce_weight[r0:r1], eps)
        if bounds and at is not None and ntl_grad is not None and bounds[c + 1] > bounds[c]:
            a, b = bounds[c], bounds[c + 1]
            where = at[:, a:b] - r0 * vocab  # (K, m) in this chunk
            part = ntl_grad[:, a:b].reshape(-1)
            work.view(-1).index_add_(0, where.reshape(-1), part, alpha=plan.ntl_scale)
        if scratch is not None:
            grad[r0:r1].copy_(work)
    if grad is not None and scratch is None and at is not None and ntl_grad is not None:
        grad.view(-1).index_add_(0, at.view(-1), ntl_grad.view(-1), alpha=plan.ntl_scale)
    ce_rows = ce_rows_from_lse(lse, label_logit, logit_sum, eps, vocab)
    return ce_rows, ntl_rows, ntl_sum, grad


class _FusedCrossEntropyNTL(torch.autograd.Function):
    """Autograd wrapper: the gradient is prepared in forward and scaled in backward."""

    @staticmethod
    def forward(
        ctx: Any,
        logits: Tensor,
        plan: LabelPlan,
        table: NumberTable | None,
        opts: LossOptions,
        chunk_rows: int,
    ) -> Tensor:
        flat = logits.reshape(-1, logits.shape[-1])  # (N, V)
        ce_rows, ntl_rows, ntl_sum, grad = _fused_pass(flat, plan, table, opts, chunk_rows, True)
        ctx.save_for_backward(logits)
        ctx.grad_buffer = grad
        ctx.args = (plan, table, opts, chunk_rows)
        return combine_loss(ce_rows, ntl_rows, ntl_sum, plan, opts, logits.shape[:-1])

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        if torch.is_grad_enabled():
            raise RuntimeError(
                "the fused cross-entropy + NTL does not support double backward (create_graph=True); "
                "use the reference path (fused=False) for higher-order gradients"
            )
        (logits,) = ctx.saved_tensors
        grad: Tensor | None = ctx.grad_buffer
        ctx.grad_buffer = None  # hand the buffer over: autograd may keep it as .grad without a copy
        if grad is None:  # a second backward through a retained graph: prepare the gradient again
            flat = logits.detach().reshape(-1, logits.shape[-1])
            plan, table, opts, chunk_rows = ctx.args
            grad = _fused_pass(flat, plan, table, opts, chunk_rows, True)[3]
            assert grad is not None
        if ctx.args[2].reduction == "none":
            grad.mul_(grad_output.reshape(-1, 1))
        elif not bool(grad_output == 1):
            grad.mul_(grad_output)
        return grad.view(logits.shape), None, None, None, None


def fused_cross_entropy_with_ntl(
    logits: Tensor,
    labels: Tensor,
    token_ids: Tensor,
    values: Tensor,
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
    chunk_size: int | None = None,
    squash_factor: float | None = None,
) -> Tensor:
    """CE + ntl_weight * NTL in one chunked pass; same values and gradients as the reference path.

    Args:
        logits: (..., V) floating logits; half precision is computed in float32. ``-inf``
            entries (masked tokens) are allowed; NaN, +inf and all--inf softmax rows are not.
        labels: (...) integer labels in [0, V) or ``ignore_index``.
        token_ids: (K,) unique ids of the number tokens; values: (K,) their finite values.
        chunk_size: rows per chunk (default: :func:`default_chunk_rows`, about 2**22 float32
            logits = 16 MiB per CPU thread, 2**26 on CUDA).
        squash_factor: ntloss's distance squashing for ``kind="was"`` (off by default).
        The other keywords are those of :func:`ntl.cross_entropy_with_ntl`.
    Returns:
        A scalar for ``reduction`` "mean"/"sum", else per-position losses of shape ``labels.shape``.
    """
    check_logits_shape(logits, None)
    check_number_tokens(token_ids, values, logits.shape[-1])
    opts = make_options(
        kind, ntl_weight, ignore_index, reduction, normalize_by, num_items_in_batch,
        num_number_items_in_batch, label_smoothing, huber_delta, chunk_size, squash_factor,
    )  # fmt: skip
    dtype = compute_dtype(logits.dtype)
    table = (
        number_table(token_ids, values, logits.shape[-1], logits.device, dtype, opts.squash_factor)
        if opts.ntl_weight != 0
        else None
    )
    return fused_loss(
        logits, labels, table, opts, num_items_in_batch, num_number_items_in_batch, chunk_size
    )


def fused_loss(
    logits: Tensor,
    labels: Tensor,
    table: NumberTable | None,
    opts: LossOptions,
    num_items_in_batch: int | Tensor | None,
    num_number_items_in_batch: int | Tensor | None,
    chunk_size: int | None,
) -> Tensor:
    """:func:`fused_cross_entropy_with_ntl` for number tokens and options already checked.

    ``table`` holds the number tokens (None when the NTL is off); ``ntl.cross_entropy_with_ntl``
    passes its vocabulary's cached table (:meth:`ntl.vocab.NumberVocab.number_table`), so that a
    call does not check and index the same vocabulary again. ``logits`` and ``labels`` are
    checked here.
    """
    check_logits_labels(logits, labels, logits.shape[-1], opts.ignore_index)
    vocab = logits.shape[-1]
    dtype = compute_dtype(logits.dtype)
    plan = plan_labels(
        labels.reshape(-1),
        table if opts.ntl_weight != 0 else None,
        opts,
        num_items_in_batch,
        num_number_items_in_batch,
        dtype,
    )
    rows = chunk_size if chunk_size is not None else default_chunk_rows(vocab, logits.device)
    if logits.requires_grad and torch.is_grad_enabled():
        return _FusedCrossEntropyNTL.apply(logits, plan, table, opts, rows)
    flat = logits.detach().reshape(-1, vocab)
    ce_rows, ntl_rows, ntl_sum, _ = _fused_pass(flat, plan, table, opts, rows, False)
    return combine_loss(ce_rows, ntl_rows, ntl_sum, plan, opts, labels.shape)
