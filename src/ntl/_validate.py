"""Input validation and the small shared rules of the NTL losses (reference, fused, linear paths).

Every check raises ``ValueError`` or ``TypeError`` naming the argument and the offending
shape or value, before any loss computation starts. The checks are cheap: shapes and dtypes
are free, and the value checks cost one reduction over the logits (a row maximum) and one over
the labels with a single host synchronisation.

Logits may hold ``-inf`` (masked tokens, padded head columns): a softmax is defined as long as
its row has one finite maximum. ``NaN`` is always rejected; ``+inf`` and rows that are entirely
``-inf`` are rejected in the rows a softmax is taken over, where they make it undefined.

Also here, so that every path uses the same rule: :func:`compute_dtype` (the dtype a loss is
computed in) and :func:`mean_denominator` (the divisor of ``reduction="mean"``).
"""

from __future__ import annotations

import math
from collections.abc import Collection

import torch
from torch import Tensor

from ntl.vocab import NumberVocab

__all__ = [
    "KINDS",
    "NORMALIZE_BY",
    "REDUCTIONS",
    "check_choice",
    "check_digit_vocab",
    "check_dot_token",
    "check_keywords",
    "check_label_tensor",
    "check_linear_inputs",
    "check_logits",
    "check_logits_labels",
    "check_logits_shape",
    "check_loss_options",
    "check_loss_weights",
    "check_ntl_counts",
    "check_num_items",
    "check_number_tokens",
    "check_options",
    "check_sigma",
    "check_soft_target_rows",
    "check_softmax_rows",
    "check_squash_factor",
    "check_target_probs",
    "check_trainer_labels",
    "check_trainer_number_tokens",
    "check_vocab",
    "check_weight",
    "compute_dtype",
    "mean_denominator",
    "trainer_target_count",
]

KINDS = ("was", "mse", "mae", "huber")
REDUCTIONS = ("mean", "sum", "none")
NORMALIZE_BY = ("number_tokens", "tokens")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a loss is computed in: float32 for half precision, else the input dtype."""
    return torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype


def mean_denominator(name: str, override: int | float | Tensor | None, count: float) -> float:
    """The divisor of a "mean": ``override`` (``name``) if given, else ``count``.

    A zero divisor with a zero count gives 1 (the sum is 0 then). An override of 0 while this
    batch has ``count > 0`` items is a caller error: the sum would be returned undivided.
    """
    value = float(count if override is None else override)
    if value > 0:
        return value
    if count > 0:
        raise ValueError(
            f"{name}={value:g} but this batch has {count:g} items to average over; "
            f"{name} must count them (it is >= the items of every micro-batch)"
        )
    return 1.0


def check_choice(name: str, value: object, choices: Collection[str]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}, got {value!r}")


def check_weight(name: str, value: object, upper: float = math.inf) -> None:
    """A real number in ``[0, upper]`` (``ntl_weight``, ``label_smoothing``)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a float, got {type(value).__name__}")
    if not (0 <= value <= upper and math.isfinite(value)):
        raise ValueError(f"{name} must be finite and in [0, {upper}], got {value!r}")


def check_squash_factor(squash_factor: object, kind: str, soft_targets: bool = False) -> None:
    """``None`` or a finite float > 1, only with ``kind="was"`` (as in ntloss ``NTLoss``)."""
    if squash_factor is None:
        return
    if soft_targets:
        raise ValueError("squash_factor does not apply to soft targets (target_probs)")
    if isinstance(squash_factor, bool) or not isinstance(squash_factor, int | float):
        raise TypeError(
            f"squash_factor must be a float or None, got {type(squash_factor).__name__}"
        )
    if not (squash_factor > 1 and math.isfinite(squash_factor)):
        raise ValueError(f"squash_factor must be finite and > 1, got {squash_factor!r}")
    if kind != "was":
        raise ValueError(f"squash_factor only applies to kind='was', got kind={kind!r}")


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


