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

from ntl._validate import check_loss_options
from ntl.loss import cross_entropy_with_ntl, number_token_loss
from ntl.vocab import NumberVocab

__all__ = ["ntl_compute_loss_func", "shift_labels"]


def shift_labels(labels: Tensor, ignore_index: int = -100) -> Tensor:
    """Labels for a causal LM: ``out[..., t] = labels[..., t + 1]``, last position ``ignore_index``.

    ``labels`` (..., T) integer; returns a new tensor of the same shape (the input is unchanged).
    """
    if not isinstance(labels, Tensor):
        raise TypeError(f"labels must be a torch.Tensor, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be an integer tensor, got dtype {labels.dtype}")
    if labels.dim() < 1:
        raise ValueError(f"labels must have a sequence dim, got shape {tuple(labels.shape)}")
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
            ``num_items_in_batch`` (non-ignored tokens in the whole accumulated batch), so
            gradient accumulation is exact. ``"number_tokens"`` (the paper) averages NTL over
            the number positions of each micro-batch; with ``num_items_in_batch`` given, that
            micro-batch mean is weighted by its share of the batch's tokens, because the Trainer
            does not divide a ``compute_loss_func`` loss by the accumulation steps.
        causal: shift labels left by one (decoder-only LMs: logits at t predict token t + 1).
        **kw: further keywords of :func:`ntl.cross_entropy_with_ntl` (``ignore_index``,
            ``label_smoothing``, ``huber_delta``, ``fused``).
    """
    if not isinstance(vocab, NumberVocab):
        raise TypeError(f"vocab must be a ntl.NumberVocab, got {type(vocab).__name__}")
    check_loss_options(kind, "mean", normalize_by, kw.get("huber_delta", 1.0))
    allowed = {"ignore_index", "label_smoothing", "huber_delta", "fused"}
    unknown = sorted(set(kw) - allowed)
    if unknown:
        raise TypeError(f"unexpected keyword(s) {unknown}; allowed: {sorted(allowed)}")
    ignore_index: int = kw.get("ignore_index", -100)
    huber_delta: float = kw.get("huber_delta", 1.0)

    def compute_loss(
        outputs: Any, labels: Tensor | None, num_items_in_batch: int | Tensor | None = None
    ) -> Tensor:
        if labels is None:
            raise ValueError("labels is None: the batch needs a 'labels' entry for the NTL loss")
        logits = _logits_of(outputs)  # (B, T, V)
        labels = labels.to(logits.device)
        if causal:
            labels = shift_labels(labels, ignore_index)
        if normalize_by == "tokens" or num_items_in_batch is None:
            return cross_entropy_with_ntl(
                logits,
                labels,
                vocab,
                kind=kind,
                ntl_weight=ntl_weight,
                normalize_by=normalize_by,
                num_items_in_batch=num_items_in_batch,
                **kw,
            )
        # normalize_by="number_tokens" under gradient accumulation: CE is exact; the NTL
        # micro-batch mean is scaled by this micro-batch's share of the tokens.
        total = torch.as_tensor(num_items_in_batch, device=logits.device, dtype=torch.float32)
        share = (labels != ignore_index).sum() / total.clamp_min(1)
        ce = cross_entropy_with_ntl(
            logits,
            labels,
            vocab,
            kind=kind,
            ntl_weight=0.0,
            num_items_in_batch=num_items_in_batch,
            **kw,
        )
        ntl = number_token_loss(
            logits, labels, vocab, kind=kind, ignore_index=ignore_index, huber_delta=huber_delta
        )
        return ce + ntl_weight * share * ntl

    return compute_loss
