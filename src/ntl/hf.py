"""transformers integration: a ``compute_loss_func`` for ``transformers.Trainer``.

>>> trainer = Trainer(model=model, args=args, train_dataset=data,           # doctest: +SKIP
...                   compute_loss_func=ntl_compute_loss_func(vocab, causal=True))

The Trainer pops ``labels`` from the batch before calling the model when ``compute_loss_func``
is set, so encoder-decoder models (T5) need ``decoder_input_ids`` in the batch (e.g. from
``model.prepare_decoder_input_ids_from_labels`` or ``DataCollatorForSeq2Seq(model=...)``).
This module imports nothing from transformers: it only reads ``outputs.logits``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from ntl._validate import (
    check_keywords,
    check_label_tensor,
    check_loss_options,
    check_trainer_labels,
    check_trainer_number_tokens,
    check_vocab,
    trainer_target_count,
)
from ntl.loss import cross_entropy_with_ntl
from ntl.vocab import NumberVocab

__all__ = ["ntl_compute_loss_func", "shift_labels"]


def shift_labels(labels: Tensor, ignore_index: int = -100) -> Tensor:
    """Labels for a causal LM: ``out[..., t] = labels[..., t + 1]``, last position ``ignore_index``.

    ``labels`` (..., T) integer; returns a new tensor of the same shape (the input is unchanged).
    """
    check_label_tensor(labels)
    pad = torch.full_like(labels[..., :1], ignore_index)
    return torch.cat([labels[..., 1:], pad], dim=-1)


def _logits_of(outputs: Any) -> Tensor:
    """``outputs.logits`` for a ModelOutput, ``outputs["logits"]`` for a dict, else ``outputs[0]``."""
    logits = getattr(outputs, "logits", None)
    if logits is None and isinstance(outputs, Mapping):
        logits = outputs.get("logits")
    if logits is None and isinstance(outputs, tuple | list) and outputs:
        logits = outputs[0]
    if not isinstance(logits, Tensor):
        raise TypeError(
            f"outputs must carry logits (a ModelOutput, a dict or a tuple), got {type(outputs).__name__}"
        )
    return logits


def ntl_compute_loss_func(
    vocab: NumberVocab,
    kind: str = "was",
    ntl_weight: float = 0.3,
    normalize_by: str = "tokens",
    causal: bool = False,
    **kw: Any,
) -> Callable[..., Tensor]:
    """A ``compute_loss_func(outputs, labels, num_items_in_batch=None)`` computing CE + λ·NTL.

    Args:
        vocab: number tokens of the model's vocabulary (``vocab.vocab_size`` == logit width).
        kind, ntl_weight: see :func:`ntl.cross_entropy_with_ntl`.
        normalize_by: ``"tokens"`` (default here) divides CE and NTL by the Trainer's
            ``num_items_in_batch`` (the targets of the whole accumulated batch), so gradient
            accumulation and data parallelism are exact. ``"number_tokens"`` (the paper) divides
            the NTL by the number-token targets; the Trainer only counts tokens, so this is exact
            only when the Trainer's count is this micro-batch's own (no gradient accumulation,
            one process) and raises ``ValueError`` otherwise. For exact paper normalisation
            under accumulation, sum :func:`ntl.count_targets` over the micro-batches in your own
            loop and pass both counts to :func:`ntl.cross_entropy_with_ntl`.
        causal: shift labels left by one (decoder-only LMs: logits at t predict token t + 1).
            The loss then counts the shifted targets. A Trainer that counts the unshifted labels
            (transformers does for models without a causal ``loss_type``) is corrected when its
            count is this micro-batch's; under accumulation its count cannot be corrected, so a
            micro-batch whose first label is a target raises ``ValueError`` (mask
            ``labels[..., 0] = -100`` in the collator: it is never a causal LM's target). A
            micro-batch without such a label cannot see whether others of the same step had
            one: with accumulation, mask the first label in every batch.
        **kw: further keywords of :func:`ntl.cross_entropy_with_ntl` (``ignore_index``,
            ``label_smoothing``, ``huber_delta``, ``fused``, ``reweigh``, ``squash_factor``).
    """
    vocab = check_vocab(vocab)
    check_loss_options(kind, "mean", normalize_by, kw.get("huber_delta", 1.0))
    check_keywords(
        kw, ("ignore_index", "label_smoothing", "huber_delta", "fused", "reweigh", "squash_factor")
    )
    ignore_index: int = kw.get("ignore_index", -100)

    def compute_loss(
        outputs: Any, labels: Tensor | None, num_items_in_batch: int | Tensor | None = None
    ) -> Tensor:
        check_trainer_labels(labels)
        assert labels is not None
        logits = _logits_of(outputs)  # (B, T, V)
        labels = labels.to(logits.device)
        used = shift_labels(labels, ignore_index) if causal else labels
        num_items = trainer_target_count(labels, used, num_items_in_batch, causal, ignore_index)
        if normalize_by == "number_tokens":
            check_trainer_number_tokens(num_items, used, ignore_index)
            num_items = None  # this micro-batch is the whole batch: its own means are exact
        return cross_entropy_with_ntl(
            logits,
            used,
            vocab,
            kind=kind,
            ntl_weight=ntl_weight,
            normalize_by=normalize_by,
            num_items_in_batch=None if num_items is None else torch.tensor(num_items),
            **kw,
        )

    return compute_loss