def check_options(
    kind: str,
    reduction: str,
    normalize_by: str,
    huber_delta: float,
    ntl_weight: float,
    label_smoothing: float,
    num_items_in_batch: int | Tensor | None,
    num_number_items_in_batch: int | Tensor | None,
    chunk_size: int | None = None,
    squash_factor: float | None = None,
) -> None:
    """All option checks of :func:`ntl.cross_entropy_with_ntl` and its fused / linear paths."""
    check_loss_options(kind, reduction, normalize_by, huber_delta)
    check_weight("ntl_weight", ntl_weight)
    check_weight("label_smoothing", label_smoothing, upper=1.0)
    check_num_items("num_items_in_batch", num_items_in_batch)
    check_num_items("num_number_items_in_batch", num_number_items_in_batch)
    check_squash_factor(squash_factor, kind)
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")


def check_logits_shape(logits: object, vocab_size: int | None) -> None:
    """Check that ``logits`` is a floating tensor (..., V) with V == ``vocab_size`` (no reductions).

    ``vocab_size=None`` accepts any V."""
    if not isinstance(logits, Tensor):
        raise TypeError(f"logits must be a torch.Tensor, got {type(logits).__name__}")
    if not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor, got dtype {logits.dtype}")
    if logits.dim() < 2:
        raise ValueError(
            f"logits must have shape (..., V) with at least 2 dims, got shape {tuple(logits.shape)}"
        )
    if vocab_size is not None and logits.shape[-1] != vocab_size:
        raise ValueError(
            f"logits have {logits.shape[-1]} classes in their last dim (shape {tuple(logits.shape)}) "
            f"but vocab.vocab_size is {vocab_size}"
        )


def _first(mask: Tensor) -> tuple[int, ...]:
    return tuple(int(i) for i in mask.nonzero()[0])


def _raise_bad_rows(x: Tensor, row_max: Tensor, name: str) -> None:
    """Explain the first row of ``x`` (..., C) whose maximum ``row_max`` (...) is not finite."""
    nan = torch.isnan(x)
    if bool(nan.any()):
        raise ValueError(
            f"{name} must not contain NaN, found NaN at index {_first(nan)} "
            f"({int(nan.sum())} NaN entries in shape {tuple(x.shape)})"
        )
    pos = x == math.inf
    if bool(pos.any()):
        raise ValueError(
            f"{name} has +inf at index {_first(pos)}: the softmax of that row is undefined "
            "(-inf is accepted for masked tokens, +inf is not)"
        )
    if not bool(torch.isfinite(row_max).all()):
        raise ValueError(
            f"{name} row {_first(~torch.isfinite(row_max))} is entirely -inf: its softmax is undefined"
        )


def check_softmax_rows(x: Tensor, name: str) -> None:
    """Every row of ``x`` (..., C) has a finite maximum: no NaN, no +inf, not all -inf."""
    if x.numel() == 0:
        return
    row_max = x.detach().amax(dim=-1)  # NaN propagates
    if not bool(torch.isfinite(row_max).all()):
        _raise_bad_rows(x.detach(), row_max, name)


def check_logits(logits: Tensor, vocab_size: int) -> None:
    """``logits`` (..., V): a floating tensor, V == ``vocab_size``, every softmax row defined."""
    check_logits_shape(logits, vocab_size)
    check_softmax_rows(logits, "logits")


def check_labels(
    labels: object,
    expected_shape: tuple[int, ...],
    device: torch.device,
    vocab_size: int,
    ignore_index: int,
    against: str = "logits",
) -> Tensor:
    """Integer labels of ``expected_shape`` on ``device``; returns the (...) out-of-range mask."""
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise TypeError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    if tuple(labels.shape) != expected_shape:
        raise ValueError(
            f"labels must have shape {against}.shape[:-1] = {expected_shape}, "
            f"got labels shape {tuple(labels.shape)}"
        )
    if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
        raise TypeError(f"ignore_index must be an int, got {type(ignore_index).__name__}")
    if labels.device != device:
        raise ValueError(f"labels are on {labels.device} but {against} is on {device}")
    return ((labels < 0) | (labels >= vocab_size)) & (labels != ignore_index)


def _raise_bad_label(labels: Tensor, bad: Tensor, vocab_size: int, ignore_index: int) -> None:
    index = _first(bad)
    raise ValueError(
        f"labels must lie in [0, {vocab_size}) or equal ignore_index={ignore_index}, "
        f"found {int(labels[index])} at index {index}"
    )


