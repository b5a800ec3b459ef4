"""Training glue shared by the NTL experiments: data streams, collators, losses, the training loop.

Training is a plain loop (:func:`train_segment`): AdamW, linear warm-up / decay, gradient
clipping, and gradient accumulation whose loss denominators are the target-token and
number-token counts of the whole optimiser step (the paper's NTL normalisation, exact under
accumulation). A run is a sequence of *segments* between evaluations / checkpoints. The data order is a pure
function of ``(seed, global step)``, the model has no dropout, and model / optimizer / scheduler
states are saved at segment ends, so a resumed run reproduces an uninterrupted one exactly.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from ntl import (
    NumberVocab,
    count_targets,
    cross_entropy_with_ntl,
    gaussian_number_targets,
    number_token_loss,
)
from ntl.hf import shift_labels

__all__ = [
    "LOSSES",
    "Example",
    "Objective",
    "StepLoss",
    "StepStream",
    "causal_collate",
    "load_checkpoint",
    "make_loss",
    "make_optimizer",
    "run_segments",
    "save_checkpoint",
    "seq2seq_collate",
    "train_segment",
]

# (input ids, target ids) — target ids end with eos; for regression the target may be a float.
Example = tuple[list[int], list[int]]

LOSSES = ("ce", "ntl-was", "ntl-mse", "ntl-mae", "ntl-huber", "gauss-ce", "gauss-ce+ntl-was")


class StepStream(torch.utils.data.IterableDataset):
    """Examples in a fixed order: epoch ``e`` is ``examples`` permuted by ``rng((seed, e))``.

    Yields the ``(end - start) * batch_size`` examples of global steps ``start .. end - 1``.
    """

    def __init__(
        self, examples: Sequence[Any], seed: int, batch_size: int, start: int, end: int
    ) -> None:
        if not examples:
            raise ValueError("examples must not be empty")
        if not 0 <= start <= end:
            raise ValueError(f"need 0 <= start <= end, got start={start}, end={end}")
        self.examples = examples
        self.seed, self.batch_size, self.start, self.end = seed, batch_size, start, end

    def __len__(self) -> int:
        return (self.end - self.start) * self.batch_size

    def __iter__(self) -> Iterator[Any]:
        n = len(self.examples)
        perm_epoch, perm = -1, np.arange(0)
        for k in range(self.start * self.batch_size, self.end * self.batch_size):
            epoch = k // n
            if epoch != perm_epoch:
                perm = np.random.default_rng((self.seed, epoch)).permutation(n)
                perm_epoch = epoch
            yield self.examples[int(perm[k % n])]


def _pad(rows: Sequence[Sequence[int]], value: int, left: bool = False) -> Tensor:
    width = max(len(r) for r in rows)
    out = torch.full((len(rows), width), value, dtype=torch.long)  # (B, T)
    for i, r in enumerate(rows):
        if r:
            if left:
                out[i, width - len(r) :] = torch.as_tensor(r)
            else:
                out[i, : len(r)] = torch.as_tensor(r)
    return out


def seq2seq_collate(batch: Sequence[Example], pad_id: int = 0) -> dict[str, Tensor]:
    """Encoder-decoder batch: ``input_ids``, ``attention_mask`` (B, S); ``labels``,
    ``decoder_input_ids`` (B, T) with ``decoder_input_ids = [pad] + labels[:-1]``."""
    inputs = [x for x, _ in batch]
    targets = [y for _, y in batch]
    input_ids = _pad(inputs, pad_id)
    labels = _pad(targets, -100)
    decoder_input_ids = torch.cat(
        [torch.full((len(batch), 1), pad_id, dtype=torch.long), labels[:, :-1]], dim=1
    ).masked_fill(
        torch.cat([torch.zeros(len(batch), 1, dtype=torch.bool), labels[:, :-1] < 0], 1), pad_id
    )
    return {
        "input_ids": input_ids,
        "attention_mask": (_pad([[1] * len(x) for x in inputs], 0)),
        "decoder_input_ids": decoder_input_ids,
        "labels": labels,
    }


def causal_collate(batch: Sequence[Example], pad_id: int = 0, sep_id: int = 3) -> dict[str, Tensor]:
    """Decoder-only batch ``question <sep> answer </s>``, right-padded; labels only on the answer.

    Labels are *unshifted* (position t holds token t); the loss shifts them (``causal=True``).
    """
    seqs = [[*x, sep_id, *y] for x, y in batch]
    labels = [[-100] * (len(x) + 1) + list(y) for x, y in batch]
    return {
        "input_ids": _pad(seqs, pad_id),
        "attention_mask": _pad([[1] * len(s) for s in seqs], 0),
        "labels": _pad(labels, -100),
    }


class StepLoss:
    """One loss variant of :data:`LOSSES` as a training objective with explicit denominators.

    ``loss(outputs, labels, num_items_in_batch, num_number_items_in_batch)``: the CE part is
    summed over the non-ignored target positions and divided by ``num_items_in_batch``, the NTL
    part summed over the number-token positions and divided by ``num_number_items_in_batch`` (the
    paper's normalisation). Both default to the micro-batch's own counts; a training loop that
    accumulates gradients passes the counts of the whole optimiser step (:meth:`count`), which
    makes the accumulated gradient equal to the one of a single batch.

    ``causal=True``: ``labels`` are unshifted (position t holds token t); targets are shifted.
    """

    def __init__(
        self, name: str, vocab: NumberVocab, ntl_weight: float, sigma: float, causal: bool
    ) -> None:
        if name not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {name!r}")
        self.name, self.vocab, self.causal, self.sigma = name, vocab, causal, sigma
        self.ntl_weight = ntl_weight if "ntl" in name else 0.0
        self.kind = name.removeprefix("ntl-") if name.startswith("ntl-") else "was"

    def targets(self, labels: Tensor) -> Tensor:
        """The labels each logit position is trained on (shifted for a causal model)."""
        return shift_labels(labels) if self.causal else labels

    def count(self, labels: Tensor) -> tuple[int, int]:
        """``(target tokens, number-token targets)`` of ``labels``."""
        items, numbers = count_targets(self.targets(labels), self.vocab)
        return int(items), int(numbers)

    def __call__(
        self,
        outputs: Any,
        labels: Tensor,
        num_items_in_batch: int | Tensor | None = None,
        num_number_items_in_batch: int | Tensor | None = None,
    ) -> Tensor:
        logits = outputs.logits  # (B, T, V)
        targets = self.targets(labels.to(logits.device))  # (B, T)
        if not self.name.startswith("gauss"):
            return cross_entropy_with_ntl(
                logits,
                targets,
                self.vocab,
                kind=self.kind,
                ntl_weight=self.ntl_weight,
                normalize_by="number_tokens",
                num_items_in_batch=num_items_in_batch,
                num_number_items_in_batch=num_number_items_in_batch,
            )
        tokens, numbers = self.count(labels)
        denom = float(tokens if num_items_in_batch is None else num_items_in_batch)
        num_denom = float(
            numbers if num_number_items_in_batch is None else num_number_items_in_batch
        )
        logp = torch.log_softmax(logits.float(), dim=-1)  # (B, T, V)
        valid = targets != -100  # (B, T)
        q_num = gaussian_number_targets(targets, self.vocab, self.sigma)  # (B, T, K)
        is_num = q_num.sum(-1) > 0  # (B, T)
        ids = self.vocab.token_ids.to(logits.device)
        hard = -logp.gather(-1, targets.clamp_min(0).unsqueeze(-1)).squeeze(-1)  # (B, T)
        soft = -(q_num * logp.index_select(-1, ids)).sum(-1)  # (B, T)
        per_pos = torch.where(is_num, soft, hard) * valid
        loss = per_pos.sum() / max(denom, 1.0)
        if self.ntl_weight:
            ntl = number_token_loss(logits, targets, self.vocab, kind="was", reduction="sum")
            loss = loss + self.ntl_weight * ntl / max(num_denom, 1.0)
        return loss


def make_loss(
    loss: str, vocab: NumberVocab, ntl_weight: float, sigma: float, causal: bool
) -> StepLoss:
    """The training objective of a loss variant (see :data:`LOSSES` and :class:`StepLoss`)."""
    return StepLoss(loss, vocab, ntl_weight, sigma, causal)


def make_optimizer(
    model: torch.nn.Module, lr: float, weight_decay: float, warmup_steps: int, max_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW + linear warm-up and linear decay to 0 at ``max_steps``."""
    from transformers import get_linear_schedule_with_warmup

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup_steps, max_steps)
    return optimizer, scheduler


