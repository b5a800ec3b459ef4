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
Half-precision inputs: the matmuls run in the input dtype, as in the materialised path (the
logits chunk is formed in bf16/fp16, the loss and the logits' gradient in float32 per chunk, and
that gradient is rounded to the input dtype for ``grad_h`` and ``grad_W``). ``grad_W`` is
accumulated over the chunks in the input dtype: no full-size float32 copy of ``W`` or of its
gradient exists (one rounding per chunk, where the materialised path rounds once).
Memory: besides the inputs and the gradients returned, one (n, V) float32 buffer (plus an (n, V)
buffer in the input dtype for half precision), n = :func:`default_linear_chunk_rows` — against
at least three full (N, V) buffers for the materialised path.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ntl._validate import (
    check_linear_inputs,
    check_vocab,
    compute_dtype,
)
from ntl.fused import (
    LabelPlan,
    LossOptions,
    ce_rows_from_lse,
    chunk_bounds,
    combine_loss,
    make_options,
    ntl_columns,
    ntl_total,
    number_positions,
    plan_labels,
    softmax_ce_grad_inplace_,
)
from ntl.vocab import NumberTable, NumberVocab

__all__ = ["default_linear_chunk_rows", "linear_cross_entropy_with_ntl"]

# At most this many logits per chunk: 2**23 float32 = 32 MiB.
_LINEAR_CHUNK_ELEMENTS = 2**23
# At least this many chunks (N / 9 rows each): the materialised logits + torch CE keep about
# 2.6 float32 (N, V) buffers beyond the gradients every path returns, so one float32 chunk of
# N / 9 rows is 1 / (9 * 2.6) = 0.043 of that scratch (half precision: N / 18 rows).
_MIN_CHUNKS = 9
# ... but at least this many rows per chunk: every chunk reads W twice and reads and writes the
# whole (V, H) weight gradient once, which costs more than the matmuls themselves when chunks
# are thin (measured at V = 32000, H = 256, N = 512: 48-row chunks 1.5x the time of 128-row ones).
_MIN_CHUNK_ROWS = 48

Grads = tuple[Tensor | None, Tensor | None, Tensor | None]


