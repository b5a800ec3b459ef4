"""Training glue shared by the NTL experiments: data streams, collators, losses, Trainer segments.

Training uses ``transformers.Trainer`` unchanged, with our ``compute_loss_func`` and our own
optimizer and LR scheduler passed through ``optimizers=``. A run is a sequence of *segments*
(one short-lived Trainer each, ``max_steps`` = the segment length). The data order is a pure
function of ``(seed, global step)``, the model has no dropout, and model / optimizer / scheduler
states are saved at segment ends, so a resumed run reproduces an uninterrupted one exactly.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ntl import NumberVocab, gaussian_number_targets, number_token_loss
from ntl.hf import ntl_compute_loss_func, shift_labels

__all__ = [
    "LOSSES",
    "Example",
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


def _gaussian_ce_loss(
    vocab: NumberVocab, sigma: float, ntl_weight: float, causal: bool
) -> Callable[..., Tensor]:
    """CE whose targets at digit positions are a Gaussian over the digits (+ optional NTL-WAS).

    Both terms are sums over non-ignored positions divided by ``num_items_in_batch`` (else by the
    micro-batch's non-ignored count): the "tokens" normalisation.
    """

    def compute_loss(
        outputs: Any, labels: Tensor, num_items_in_batch: int | Tensor | None = None
    ) -> Tensor:
        logits = outputs.logits  # (B, T, V)
        labels = labels.to(logits.device)
        if causal:
            labels = shift_labels(labels)
        logp = torch.log_softmax(logits.float(), dim=-1)  # (B, T, V)
        valid = labels != -100  # (B, T)
        q_num = gaussian_number_targets(labels, vocab, sigma)  # (B, T, K)
        is_num = q_num.sum(-1) > 0  # (B, T)
        ids = vocab.token_ids.to(logits.device)
        hard = -logp.gather(-1, labels.clamp_min(0).unsqueeze(-1)).squeeze(-1)  # (B, T)
        soft = -(q_num * logp.index_select(-1, ids)).sum(-1)  # (B, T)
        per_pos = torch.where(is_num, soft, hard) * valid
        denom = (
            torch.as_tensor(num_items_in_batch, dtype=logp.dtype, device=logp.device)
            if num_items_in_batch is not None
            else valid.sum().clamp_min(1).to(logp.dtype)
        )
        loss = per_pos.sum() / denom
        if ntl_weight:
            loss = (
                loss
                + ntl_weight
                * number_token_loss(logits, labels, vocab, kind="was", reduction="sum")
                / denom
            )
        return loss

    return compute_loss


def make_loss(
    loss: str, vocab: NumberVocab, ntl_weight: float, sigma: float, causal: bool
) -> Callable[..., Tensor]:
    """The ``compute_loss_func`` of a loss variant (see :data:`LOSSES`)."""
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if loss == "ce":
        return ntl_compute_loss_func(vocab, kind="was", ntl_weight=0.0, causal=causal)
    if loss.startswith("ntl-"):
        kind = loss.removeprefix("ntl-")
        return ntl_compute_loss_func(vocab, kind=kind, ntl_weight=ntl_weight, causal=causal)
    return _gaussian_ce_loss(vocab, sigma, ntl_weight if "ntl" in loss else 0.0, causal)


def make_optimizer(
    model: torch.nn.Module, lr: float, weight_decay: float, warmup_steps: int, max_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW + linear warm-up and linear decay to 0 at ``max_steps``."""
    from transformers import get_linear_schedule_with_warmup

    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
    scheduler = get_linear_schedule_with_warmup(optimizer, warmup_steps, max_steps)
    return optimizer, scheduler


def train_segment(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LambdaLR,
    dataset: StepStream,
    collate: Callable[[Sequence[Any]], dict[str, Tensor]],
    compute_loss_func: Callable[..., Tensor] | None,
    *,
    first_step: int,
    log_every: int,
    work_dir: Path,
    seed: int,
) -> dict[int, dict[str, float]]:
    """Train ``dataset.end - dataset.start`` steps with a fresh ``transformers.Trainer``.

    Returns ``{global step: {"losses/train", "losses/grad_norm", "charts/learning_rate"}}`` for the
    steps the Trainer logged (every ``log_every`` steps of the segment).
    """
    from transformers import PrinterCallback, Trainer, TrainerCallback, TrainingArguments

    steps = dataset.end - dataset.start
    logged: dict[int, dict[str, float]] = {}

    class _Collect(TrainerCallback):
        def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kw: Any) -> None:
            if logs and "loss" in logs:
                row = {"losses/train": float(logs["loss"])}
                if "grad_norm" in logs:
                    row["losses/grad_norm"] = float(logs["grad_norm"])
                if "learning_rate" in logs:
                    row["charts/learning_rate"] = float(logs["learning_rate"])
                logged[first_step + int(state.global_step)] = row

    args = TrainingArguments(
        output_dir=str(work_dir),
        max_steps=steps,
        per_device_train_batch_size=dataset.batch_size,
        logging_strategy="steps",
        logging_steps=log_every,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        remove_unused_columns=False,
        seed=seed,
        max_grad_norm=1.0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=dataset,
        data_collator=collate,
        compute_loss_func=compute_loss_func,
        optimizers=(optimizer, scheduler),
        callbacks=[_Collect()],
    )
    trainer.remove_callback(PrinterCallback)  # rows are our output; no log dicts on stdout
    trainer.train()
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
    compute_loss_func: Callable[..., Tensor] | None,
    evaluate: Callable[[], dict[str, float]],
    seed: int,
    batch_size: int,
    max_steps: int,
    log_every: int,
    eval_every: int,
    checkpoint_every: int,
    run_dir: Path,
    config_record: dict[str, Any],
) -> Iterator[dict[str, Any]]:
    """The resumable training loop shared by the experiments; yields metric rows.

    Segments end at multiples of ``eval_every`` and ``checkpoint_every`` and at ``max_steps``.
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
            first_step=step,
            log_every=log_every,
            work_dir=run_dir / "trainer",
            seed=seed,
        )
        step = boundary
        if step % eval_every == 0 or step == max_steps:
            logged.setdefault(step, {}).update(evaluate())
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