class Objective(Protocol):
    """What the training loop needs of a loss: a call with explicit denominators and a count."""

    def __call__(
        self,
        outputs: Any,
        labels: Tensor,
        num_items_in_batch: int | Tensor | None = None,
        num_number_items_in_batch: int | Tensor | None = None,
    ) -> Tensor: ...

    def count(self, labels: Tensor) -> tuple[int, int]: ...


def _split(examples: list[Any], parts: int) -> list[list[Any]]:
    size = -(-len(examples) // parts)
    return [examples[i : i + size] for i in range(0, len(examples), size)]


def train_segment(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    dataset: StepStream,
    collate: Callable[[Sequence[Any]], dict[str, Tensor]],
    objective: Objective,
    *,
    log_every: int,
    grad_accum: int = 1,
    max_grad_norm: float = 1.0,
) -> dict[int, dict[str, float]]:
    """Train global steps ``dataset.start .. dataset.end - 1``; one optimiser step each.

    Each step's ``dataset.batch_size`` examples are split into ``grad_accum`` micro-batches; the
    loss of every micro-batch is divided by the target-token and number-token counts of the
    *whole step* (``objective.count`` summed over its micro-batches), so the accumulated
    gradient is the one of the full batch whatever ``grad_accum`` is. Then the gradient is
    clipped to ``max_grad_norm``, AdamW steps, the scheduler steps.

    Returns ``{global step: {"losses/train", "losses/grad_norm", "charts/learning_rate"}}`` every
    ``log_every`` global steps; ``losses/train`` is the mean step loss since the last log.
    """
    if isinstance(grad_accum, bool) or not isinstance(grad_accum, int) or grad_accum < 1:
        raise ValueError(f"grad_accum must be a positive int, got {grad_accum!r}")
    if grad_accum > dataset.batch_size:
        raise ValueError(f"grad_accum={grad_accum} exceeds batch_size={dataset.batch_size}")
    model.train()
    device = next(model.parameters()).device
    stream = iter(dataset)
    logged: dict[int, dict[str, float]] = {}
    window: list[float] = []
    for step in range(dataset.start, dataset.end):
        examples = [next(stream) for _ in range(dataset.batch_size)]
        batches = [collate(chunk) for chunk in _split(examples, grad_accum)]
        counts = [objective.count(b["labels"]) for b in batches]
        tokens = sum(c[0] for c in counts)
        numbers = sum(c[1] for c in counts)
        optimizer.zero_grad(set_to_none=True)
        step_loss = 0.0
        for batch in batches:
            labels = batch.pop("labels").to(device)
            outputs = model(**{k: v.to(device) for k, v in batch.items()})
            loss = objective(
                outputs, labels, num_items_in_batch=tokens, num_number_items_in_batch=numbers
            )
            loss.backward()
            step_loss += float(loss.detach())
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        lr = float(scheduler.get_last_lr()[0])
        scheduler.step()
        window.append(step_loss)
        done = step + 1
        if done % log_every == 0:
            logged[done] = {
                "losses/train": sum(window) / len(window),
                "losses/grad_norm": float(grad_norm),
                "charts/learning_rate": lr,
            }
            window = []
    return logged


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Atomically write ``state`` (tensors, dicts, lists, numbers, strings) with ``torch.save``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    os.close(fd)
    try:
        torch.save(state, tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def load_checkpoint(path: Path) -> dict[str, Any] | None:
    """The checkpoint at ``path`` (``weights_only=True``), or ``None`` if there is none."""
    if not path.exists():
        return None
    state: dict[str, Any] = torch.load(path, weights_only=True, map_location="cpu")
    return state


def run_segments(
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    examples: Sequence[Any],
    collate: Callable[[Sequence[Any]], dict[str, Tensor]],
    compute_loss_func: Objective,
    evaluate: Callable[[bool], dict[str, float]],
    seed: int,
    batch_size: int,
    max_steps: int,
    log_every: int,
    eval_every: int,
    checkpoint_every: int,
    run_dir: Path,
    config_record: dict[str, Any],
    grad_accum: int = 1,
) -> Iterator[dict[str, Any]]:
    """The resumable training loop shared by the experiments; yields metric rows.

    Segments end at multiples of ``eval_every`` and ``checkpoint_every`` and at ``max_steps``;
    ``evaluate(final)`` runs at every multiple of ``eval_every`` and at the end (``final=True``).
    At a checkpoint the state *and that segment's rows* are saved to ``run_dir/checkpoint.pt``
    before the rows are yielded; a resumed run yields those rows again first (a consumer that
    already stored them drops them by step), then continues exactly as an uninterrupted run.
    """
    ckpt_path = run_dir / "checkpoint.pt"
    step = 0
    ckpt = load_checkpoint(ckpt_path)
    if ckpt is not None:
        if ckpt["config"] != config_record:
            raise ValueError(f"{ckpt_path} was written by a different config: {ckpt['config']}")
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        step = int(ckpt["step"])
        yield from ckpt["rows"]
    marks = {max_steps}
    for every in (eval_every, checkpoint_every):
        marks.update(range(every, max_steps, every))
    for boundary in sorted(marks):
        if boundary <= step:
            continue
        logged = train_segment(
            model,
            optimizer,
            scheduler,
            StepStream(examples, seed, batch_size, step, boundary),
            collate,
            compute_loss_func,
            log_every=log_every,
            grad_accum=grad_accum,
        )
        step = boundary
        if step % eval_every == 0 or step == max_steps:
            logged.setdefault(step, {}).update(evaluate(step == max_steps))
        rows = [{"step": s, **logged[s]} for s in sorted(logged)]
        if step % checkpoint_every == 0 or step == max_steps:
            save_checkpoint(
                ckpt_path,
                {
                    "config": config_record,
                    "step": step,
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rows": rows,
                },
            )
        yield from rows
