"""Fused cross-entropy + Number Token Loss: one pass over the logits, gradient written in forward.

The reference path (``fused=False``) lets autograd differentiate ``F.cross_entropy`` plus the
NTL expression; its backward materialises ``log_softmax`` and a dense (N, V) zero gradient for the
number-token indexing. This module computes the same loss and gradient in one chunked pass:

* per chunk of rows (small enough to stay in cache): ``softmax`` straight into the gradient
  buffer, the log-sum-exp from the row max and the largest probability, the one-hot (and label
  smoothing) subtraction, the per-row normalisation;
* NTL only touches the K number-token columns of the rows whose label is a number token: gather
  (M, K) logits, softmax, analytic gradient of the chosen ``kind``, ``index_put_`` back;
* backward only multiplies the prepared buffer by ``grad_output`` (nothing when it is 1).

Nothing of size (N, V) is allocated beyond the one gradient buffer (none at all when the logits
do not require grad). Half-precision logits are computed in float32 chunk by chunk; the gradient is
returned in the logits dtype. Double backward is not supported and raises ``RuntimeError``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ntl._validate import check_loss_options, check_num_items

__all__ = ["fused_cross_entropy_with_ntl"]

# Elements of one chunk of rows (float32): 2**19 * 4 bytes = 2 MiB, about one core's L2 cache.
_CHUNK_ELEMENTS = 2**19


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the loss is computed in: float32 for half precision, else the input dtype."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def default_chunk_rows(vocab_size: int, elements: int = _CHUNK_ELEMENTS) -> int:
    """Rows per chunk so that one chunk of logits holds about ``elements`` entries."""
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


@dataclass
class LabelPlan:
    """Everything derived from the labels alone, computed once per call (N = flattened rows).

    ``number_rows`` are sorted row indices whose label is a number token; ``ce_weight`` and
    ``ntl_weight`` are the per-row factors of the gradient (normalisation folded in).
    """

    safe_labels: Tensor  # (N,) long, ignored rows replaced by 0
    valid: Tensor  # (N,) bool
    number_rows: Tensor  # (M,) long, sorted
    number_cols: Tensor  # (M,) long, index into the K number tokens
    targets: Tensor  # (M,) compute dtype, the value y of each number label
    ce_weight: Tensor  # (N,) compute dtype: 0 for ignored rows, else 1 or 1 / CE denominator
    ntl_scale: Tensor  # () compute dtype: ntl_weight or ntl_weight / NTL denominator
    ce_scale: Tensor  # () compute dtype: 1 or 1 / CE denominator


def _as_count(value: int | float | Tensor, device: torch.device, dtype: torch.dtype) -> Tensor:
    if isinstance(value, Tensor):
        return value.detach().reshape(()).to(device=device, dtype=dtype)
    return torch.tensor(float(value), device=device, dtype=dtype)


def plan_labels(
    labels: Tensor,
    token_ids: Tensor,
    values: Tensor,
    vocab_size: int,
    opts: LossOptions,
    num_items_in_batch: int | Tensor | None,
    num_number_items_in_batch: int | Tensor | None,
    dtype: torch.dtype,
) -> LabelPlan:
    """Masks, number-token targets and the normalisation of one call; ``labels`` is (N,)."""
    device = labels.device
    labels = labels.long()
    valid = labels != opts.ignore_index  # (N,)
    safe = torch.where(valid, labels, torch.zeros((), dtype=torch.long, device=device))
    index_of = torch.full((vocab_size,), -1, dtype=torch.long, device=device)
    ids = token_ids.to(device=device, dtype=torch.long)
    index_of[ids] = torch.arange(ids.numel(), device=device)
    col = torch.where(valid, index_of[safe], -1)  # (N,)
    rows = torch.nonzero(col >= 0).reshape(-1)  # (M,) sorted
    cols = col[rows]
    targets = values.to(device=device, dtype=dtype)[cols]
    n_valid = valid.sum().to(dtype)
    one = torch.ones((), device=device, dtype=dtype)
    if opts.reduction == "mean":
        ce_den = (
            n_valid if num_items_in_batch is None else _as_count(num_items_in_batch, device, dtype)
        )
        if opts.normalize_by == "number_tokens":
            if num_number_items_in_batch is None:
                ntl_den = torch.tensor(float(rows.numel()), device=device, dtype=dtype)
            else:
                ntl_den = _as_count(num_number_items_in_batch, device, dtype)
        else:
            ntl_den = ce_den
        ce_scale = one / ce_den
        # A batch without number tokens has an NTL sum of exactly 0: keep 0 / 0 out of the graph.
        ntl_scale = (
            opts.ntl_weight / ntl_den.clamp_min(1)
            if rows.numel() == 0
            else opts.ntl_weight / ntl_den
        )
    else:
        ce_scale = one
        ntl_scale = one * opts.ntl_weight
    ce_weight = valid.to(dtype) * ce_scale
    return LabelPlan(safe, valid, rows, cols, targets, ce_weight, ntl_scale, ce_scale)


def ntl_value_and_grad(
    number_logits: Tensor, targets: Tensor, values: Tensor, kind: str, huber_delta: float
) -> tuple[Tensor, Tensor]:
    """NTL per row and its gradient wrt the number logits.

    Args:
        number_logits: (M, K) logits of the number tokens at number-label rows (compute dtype).
        targets: (M,) the target values y.
        values: (K,) the token values v.
    Returns:
        loss (M,) and d loss / d number_logits (M, K).
    """
    probs = torch.softmax(number_logits, dim=-1)  # (M, K)
    if kind == "was":
        dist = (values.unsqueeze(0) - targets.unsqueeze(1)).abs_()  # (M, K)
        loss = (probs * dist).sum(-1)  # (M,)
        # d/dz_k sum_i p_i d_i = p_k (d_k - loss)
        return loss, dist.sub_(loss.unsqueeze(1)).mul_(probs)
    pred = probs @ values  # (M,)
    resid = pred - targets
    if kind == "mse":
        loss, dloss = resid.square(), 2.0 * resid
    elif kind == "mae":
        loss, dloss = resid.abs(), resid.sign()
    else:  # huber
        small = resid.abs() < huber_delta
        loss = torch.where(
            small, 0.5 * resid.square(), huber_delta * (resid.abs() - 0.5 * huber_delta)
        )
        dloss = resid.clamp(-huber_delta, huber_delta)
    # d pred / d z_k = p_k (v_k - pred)
    grad = (values.unsqueeze(0) - pred.unsqueeze(1)).mul_(probs).mul_(dloss.unsqueeze(1))
    return loss, grad


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
    ce_rows: Tensor, ntl_rows: Tensor | None, plan: LabelPlan, opts: LossOptions, shape: torch.Size
) -> Tensor:
    """Reduce per-row CE (N,) and per-number-row NTL (M,) into the requested loss."""
    ce_rows = torch.where(
        plan.valid, ce_rows, torch.zeros((), dtype=ce_rows.dtype, device=ce_rows.device)
    )
    if opts.reduction == "none":
        out = ce_rows.clone()
        if ntl_rows is not None and ntl_rows.numel() > 0:
            out.index_add_(0, plan.number_rows, ntl_rows * opts.ntl_weight)
        return out.reshape(shape)
    total = ce_rows.sum() * plan.ce_scale
    if ntl_rows is not None:
        total = total + ntl_rows.sum() * plan.ntl_scale
    return total


def _chunk_bounds(rows: Tensor, starts: list[int]) -> list[int]:
    """For each chunk start, the first index into the sorted ``rows`` at or after it."""
    if rows.numel() == 0:
        return [0] * len(starts)
    at = torch.tensor(starts, dtype=rows.dtype, device=rows.device)
    return [int(b) for b in torch.searchsorted(rows, at).tolist()]


def _fused_pass(
    logits: Tensor,
    plan: LabelPlan,
    token_ids: Tensor,
    values: Tensor,
    opts: LossOptions,
    chunk_rows: int,
    need_grad: bool,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Loss pieces and (optionally) the gradient buffer for flattened ``logits`` (N, V).

    Returns per-row CE (N,), per-number-row NTL (M,) or None, gradient (N, V) or None.
    """
    n_rows, vocab = logits.shape
    dtype = compute_dtype(logits.dtype)
    half = dtype != logits.dtype
    eps = opts.label_smoothing
    ids = token_ids.to(device=logits.device)
    use_ntl = opts.ntl_weight != 0.0 and plan.number_rows.numel() > 0
    ntl_rows: Tensor | None = None
    ntl_grad: Tensor | None = None
    if use_ntl:
        number_logits = logits.detach()[plan.number_rows.unsqueeze(1), ids.unsqueeze(0)].to(dtype)
        vals = values.to(device=logits.device, dtype=dtype)
        ntl_rows, ntl_grad = ntl_value_and_grad(
            number_logits, plan.targets, vals, opts.kind, opts.huber_delta
        )
        if need_grad:
            ntl_grad.mul_(plan.ntl_scale)
    label_logit = logits.detach().gather(1, plan.safe_labels.unsqueeze(1)).squeeze(1).to(dtype)
    lse = torch.empty(n_rows, dtype=dtype, device=logits.device)
    logit_sum = torch.empty(n_rows, dtype=dtype, device=logits.device) if eps > 0 else None
    grad = torch.empty_like(logits, memory_format=torch.contiguous_format) if need_grad else None
    scratch = (
        torch.empty((min(chunk_rows, n_rows), vocab), dtype=dtype, device=logits.device)
        if need_grad and half
        else None
    )
    starts = list(range(0, n_rows, chunk_rows))
    bounds = _chunk_bounds(plan.number_rows, [*starts, n_rows]) if use_ntl and need_grad else []
    source = logits.detach()
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
        if ntl_grad is not None and bounds[c + 1] > bounds[c]:
            a, b = bounds[c], bounds[c + 1]
            local = (plan.number_rows[a:b] - r0).unsqueeze(1)  # (m, 1)
            work.index_put_((local, ids.unsqueeze(0)), ntl_grad[a:b], accumulate=True)
        if scratch is not None:
            grad[r0:r1].copy_(work)
    ce_rows = ce_rows_from_lse(lse, label_logit, logit_sum, eps, vocab)
    return ce_rows, ntl_rows, grad


