"""Linear + cross-entropy + NTL without materialising the (N, V) logits.

``linear_cross_entropy_with_ntl(hidden, weight, labels, vocab)`` equals
``cross_entropy_with_ntl(hidden @ weight.T + bias, labels, vocab)`` but computes the logits a chunk
of rows at a time (the idea of Liger-Kernel's fused linear CE and Apple's Cut Cross-Entropy):

    for each chunk of rows:  x = h_c @ W.T + b          (n, V), only this chunk exists
                             g = d loss / d x           (fused CE + NTL gradient, see ntl.fused)
                             grad_h[c] = g @ W;  grad_W += g.T @ h_c;  grad_b += g.sum(0)

With ``reduction`` "mean"/"sum" the gradients are accumulated during forward and backward only
scales them by ``grad_output``; with "none" the per-position ``grad_output`` is only known in
backward, so forward computes values and backward runs the chunk loop once more.
Half-precision inputs: logits are formed in the input dtype (as the materialised path does) and
the loss and gradient accumulation run in float32.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from ntl.fused import (
    LabelPlan,
    LossOptions,
    _chunk_bounds,
    ce_rows_from_lse,
    check_options,
    combine_loss,
    compute_dtype,
    default_chunk_rows,
    ntl_value_and_grad,
    plan_labels,
    softmax_ce_grad_,
)
from ntl.vocab import NumberVocab

__all__ = ["linear_cross_entropy_with_ntl"]

# Elements of one chunk of logits: 2**21 float32 = 8 MiB, enough rows for an efficient matmul.
_LINEAR_CHUNK_ELEMENTS = 2**21

Grads = tuple[Tensor | None, Tensor | None, Tensor | None]


def _linear_pass(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    plan: LabelPlan,
    vocab: tuple[Tensor, Tensor],
    opts: LossOptions,
    chunk_rows: int,
    need: tuple[bool, bool, bool],
    row_scale: Tensor | None = None,
) -> tuple[Tensor, Tensor | None, Grads]:
    """One chunked pass over hidden (N, H) and weight (V, H).

    Returns per-row CE (N,), per-number-row NTL (M,) or None, and the gradients of the loss
    (already normalised; rows scaled by ``row_scale`` (N,) if given) for hidden, weight, bias
    where ``need`` asks for them.
    """
    n_rows, vocab_size = hidden.shape[0], weight.shape[0]
    dtype = compute_dtype(hidden.dtype)
    device = hidden.device
    eps = opts.label_smoothing
    token_ids, values = vocab[0].to(device), vocab[1].to(device=device, dtype=dtype)
    any_grad = any(need)
    use_ntl = opts.ntl_weight != 0.0 and plan.number_rows.numel() > 0
    weight_c = weight.to(dtype)  # (V, H), a copy only for half precision
    lse = torch.empty(n_rows, dtype=dtype, device=device)
    label_logit = torch.empty(n_rows, dtype=dtype, device=device)
    logit_sum = torch.empty(n_rows, dtype=dtype, device=device) if eps > 0 else None
    ntl_rows = (
        torch.empty(plan.number_rows.numel(), dtype=dtype, device=device) if use_ntl else None
    )
    grad_h = torch.empty(hidden.shape, dtype=dtype, device=device) if need[0] else None
    grad_w = torch.zeros(weight.shape, dtype=dtype, device=device) if need[1] else None
    grad_b = torch.zeros(vocab_size, dtype=dtype, device=device) if need[2] else None
    scratch = (
        torch.empty((min(chunk_rows, n_rows), vocab_size), dtype=dtype, device=device)
        if any_grad
        else None
    )
    starts = list(range(0, n_rows, chunk_rows))
    bounds = _chunk_bounds(plan.number_rows, [*starts, n_rows]) if use_ntl else []
    weight_t = weight.detach().t()  # (H, V)
    for c, r0 in enumerate(starts):
        r1 = min(r0 + chunk_rows, n_rows)
        h = hidden[r0:r1].detach()  # (n, H)
        x = h @ weight_t if bias is None else torch.addmm(bias.detach(), h, weight_t)
        x = x.to(dtype)  # (n, V)
        safe = plan.safe_labels[r0:r1]
        label_logit[r0:r1] = x.gather(1, safe.unsqueeze(1)).squeeze(1)
        if logit_sum is not None:
            torch.sum(x, dim=1, out=logit_sum[r0:r1])
        ntl_grad: Tensor | None = None
        if ntl_rows is not None and bounds[c + 1] > bounds[c]:
            a, b = bounds[c], bounds[c + 1]
            local = (plan.number_rows[a:b] - r0).unsqueeze(1)  # (m, 1)
            number_logits = x[local, token_ids.unsqueeze(0)]  # (m, K)
            ntl_rows[a:b], ntl_grad = ntl_value_and_grad(
                number_logits, plan.targets[a:b], values, opts.kind, opts.huber_delta
            )
        if scratch is None:
            torch.logsumexp(x, dim=1, out=lse[r0:r1])
            continue
        g = scratch[: r1 - r0]  # (n, V)
        lse[r0:r1] = softmax_ce_grad_(x, g, safe, plan.ce_weight[r0:r1], eps)
        if ntl_grad is not None:
            g.index_put_(
                (local, token_ids.unsqueeze(0)), ntl_grad.mul_(plan.ntl_scale), accumulate=True
            )
        if row_scale is not None:
            g.mul_(row_scale[r0:r1].unsqueeze(1))
        if grad_h is not None:
            torch.mm(g, weight_c, out=grad_h[r0:r1])
        if grad_w is not None:
            grad_w.addmm_(g.t(), h.to(dtype))
        if grad_b is not None:
            grad_b += g.sum(0)
    ce_rows = ce_rows_from_lse(lse, label_logit, logit_sum, eps, vocab_size)
    return ce_rows, ntl_rows, (grad_h, grad_w, grad_b)


class _LinearCrossEntropyNTL(torch.autograd.Function):
    """Autograd wrapper: gradients accumulated in forward ("mean"/"sum") or in backward ("none")."""

    @staticmethod
    def forward(
        ctx: Any,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        plan: LabelPlan,
        vocab: tuple[Tensor, Tensor],
        opts: LossOptions,
        chunk_rows: int,
        need: tuple[bool, bool, bool],
    ) -> Tensor:
        flat = hidden.reshape(-1, hidden.shape[-1])  # (N, H)
        eager = opts.reduction != "none"
        ce_rows, ntl_rows, grads = _linear_pass(
            flat, weight, bias, plan, vocab, opts, chunk_rows, need if eager else (False,) * 3
        )
        ctx.save_for_backward(hidden, weight, bias)
        ctx.grads = grads if eager else None
        ctx.args = (plan, vocab, opts, chunk_rows, need)
        return combine_loss(ce_rows, ntl_rows, plan, opts, hidden.shape[:-1])

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        if torch.is_grad_enabled():
            raise RuntimeError(
                "linear_cross_entropy_with_ntl does not support double backward (create_graph=True); "
                "materialise the logits and use cross_entropy_with_ntl(..., fused=False) instead"
            )
        hidden, weight, bias = ctx.saved_tensors
        plan, vocab, opts, chunk_rows, need = ctx.args
        grads: Grads | None = ctx.grads
        ctx.grads = None  # hand the buffers over; a second backward recomputes them
        scale: Tensor | None = None
        if opts.reduction == "none":
            scale = grad_output.reshape(-1).to(compute_dtype(hidden.dtype))
            grads = None
        if grads is None:
            flat = hidden.reshape(-1, hidden.shape[-1])
            grads = _linear_pass(
                flat, weight, bias, plan, vocab, opts, chunk_rows, need, row_scale=scale
            )[2]
        grad_h, grad_w, grad_b = grads
        if scale is None and not bool(grad_output == 1):
            for grad in grads:
                if grad is not None:
                    grad.mul_(grad_output)
        return (
            None if grad_h is None else grad_h.reshape(hidden.shape).to(hidden.dtype),
            None if grad_w is None else grad_w.to(weight.dtype),
            None if grad_b is None else grad_b.to(bias.dtype),
            None,
            None,
            None,
            None,
            None,
        )


def _check_linear_inputs(
    hidden: object,
    weight: object,
    bias: object,
    labels: Tensor,
    vocab: NumberVocab,
    ignore_index: int,
) -> None:
    if not isinstance(vocab, NumberVocab):
        raise TypeError(f"vocab must be a ntl.NumberVocab, got {type(vocab).__name__}")
    for name, value in (("hidden", hidden), ("weight", weight)):
        if not isinstance(value, Tensor) or not value.is_floating_point():
            raise TypeError(f"{name} must be a floating torch.Tensor, got {type(value).__name__}")
    assert isinstance(hidden, Tensor) and isinstance(weight, Tensor)
    if hidden.dim() < 2:
        raise ValueError(
            f"hidden must have shape (..., H) with at least 2 dims, got {tuple(hidden.shape)}"
        )
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"weight must have shape (V, H) = (V, {hidden.shape[-1]}), got {tuple(weight.shape)}"
        )
    if weight.shape[0] != vocab.vocab_size:
        raise ValueError(
            f"weight has {weight.shape[0]} rows (shape {tuple(weight.shape)}) but vocab.vocab_size "
            f"is {vocab.vocab_size}"
        )
    if weight.dtype != hidden.dtype or weight.device != hidden.device:
        raise TypeError(
            f"weight ({weight.dtype}, {weight.device}) must match hidden ({hidden.dtype}, {hidden.device})"
        )
    if bias is not None:
        if not isinstance(bias, Tensor) or bias.dtype != hidden.dtype:
            raise TypeError(
                f"bias must be a {hidden.dtype} tensor, got {getattr(bias, 'dtype', bias)}"
            )
        if tuple(bias.shape) != (vocab.vocab_size,):
            raise ValueError(f"bias must have shape ({vocab.vocab_size},), got {tuple(bias.shape)}")
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    if tuple(labels.shape) != tuple(hidden.shape[:-1]):
        raise ValueError(
            f"labels must have shape hidden.shape[:-1] = {tuple(hidden.shape[:-1])}, "
            f"got labels shape {tuple(labels.shape)}"
        )
    if labels.device != hidden.device:
        raise ValueError(f"labels are on {labels.device} but hidden is on {hidden.device}")
    bad = ((labels < 0) | (labels >= vocab.vocab_size)) & (labels != ignore_index)
    if bool(bad.any()):
        index = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"labels must lie in [0, {vocab.vocab_size}) or equal ignore_index={ignore_index}, "
            f"found {int(labels[index])} at index {index}"
        )
    for name, value in (("hidden", hidden), ("weight", weight), ("bias", bias)):
        if value is None:
            continue
        # one reduction: a non-finite entry makes the sum non-finite (overflow is re-checked)
        if not bool(torch.isfinite(value.detach().sum(dtype=compute_dtype(value.dtype)))):
            non_finite = (~torch.isfinite(value.detach())).nonzero()
            if non_finite.numel():  # else only the sum overflowed
                where = tuple(int(i) for i in non_finite[0])
                raise ValueError(
                    f"{name} must be finite, found {value[where].item()} at index {where}"
                )


def linear_cross_entropy_with_ntl(
    hidden: Tensor,
    weight: Tensor,
    labels: Tensor,
    vocab: NumberVocab,
    *,
    bias: Tensor | None = None,
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
    """CE + ntl_weight * NTL of the logits ``hidden @ weight.T + bias``, never materialised.

    Args:
        hidden: (..., H) last hidden states. weight: (V, H) LM head. bias: optional (V,).
        labels: (...) integer labels in [0, V) or ``ignore_index``.
        vocab: the number tokens (``vocab.vocab_size == V``).
        chunk_size: rows per chunk (default: about 8 MiB of float32 logits per chunk).
        The other keywords are those of :func:`ntl.cross_entropy_with_ntl`.
    Returns:
        A scalar for ``reduction`` "mean"/"sum", else per-position losses of shape ``labels.shape``.
    """
    _check_linear_inputs(hidden, weight, bias, labels, vocab, ignore_index)
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
    vocab_size = vocab.vocab_size
    dtype = compute_dtype(hidden.dtype)
    token_ids, values, index_of = vocab.device_tensors(labels.device, dtype)
    plan = plan_labels(
        labels.reshape(-1),
        index_of,
        values,
        opts,
        num_items_in_batch,
        num_number_items_in_batch,
        dtype,
    )
    rows = (
        chunk_size
        if chunk_size is not None
        else default_chunk_rows(vocab_size, hidden.device, _LINEAR_CHUNK_ELEMENTS)
    )
    pair = (token_ids, values)
    grad_on = torch.is_grad_enabled()
    need = (
        grad_on and hidden.requires_grad,
        grad_on and weight.requires_grad,
        grad_on and bias is not None and bias.requires_grad,
    )
    if any(need):
        return _LinearCrossEntropyNTL.apply(hidden, weight, bias, plan, pair, opts, rows, need)
    flat = hidden.detach().reshape(-1, hidden.shape[-1])
    ce_rows, ntl_rows, _ = _linear_pass(flat, weight, bias, plan, pair, opts, rows, (False,) * 3)
    return combine_loss(ce_rows, ntl_rows, plan, opts, labels.shape)