def check_logits_labels(
    logits: Tensor,
    labels: Tensor,
    vocab_size: int,
    ignore_index: int = -100,
    softmax_rows: bool = True,
) -> None:
    """Check ``logits`` (..., V) against ``labels`` (...) before a loss is computed.

    Raises ``TypeError`` for non-tensors, non-float logits and non-integer labels, and
    ``ValueError`` for wrong ranks/shapes, ``V != vocab_size``, labels outside ``[0, V)`` other
    than ``ignore_index``, NaN logits and (``softmax_rows``: a softmax is taken over every row)
    rows with +inf or only -inf. With ``softmax_rows=False`` only NaN is checked here; the
    caller checks the rows it takes a softmax over (:func:`check_softmax_rows`).
    """
    check_logits_shape(logits, vocab_size)
    bad_labels = check_labels(
        labels, tuple(logits.shape[:-1]), logits.device, vocab_size, ignore_index
    )
    detached = logits.detach()
    if softmax_rows:
        row_max = detached.amax(dim=-1)
        flags = torch.stack([bad_labels.any(), ~torch.isfinite(row_max).all()]).tolist()
    else:
        flags = torch.stack([bad_labels.any(), torch.isnan(detached).any()]).tolist()
    if flags[0]:
        _raise_bad_label(labels, bad_labels, vocab_size, ignore_index)
    if flags[1]:
        _raise_bad_rows(detached, detached.amax(dim=-1), "logits")


def check_loss_weights(loss_weights: object, labels: Tensor) -> None:
    """Per-position weights (...) like ``labels``: floating, finite, >= 0 (ntloss ``loss_weights``)."""
    if loss_weights is None:
        return
    if not isinstance(loss_weights, Tensor) or not loss_weights.is_floating_point():
        raise TypeError(
            f"loss_weights must be a floating tensor, got {getattr(loss_weights, 'dtype', type(loss_weights).__name__)}"
        )
    if tuple(loss_weights.shape) != tuple(labels.shape):
        raise ValueError(
            f"loss_weights must have the shape of labels {tuple(labels.shape)}, "
            f"got {tuple(loss_weights.shape)}"
        )
    if loss_weights.device != labels.device:
        raise ValueError(f"loss_weights are on {loss_weights.device} but labels on {labels.device}")
    detached = loss_weights.detach()
    bad = ~(torch.isfinite(detached) & (detached >= 0))
    if bool(bad.any()):
        index = _first(bad)
        raise ValueError(
            f"loss_weights must be finite and >= 0, found {detached[index].item()} at index {index}"
        )


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


def check_number_tokens(token_ids: object, values: object, vocab_size: int) -> None:
    """The number tokens of a direct call: (K,) unique integer ids in [0, V), (K,) finite values."""
    if (
        not isinstance(token_ids, Tensor)
        or token_ids.is_floating_point()
        or token_ids.is_complex()
        or token_ids.dtype == torch.bool
    ):
        raise TypeError(
            f"token_ids must be an integer tensor, got {getattr(token_ids, 'dtype', type(token_ids).__name__)}"
        )
    if token_ids.dim() != 1 or token_ids.numel() == 0:
        raise ValueError(
            f"token_ids must be a non-empty 1-D tensor, got shape {tuple(token_ids.shape)}"
        )
    if not isinstance(values, Tensor) or not values.is_floating_point():
        raise TypeError(
            f"values must be a floating tensor, got {getattr(values, 'dtype', type(values).__name__)}"
        )
    if tuple(values.shape) != tuple(token_ids.shape):
        raise ValueError(
            f"values must have the shape of token_ids {tuple(token_ids.shape)}, got {tuple(values.shape)}"
        )
    low, high = (int(v) for v in torch.aminmax(token_ids))
    if low < 0 or high >= vocab_size:
        raise ValueError(f"token_ids must lie in [0, {vocab_size}), got min {low} and max {high}")
    ordered = token_ids.detach().sort().values
    dup = ordered[1:] == ordered[:-1]
    if bool(dup.any()):
        raise ValueError(
            f"token_ids must be unique, token id {int(ordered[1:][dup][0])} appears more than once"
        )
    finite = torch.isfinite(values.detach())
    if not bool(finite.all()):
        k = int((~finite).nonzero()[0])
        raise ValueError(
            f"values must be finite, got {values[k].item()} for token id {int(token_ids[k])}"
        )


