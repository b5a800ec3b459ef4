"""Input validation shared by the NTL losses (reference and fused paths).

Every check raises ``ValueError`` or ``TypeError`` naming the argument and the offending
shape or value, before any loss computation starts. The checks are cheap: shapes and dtypes
are free, and the value checks (label range, finite logits) cost one reduction over the
logits and one over the labels with a single host synchronisation.
"""

from __future__ import annotations

from collections.abc import Collection

import torch
from torch import Tensor

__all__ = [
    "KINDS",
    "NORMALIZE_BY",
    "REDUCTIONS",
    "check_choice",
    "check_logits",
    "check_logits_labels",
    "check_logits_shape",
    "check_loss_options",
    "check_num_items",
    "check_target_probs",
]

KINDS = ("was", "mse", "mae", "huber")
REDUCTIONS = ("mean", "sum", "none")
NORMALIZE_BY = ("number_tokens", "tokens")


def check_choice(name: str, value: object, choices: Collection[str]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")


def check_loss_options(
    kind: str, reduction: str, normalize_by: str, huber_delta: float = 1.0
) -> None:
    """Check the string options of the losses and the Huber threshold."""
    check_choice("kind", kind, KINDS)
    check_choice("reduction", reduction, REDUCTIONS)
    check_choice("normalize_by", normalize_by, NORMALIZE_BY)
    if isinstance(huber_delta, bool) or not isinstance(huber_delta, int | float):
        raise TypeError(f"huber_delta must be a float, got {type(huber_delta).__name__}")
    if not (huber_delta > 0 and huber_delta < float("inf")):
        raise ValueError(f"huber_delta must be a finite positive number, got {huber_delta!r}")


def check_num_items(name: str, value: int | Tensor | None) -> None:
    """Check a denominator override (``num_items_in_batch``): ``None``, an int or a 1-element tensor, >= 0."""
    if value is None:
        return
    if isinstance(value, Tensor):
        if value.numel() != 1:
            raise ValueError(f"{name} must be a scalar, got a tensor of shape {tuple(value.shape)}")
        if value.dtype == torch.bool or value.is_complex():
            raise TypeError(
                f"{name} must be an int or a real scalar tensor, got dtype {value.dtype}"
            )
        number = float(value.detach().reshape(()).item())
    elif isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be an int or a scalar tensor, got {type(value).__name__}")
    else:
        number = float(value)
    if not (number >= 0 and number < float("inf")):
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")


def check_logits_shape(logits: object, vocab_size: int) -> None:
    """Check that ``logits`` is a floating tensor (..., V) with V == ``vocab_size`` (no reductions)."""
    if not isinstance(logits, Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got dtype {logits.dtype}")
    if logits.dim() < 2:
        raise ValueError(
            f"logits must have shape (..., V) with at least 2 dims, got shape {tuple(logits.shape)}"
        )
    if logits.shape[-1] != vocab_size:
        raise ValueError(
            f"logits have {logits.shape[-1]} classes in their last dim (shape {tuple(logits.shape)}) "
            f"but vocab.vocab_size is {vocab_size}"
        )


def _logits_sum_is_finite(logits: Tensor) -> Tensor:
    """One reduction: a non-finite entry makes the sum non-finite (overflow is re-checked exactly)."""
    acc = torch.float32 if logits.dtype in (torch.float16, torch.bfloat16) else logits.dtype
    return torch.isfinite(logits.sum(dtype=acc))


def _raise_non_finite(logits: Tensor) -> None:
    bad = ~torch.isfinite(logits)
    if bool(bad.any()):
        index = tuple(int(i) for i in bad.nonzero()[0])
        raise ValueError(
            f"logits must be finite, found {logits[index].item()} at index {index} "
            f"({int(bad.sum())} non-finite entries in shape {tuple(logits.shape)})"
        )


def check_logits(logits: Tensor, vocab_size: int) -> None:
    """Check ``logits`` (..., V): a floating tensor, V == ``vocab_size``, all entries finite."""
    check_logits_shape(logits, vocab_size)
    if not bool(_logits_sum_is_finite(logits.detach())):
        _raise_non_finite(logits.detach())


def check_logits_labels(
    logits: Tensor, labels: Tensor, vocab_size: int, ignore_index: int = -100
) -> None:
    """Check ``logits`` (..., V) against ``labels`` (...) before a loss is computed.

    Raises ``TypeError`` for non-tensors, non-float logits and non-integer labels, and
    ``ValueError`` for wrong ranks/shapes, ``V != vocab_size``, labels outside ``[0, V)`` other
    than ``ignore_index``, and NaN/inf logits.
    """
    check_logits_shape(logits, vocab_size)
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    if tuple(labels.shape) != tuple(logits.shape[:-1]):
        raise ValueError(
            f"labels must have shape logits.shape[:-1] = {tuple(logits.shape[:-1])}, "
            f"got labels shape {tuple(labels.shape)} (logits shape {tuple(logits.shape)})"
        )
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}")
    if labels.device != logits.device:
        raise ValueError(f"labels are on {labels.device} but logits are on {logits.device}")
    detached = logits.detach()
    bad_labels = ((labels < 0) | (labels >= vocab_size)) & (labels != ignore_index)
    flags = torch.stack([bad_labels.any(), ~_logits_sum_is_finite(detached)]).tolist()
    if flags[0]:
        index = tuple(int(i) for i in bad_labels.nonzero()[0])
        raise ValueError(
            f"labels must lie in [0, {vocab_size}) or equal ignore_index={ignore_index}, "
            f"found {int(labels[index])} at index {index}"
        )
    if flags[1]:
        _raise_non_finite(detached)


def check_target_probs(target_probs: Tensor, labels: Tensor, num_number_tokens: int) -> None:
    """Check soft targets: shape labels.shape + (K,), floating, finite and non-negative."""
    if not isinstance(target_probs, Tensor):
        raise TypeError(f"target_probs must be a torch.Tensor, got {type(target_probs).__name__}")
    if not target_probs.is_floating_point():
        raise TypeError(f"target_probs must be a floating tensor, got dtype {target_probs.dtype}")
    expected = (*labels.shape, num_number_tokens)
    if tuple(target_probs.shape) != expected:
        raise ValueError(
            f"target_probs must have shape labels.shape + (K,) = {expected} "
            f"(K = number tokens in vocab), got {tuple(target_probs.shape)}"
        )
    detached = target_probs.detach()
    if not bool((torch.isfinite(detached) & (detached >= 0)).all()):
        raise ValueError("target_probs must be finite and non-negative")
