"""Parameter-shift gradients as a custom autograd Function (what a QPU would have to run).

Every gate is a Pauli rotation R_P(θ) = exp(-iθP/2), so ∂f/∂θ = [f(θ + π/2) - f(θ - π/2)] / 2.
Encoding angles enter as half-angles h = θ/2, so ∂f/∂h = f(h + π/4) - f(h - π/4). The shifted
circuits of all parameters are evaluated as one stacked batch; every shifted evaluation is a
circuit execution (counted) and, with shots, is itself sampled. First order only: a request for a
second derivative (``create_graph=True``) raises instead of returning a constant gradient.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

Evaluate = Callable[[Tensor, Tensor], Tensor]


class _ParameterShift(torch.autograd.Function):
    @staticmethod
    def forward(
        ctx: Any, weights: Tensor, half: Tensor, evaluate: Evaluate, on_calls: Callable[[int], None]
    ) -> Tensor:
        # weights (A, n, L, k), half (A, N, n_enc, n_in) -> (A, N, m)
        with torch.no_grad():
            out = evaluate(weights, half)
        on_calls(half.shape[0] * half.shape[1])
        ctx.save_for_backward(weights, half)
        ctx.evaluate, ctx.on_calls = evaluate, on_calls
        return out

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        if torch.is_grad_enabled():
            raise RuntimeError(
                "the parameter-shift gradient is first order only: a second derivative "
                "(create_graph=True, hessian, torch.func transforms) is not supported; use "
                "gradient='backprop' on the torch backend"
            )
        weights, half = ctx.saved_tensors
        evaluate, on_calls = ctx.evaluate, ctx.on_calls
        n_sets, n_inputs = half.shape[0], half.shape[1]
        grad_w = grad_h = None
        with torch.no_grad():
            if ctx.needs_input_grad[0]:
                n_par = weights[0].numel()
                shift = torch.eye(n_par, dtype=weights.dtype, device=weights.device) * (math.pi / 2)
                shift = shift.view(n_par, 1, *weights.shape[1:])  # (Pw, 1, n, L, k)
                diff = evaluate(weights + shift, half) - evaluate(
                    weights - shift, half
                )  # (Pw, A, N, m)
                on_calls(2 * n_par * n_sets * n_inputs)
                grad_w = 0.5 * torch.einsum("panm,anm->ap", diff, grad).reshape(weights.shape)
            if ctx.needs_input_grad[1]:
                n_ang = half.shape[-2] * half.shape[-1]
                shift = torch.eye(n_ang, dtype=half.dtype, device=half.device) * (math.pi / 4)
                shift = shift.view(n_ang, 1, 1, *half.shape[2:])  # (Pe, 1, 1, n_enc, n_in)
                diff = evaluate(weights, half + shift) - evaluate(
                    weights, half - shift
                )  # (Pe, A, N, m)
                on_calls(2 * n_ang * n_sets * n_inputs)
                grad_h = torch.einsum("panm,anm->anp", diff, grad).reshape(half.shape)
        return grad_w, grad_h, None, None


def parameter_shift(
    evaluate: Evaluate, weights: Tensor, half: Tensor, on_calls: Callable[[int], None]
) -> Tensor:
    """⟨Z⟩ with parameter-shift gradients. weights (*P, n, L, k), half (*X, n_enc, n_in) -> (*O, m).

    ``evaluate`` must broadcast like the engine's kernels (matmul-style); ``on_calls`` receives the number
    of circuit executions of the forward pass and of each backward pass.
    """
    n_p = weights.ndim - 3
    tail = half.shape[-2:]
    if n_p == 0:
        w_c = weights.unsqueeze(0)  # (1, n, L, k)
        batch: tuple[int, ...] = tuple(half.shape[:-2])
        h_c = half.reshape(1, -1, *tail)  # (1, N, n_enc, n_in)
    else:
        p_shape = torch.broadcast_shapes(weights.shape[:-3], half.shape[:n_p])
        rest = half.shape[n_p:-2]
        batch = (*p_shape, *rest)
        w_c = weights.expand(*p_shape, *weights.shape[-3:]).reshape(-1, *weights.shape[-3:])
        h_c = half.expand(*batch, *tail).reshape(w_c.shape[0], -1, *tail)
    out: Tensor = _ParameterShift.apply(w_c, h_c, evaluate, on_calls)  # (A, N, m)
    return out.reshape(*batch, out.shape[-1])