def _check_finite(name: str, value: Tensor) -> None:
    # one read, no upcast copy (a float32 sum of a bf16 tensor would copy it whole):
    # NaN propagates through the min / max, and +-inf shows in them
    if value.numel() == 0:  # an empty batch: nothing to check (aminmax has no identity)
        return
    low, high = torch.aminmax(value.detach())
    if not bool(torch.isfinite(low) & torch.isfinite(high)):
        where = _first(~torch.isfinite(value.detach()))
        raise ValueError(f"{name} must be finite, found {value[where].item()} at index {where}")


def check_linear_inputs(
    hidden: object,
    weight: object,
    bias: object,
    labels: object,
    vocab_size: int,
    ignore_index: int,
) -> None:
    """``hidden`` (..., H), ``weight`` (V, H), optional ``bias`` (V,), ``labels`` (...).

    ``hidden`` and ``weight`` must be finite; ``bias`` may mask columns with ``-inf`` (not all).
    """
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
    if weight.shape[0] != vocab_size:
        raise ValueError(
            f"weight has {weight.shape[0]} rows (shape {tuple(weight.shape)}) but vocab.vocab_size "
            f"is {vocab_size}"
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
        if tuple(bias.shape) != (vocab_size,):
            raise ValueError(f"bias must have shape ({vocab_size},), got {tuple(bias.shape)}")
    bad = check_labels(
        labels, tuple(hidden.shape[:-1]), hidden.device, vocab_size, ignore_index, "hidden"
    )
    assert isinstance(labels, Tensor)
    if bool(bad.any()):
        _raise_bad_label(labels, bad, vocab_size, ignore_index)
    _check_finite("hidden", hidden)
    _check_finite("weight", weight)
    if bias is not None:
        assert isinstance(bias, Tensor)
        check_softmax_rows(bias.unsqueeze(0), "bias")


def check_vocab(vocab: object) -> NumberVocab:
    """``vocab`` is a :class:`ntl.NumberVocab`; returns it typed."""
    if not isinstance(vocab, NumberVocab):
        raise TypeError(f"vocab must be a ntl.NumberVocab, got {type(vocab).__name__}")
    return vocab


def check_digit_vocab(vocab: NumberVocab) -> None:
    """A digit vocabulary: every value is one of 0..9 (the number-level loss needs it)."""
    values = vocab.values
    if not bool(((values == values.round()) & (values >= 0) & (values <= 9)).all()):
        raise ValueError(
            "number_level_loss needs a digit vocabulary (every value one of 0..9), got values "
            f"{sorted(set(values.tolist()))[:12]}"
        )


def check_dot_token(float_level: bool, dot_token_id: object) -> None:
    """``float_level=True`` needs the decimal point's token id."""
    if float_level and (isinstance(dot_token_id, bool) or not isinstance(dot_token_id, int)):
        raise ValueError(f"float_level=True needs dot_token_id (an int), got {dot_token_id!r}")


def check_label_tensor(
    labels: object, vocab_size: int | None = None, ignore_index: int = -100
) -> Tensor:
    """An integer tensor (..., T) with a sequence dim; with ``vocab_size``, ids in [0, V) or ignored."""
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    if labels.dim() < 1:
        raise ValueError(f"labels must have a sequence dim, got shape {tuple(labels.shape)}")
    if vocab_size is not None:
        bad = check_labels(
            labels, tuple(labels.shape), labels.device, vocab_size, ignore_index, "labels"
        )
        if bool(bad.any()):
            _raise_bad_label(labels, bad, vocab_size, ignore_index)
    return labels


def check_sigma(sigma: object) -> None:
    """The width of a Gaussian: a finite float > 0."""
    if isinstance(sigma, bool) or not isinstance(sigma, int | float):
        raise TypeError(f"sigma must be a float, got {type(sigma).__name__}")
    if not (sigma > 0 and math.isfinite(sigma)):
        raise ValueError(f"sigma must be finite and > 0, got {sigma!r}")


def check_ntl_counts(
    normalize_by: str,
    num_items_in_batch: int | Tensor | None,
    num_number_items_in_batch: int | Tensor | None,
) -> None:
    """The NTL alone: the override must be the count ``normalize_by`` divides by (one meaning)."""
    check_num_items("num_items_in_batch", num_items_in_batch)
    check_num_items("num_number_items_in_batch", num_number_items_in_batch)
    if normalize_by == "number_tokens" and num_items_in_batch is not None:
        raise ValueError(
            "num_items_in_batch counts all non-ignored targets (the normalize_by='tokens' "
            "denominator); with normalize_by='number_tokens' pass num_number_items_in_batch "
            "(see ntl.count_targets)"
        )
    if normalize_by == "tokens" and num_number_items_in_batch is not None:
        raise ValueError(
            "num_number_items_in_batch is the normalize_by='number_tokens' denominator; "
            "with normalize_by='tokens' pass num_items_in_batch"
        )


def check_soft_target_rows(q: Tensor) -> None:
    """Soft targets (M, K) at the number positions sum to 1 per row."""
    row_sums = q.detach().sum(-1)
    if not bool(torch.allclose(row_sums, torch.ones_like(row_sums), atol=1e-4)):
        raise ValueError(
            "target_probs rows must sum to 1 at number-token positions, "
            f"got sums in [{row_sums.min().item():g}, {row_sums.max().item():g}]"
        )


def check_keywords(kw: Collection[str], allowed: Collection[str]) -> None:
    """No keyword outside ``allowed``."""
    unknown = sorted(set(kw) - set(allowed))
    if unknown:
        raise TypeError(f"unexpected keyword(s) {unknown}; allowed: {sorted(allowed)}")


def trainer_target_count(
    labels: Tensor,
    used: Tensor,
    num_items_in_batch: int | Tensor | None,
    causal: bool,
    ignore_index: int,
) -> float | None:
    """A Trainer's ``num_items_in_batch`` as the count of the targets the loss uses (``used``).

    With ``causal`` the Trainer may have counted the unshifted ``labels``: corrected when its
    count is this micro-batch's own, a ``ValueError`` when it cannot be told apart.
    """
    if num_items_in_batch is None:
        return None
    check_num_items("num_items_in_batch", num_items_in_batch)
    given = float(torch.as_tensor(num_items_in_batch).reshape(()).item())
    if not causal:
        return given
    counts = torch.stack([(used != ignore_index).sum(), (labels != ignore_index).sum()]).tolist()
    shifted, unshifted = float(counts[0]), float(counts[1])
    if given == shifted or shifted == unshifted:
        return given
    if given == unshifted:
        return shifted  # the Trainer counted this micro-batch's unshifted labels
    raise ValueError(
        f"num_items_in_batch={given:g} is neither this micro-batch's causal target count "
        f"({shifted:g}) nor its unshifted label count ({unshifted:g}): under gradient "
        "accumulation the Trainer may have counted unshifted labels, which cannot be corrected "
        "here. Set labels[..., 0] = ignore_index in the data collator (never a causal LM's "
        "target), so that both counts agree"
    )


def check_trainer_labels(labels: object) -> None:
    """A ``compute_loss_func`` needs the batch's labels."""
    if labels is None:
        raise ValueError("labels is None: the batch needs a 'labels' entry for the NTL loss")


def check_trainer_number_tokens(num_items: float | None, used: Tensor, ignore_index: int) -> None:
    """``normalize_by="number_tokens"`` under a Trainer: only exact for a one-micro-batch count."""
    if num_items is None:
        return
    local = float((used != ignore_index).sum())
    if num_items != local:
        raise ValueError(
            f"normalize_by='number_tokens' is not exact here: num_items_in_batch="
            f"{num_items:g} counts the targets of several micro-batches or processes "
            f"(this one has {local:g}), and the Trainer does not count number tokens. "
            "Use normalize_by='tokens' (exact), or sum ntl.count_targets over the "
            "micro-batches and call ntl.cross_entropy_with_ntl yourself"
        )