class _FusedCrossEntropyNTL(torch.autograd.Function):
    """Autograd wrapper: the gradient is prepared in forward and scaled in backward."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        logits: Tensor,
        plan: LabelPlan,
        token_ids: Tensor,
        values: Tensor,
        opts: LossOptions,
        chunk_rows: int,
    ) -> Tensor:
        flat = logits.reshape(-1, logits.shape[-1])  # (N, V)
        ce_rows, ntl_rows, grad = _fused_pass(flat, plan, token_ids, values, opts, chunk_rows, True)
        ctx.grad_buffer = grad  # type: ignore[attr-defined]
        ctx.reduction = opts.reduction  # type: ignore[attr-defined]
        ctx.logits_shape = logits.shape  # type: ignore[attr-defined]
        return combine_loss(ce_rows, ntl_rows, plan, opts, logits.shape[:-1])

    @staticmethod
    def backward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx, grad_output: Tensor
    ) -> tuple[Tensor | None, ...]:
        if torch.is_grad_enabled():
            raise RuntimeError(
                "the fused cross-entropy + NTL does not support double backward (create_graph=True); "
                "use the reference path (fused=False) for higher-order gradients"
            )
        grad: Tensor | None = ctx.grad_buffer  # type: ignore[attr-defined]
        if grad is None:
            raise RuntimeError(
                "the fused cross-entropy + NTL gradient was already consumed by an earlier backward; "
                "backward twice through it (retain_graph=True) is not supported, use fused=False"
            )
        ctx.grad_buffer = None  # type: ignore[attr-defined]  # free it as soon as autograd is done
        if ctx.reduction == "none":  # type: ignore[attr-defined]
            grad.mul_(grad_output.reshape(-1, 1))
        elif not bool(grad_output == 1):
            grad.mul_(grad_output)
        return grad.view(ctx.logits_shape), None, None, None, None, None  # type: ignore[attr-defined]


def check_tensor_args(
    labels: Tensor, token_ids: Tensor, values: Tensor, expected_shape: torch.Size
) -> None:
    """Cheap shape and dtype checks for direct calls (the public API validates fully)."""
    if not isinstance(labels, Tensor) or labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(
            f"labels must be an integer tensor, got {getattr(labels, 'dtype', type(labels))}"
        )
    if tuple(labels.shape) != tuple(expected_shape):
        raise ValueError(
            f"labels must have shape {tuple(expected_shape)}, got {tuple(labels.shape)}"
        )
    if not isinstance(token_ids, Tensor) or token_ids.dim() != 1 or token_ids.numel() == 0:
        raise ValueError(
            f"token_ids must be a non-empty 1-D tensor, got {getattr(token_ids, 'shape', token_ids)}"
        )
    if not isinstance(values, Tensor) or tuple(values.shape) != tuple(token_ids.shape):
        raise ValueError(
            f"values must have the shape of token_ids {tuple(token_ids.shape)}, got {getattr(values, 'shape', values)}"
        )


def check_options(
    kind: str,
    reduction: str,
    normalize_by: str,
    huber_delta: float,
    ntl_weight: float,
    label_smoothing: float,
    num_items_in_batch: int | Tensor | None,
    num_number_items_in_batch: int | Tensor | None,
    chunk_size: int | None,
) -> None:
    """Option checks shared by the fused and the linear entry points."""
    check_loss_options(kind, reduction, normalize_by, huber_delta)
    check_num_items("num_items_in_batch", num_items_in_batch)
    check_num_items("num_number_items_in_batch", num_number_items_in_batch)
    if (
        isinstance(ntl_weight, bool)
        or not isinstance(ntl_weight, int | float)
        or not ntl_weight == ntl_weight
    ):
        raise TypeError(f"ntl_weight must be a real number, got {ntl_weight!r}")
    if isinstance(label_smoothing, bool) or not isinstance(label_smoothing, int | float):
        raise TypeError(f"label_smoothing must be a float, got {label_smoothing!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"label_smoothing must lie in [0, 1], got {label_smoothing!r}")
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")


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
) -> Tensor:
    """CE + ntl_weight * NTL in one chunked pass; same values and gradients as the reference path.

    Args:
        logits: (..., V) floating logits; half precision is computed in float32.
        labels: (...) integer labels in [0, V) or ``ignore_index``.
        token_ids: (K,) ids of the number tokens; values: (K,) their numeric values.
        chunk_size: rows per chunk (default: about 2 MiB of float32 logits per chunk).
    Returns:
        A scalar for ``reduction`` "mean"/"sum", else per-position losses of shape ``labels.shape``.
    """
    if not isinstance(logits, Tensor) or not logits.is_floating_point() or logits.dim() < 1:
        raise TypeError(
            f"logits must be a floating tensor (..., V), got {getattr(logits, 'dtype', type(logits))}"
        )
    check_tensor_args(labels, token_ids, values, logits.shape[:-1])
    check_options(
        kind, reduction, normalize_by, huber_delta, ntl_weight, label_smoothing,
        num_items_in_batch, num_number_items_in_batch, chunk_size,
    )  # fmt: skip
    opts = LossOptions(
        kind,
        float(ntl_weight),
        ignore_index,
        reduction,
        normalize_by,
        float(label_smoothing),
        float(huber_delta),
    )
    vocab = logits.shape[-1]
    dtype = compute_dtype(logits.dtype)
    plan = plan_labels(
        labels.reshape(-1),
        token_ids,
        values,
        vocab,
        opts,
        num_items_in_batch,
        num_number_items_in_batch,
        dtype,
    )
    rows = chunk_size if chunk_size is not None else default_chunk_rows(vocab)
    if logits.requires_grad and torch.is_grad_enabled():
        return _FusedCrossEntropyNTL.apply(logits, plan, token_ids, values, opts, rows)  # type: ignore[no-any-return]
    flat = logits.detach().reshape(-1, vocab)
    ce_rows, ntl_rows, _ = _fused_pass(flat, plan, token_ids, values, opts, rows, False)
    return combine_loss(ce_rows, ntl_rows, plan, opts, labels.shape)