def default_linear_chunk_rows(
    rows: int, vocab_size: int, dtype: torch.dtype = torch.float32
) -> int:
    """Rows per chunk: ``min(2**23 // V, max(48, ceil(N / 9)))``, at least 1.

    Half precision keeps about twice the scratch per row (the chunk in the input dtype and its
    float32 copy), so it takes half as many: ``min(2**22 // V, max(24, ceil(N / 18)))``.
    """
    half = 2 if compute_dtype(dtype) != dtype else 1
    by_size = _LINEAR_CHUNK_ELEMENTS // half // max(1, vocab_size)
    by_rows = math.ceil(rows / (_MIN_CHUNKS * half))
    return max(1, min(by_size, max(_MIN_CHUNK_ROWS // half, by_rows)))


def _linear_pass(
    hidden: Tensor,
    weight: Tensor,
    bias: Tensor | None,
    plan: LabelPlan,
    table: NumberTable,
    opts: LossOptions,
    chunk_rows: int,
    need: tuple[bool, bool, bool],
    row_scale: Tensor | None = None,
) -> tuple[Tensor, Tensor | None, Tensor | None, Grads]:
    """One chunked pass over hidden (N, H) and weight (V, H).

    Returns per-row CE (N,), per-number-row NTL (M,) and its sum or None, None, and the gradients of the loss
    (already normalised; rows scaled by ``row_scale`` (N,) if given) for hidden, weight, bias
    where ``need`` asks for them, in the input dtype.

    Memory: besides the outputs, per-chunk buffers of (n, V) only: the logits in the compute
    dtype, overwritten by their gradient, and for half precision the logits / gradient in the
    input dtype for the matmuls, which run in the input dtype as in the materialised path. No
    full-size copy of W or of its gradient is made.
    """
    n_rows, vocab_size = hidden.shape[0], weight.shape[0]
    in_dtype = hidden.dtype
    dtype = compute_dtype(in_dtype)
    half = dtype != in_dtype
    device = hidden.device
    eps = opts.label_smoothing
    any_grad = any(need)
    use_ntl = opts.ntl_weight != 0.0 and plan.number_rows.numel() > 0
    lse = torch.empty(n_rows, dtype=dtype, device=device)
    label_logit = torch.empty(n_rows, dtype=dtype, device=device)
    logit_sum = torch.empty(n_rows, dtype=dtype, device=device) if eps > 0 else None
    ntl_rows = (
        torch.empty(plan.number_rows.numel(), dtype=dtype, device=device) if use_ntl else None
    )
    grad_h = torch.empty(hidden.shape, dtype=in_dtype, device=device) if need[0] else None
    # the first chunk writes grad_w (no zero fill to read back), later chunks add to it
    grad_w = None
    if need[1]:
        make = torch.empty if n_rows > 0 else torch.zeros
        grad_w = make(weight.shape, dtype=in_dtype, device=device)
    grad_b = torch.zeros(vocab_size, dtype=dtype, device=device) if need[2] else None
    n_max = min(chunk_rows, n_rows)
    x_buf = torch.empty((n_max, vocab_size), dtype=in_dtype, device=device)  # matmul output
    x32 = torch.empty((n_max, vocab_size), dtype=dtype, device=device) if half else None
    starts = list(range(0, n_rows, chunk_rows))
    bounds = chunk_bounds(plan.number_rows, [*starts, n_rows]) if use_ntl else []
    # flat positions of the (K, M) number-token logits in an (N, V) array
    flat_at = number_positions(table.token_ids, plan.number_rows, vocab_size) if use_ntl else None
    ntl_sum: Tensor | None = None
    weight_d = weight.detach()
    weight_t = weight_d.t()  # (H, V), a view
    bias_d = None if bias is None else bias.detach()
    for c, r0 in enumerate(starts):
        r1 = min(r0 + chunk_rows, n_rows)
        n = r1 - r0
        h = hidden[r0:r1].detach()  # (n, H)
        x_in = x_buf[:n]
        if bias_d is None:
            torch.mm(h, weight_t, out=x_in)
        else:
            torch.addmm(bias_d, h, weight_t, out=x_in)
        x = x_in if x32 is None else x32[:n].copy_(x_in)  # (n, V) compute dtype
        safe = plan.safe_labels[r0:r1]
        label_logit[r0:r1] = x.gather(1, safe.unsqueeze(1)).squeeze(1)
        if logit_sum is not None:
            torch.sum(x, dim=1, out=logit_sum[r0:r1])
        ntl_grad: Tensor | None = None
        if ntl_rows is not None and flat_at is not None and bounds[c + 1] > bounds[c]:
            a, b = bounds[c], bounds[c + 1]
            at = flat_at[:, a:b] - r0 * vocab_size  # (K, m) in this chunk
            number_logits = x.view(-1).take(at)  # (K, m)
            rows_loss, ntl_grad = ntl_columns(
                number_logits, plan.number_slots[a:b], table, opts.kind, opts.huber_delta
            )
            part_sum = ntl_total(rows_loss, number_logits)  # checked chunk by chunk
            ntl_sum = part_sum if ntl_sum is None else ntl_sum + part_sum
            ntl_rows[a:b] = rows_loss
        if not any_grad:
            torch.logsumexp(x, dim=1, out=lse[r0:r1])
            continue
        # the logits chunk becomes its gradient in place: one (n, V) buffer
        lse[r0:r1] = softmax_ce_grad_inplace_(x, safe, plan.ce_weight[r0:r1], eps)
        g = x
        if ntl_grad is not None:
            g.view(-1).index_add_(0, at.view(-1), ntl_grad.view(-1), alpha=plan.ntl_scale)
        if row_scale is not None:
            g.mul_(row_scale[r0:r1].unsqueeze(1))
        if grad_b is not None:
            grad_b += g.sum(0)
        g_mm = g if not half else x_in.copy_(g)  # the logits chunk is no longer needed
        if grad_h is not None:
            torch.mm(g_mm, weight_d, out=grad_h[r0:r1])
        if grad_w is not None and c == 0:
            torch.mm(g_mm.t(), h, out=grad_w)
        elif grad_w is not None:
            grad_w.addmm_(g_mm.t(), h)
    ce_rows = ce_rows_from_lse(lse, label_logit, logit_sum, eps, vocab_size)
    return ce_rows, ntl_rows, ntl_sum, (grad_h, grad_w, grad_b)


class _LinearCrossEntropyNTL(torch.autograd.Function):
    """Autograd wrapper: gradients accumulated in forward ("mean"/"sum") or in backward ("none")."""

    @staticmethod
    def forward(
        ctx: Any,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        plan: LabelPlan,
        table: NumberTable,
        opts: LossOptions,
        chunk_rows: int,
        need: tuple[bool, bool, bool],
    ) -> Tensor:
        flat = hidden.reshape(-1, hidden.shape[-1])  # (N, H)
        eager = opts.reduction != "none"
        ce_rows, ntl_rows, ntl_sum, grads = _linear_pass(
            flat, weight, bias, plan, table, opts, chunk_rows, need if eager else (False,) * 3
        )
        ctx.save_for_backward(hidden, weight, bias)
        ctx.grads = grads if eager else None
        ctx.args = (plan, table, opts, chunk_rows, need)
        return combine_loss(ce_rows, ntl_rows, ntl_sum, plan, opts, hidden.shape[:-1])

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        if torch.is_grad_enabled():
            raise RuntimeError(
                "linear_cross_entropy_with_ntl does not support double backward (create_graph=True); "
                "materialise the logits and use cross_entropy_with_ntl(..., fused=False) instead"
            )
        hidden, weight, bias = ctx.saved_tensors
        plan, table, opts, chunk_rows, need = ctx.args
        grads: Grads | None = ctx.grads
        ctx.grads = None  # hand the buffers over; a second backward recomputes them
        scale: Tensor | None = None
        if opts.reduction == "none":
            scale = grad_output.reshape(-1).to(compute_dtype(hidden.dtype))
            grads = None
        if grads is None:
            flat = hidden.reshape(-1, hidden.shape[-1])
            grads = _linear_pass(
                flat, weight, bias, plan, table, opts, chunk_rows, need, row_scale=scale
            )[3]
        grad_h, grad_w, grad_b = grads
        if scale is None and not bool(grad_output == 1):
            for grad in grads:
                if grad is not None:
                    grad.mul_(grad_output)
        return (
            None if grad_h is None else grad_h.reshape(hidden.shape),
            grad_w,
            None if grad_b is None else grad_b.to(bias.dtype),
            None,
            None,
            None,
            None,
            None,
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
    squash_factor: float | None = None,
) -> Tensor:
    """CE + ntl_weight * NTL of the logits ``hidden @ weight.T + bias``, never materialised.

    Args:
        hidden: (..., H) last hidden states. weight: (V, H) LM head. bias: optional (V,).
        labels: (...) integer labels in [0, V) or ``ignore_index``.
        vocab: the number tokens (``vocab.vocab_size == V``).
        chunk_size: rows per chunk (default: :func:`default_linear_chunk_rows`: at most
            2**23 logits = 32 MiB of float32 and max(48, ceil(N / 9)) rows; half precision
            half of each).
        The other keywords are those of :func:`ntl.cross_entropy_with_ntl`.
    Returns:
        A scalar for ``reduction`` "mean"/"sum", else per-position losses of shape ``labels.shape``.
    """
    vocab = check_vocab(vocab)
    check_linear_inputs(hidden, weight, bias, labels, vocab.vocab_size, ignore_index)
    opts = make_options(
        kind, ntl_weight, ignore_index, reduction, normalize_by, num_items_in_batch,
        num_number_items_in_batch, label_smoothing, huber_delta, chunk_size, squash_factor,
    )  # fmt: skip
    vocab_size = vocab.vocab_size
    dtype = compute_dtype(hidden.dtype)
    table = vocab.number_table(labels.device, dtype, opts.squash_factor)
    plan = plan_labels(
        labels.reshape(-1),
        table,
        opts,
        num_items_in_batch,
        num_number_items_in_batch,
        dtype,
    )
    n_rows = labels.numel()
    rows = (
        chunk_size
        if chunk_size is not None
        else default_linear_chunk_rows(n_rows, vocab_size, hidden.dtype)
    )
    grad_on = torch.is_grad_enabled()
    need = (
        grad_on and hidden.requires_grad,
        grad_on and weight.requires_grad,
        grad_on and bias is not None and bias.requires_grad,
    )
    if any(need):
        return _LinearCrossEntropyNTL.apply(hidden, weight, bias, plan, table, opts, rows, need)
    flat = hidden.detach().reshape(-1, hidden.shape[-1])
    ce_rows, ntl_rows, ntl_sum, _ = _linear_pass(
        flat, weight, bias, plan, table, opts, rows, (False,) * 3
    )
    return combine_loss(ce_rows, ntl_rows, ntl_sum, plan, opts, labels.shape)
