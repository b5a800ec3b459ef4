"""Batched greedy decoding and per-split / per-category number metrics."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch

from ntl.metrics import number_metrics

__all__ = ["evaluate_splits", "greedy_decode"]


@torch.no_grad()
def greedy_decode(
    model: Any,
    tokenizer: Any,
    questions: Sequence[str],
    *,
    arch: str,
    batch_size: int = 64,
    max_new_tokens: int = 32,
    sep_id: int = 3,
) -> list[str]:
    """Greedy answers to ``questions`` (``model.generate``, batched, no sampling, one beam).

    ``arch="t5"`` encodes the question (+ ``</s>``); ``arch="causal"`` left-pads
    ``question <sep>`` and continues it. Special tokens are stripped from the output.
    """
    if arch not in ("t5", "causal"):
        raise ValueError(f"arch must be 't5' or 'causal', got {arch!r}")
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    pad = int(tokenizer.pad_token_id)
    answers: list[str] = []
    try:
        for start in range(0, len(questions), batch_size):
            chunk = list(questions[start : start + batch_size])
            if arch == "t5":
                rows = [tokenizer(q)["input_ids"] for q in chunk]
            else:
                rows = [
                    [*tokenizer(q, add_special_tokens=False)["input_ids"], sep_id] for q in chunk
                ]
            width = max(len(r) for r in rows)
            ids = torch.full((len(rows), width), pad, dtype=torch.long)  # (B, S)
            mask = torch.zeros((len(rows), width), dtype=torch.long)  # (B, S)
            for i, r in enumerate(rows):
                if arch == "t5":  # right padding for the encoder
                    ids[i, : len(r)] = torch.as_tensor(r)
                    mask[i, : len(r)] = 1
                else:  # left padding so every row continues from its last token
                    ids[i, width - len(r) :] = torch.as_tensor(r)
                    mask[i, width - len(r) :] = 1
            out = model.generate(
                input_ids=ids.to(device),
                attention_mask=mask.to(device),
                do_sample=False,
                num_beams=1,
                max_new_tokens=max_new_tokens,
            )  # (B, T_out)
            if arch == "causal":
                out = out[:, width:]
            answers.extend(tokenizer.batch_decode(out, skip_special_tokens=True))
    finally:
        model.train(was_training)
    return answers


def evaluate_splits(
    model: Any,
    tokenizer: Any,
    data: Mapping[str, Mapping[str, Sequence[tuple[str, str]]]],
    *,
    arch: str,
    batch_size: int = 64,
    max_new_tokens: int = 32,
) -> dict[str, float]:
    """``{"eval/<split>/<metric>", "eval/<split>/<category>/<metric>"}`` for ``data[split][cat]``.

    The split-level metrics pool all categories of the split.
    """
    row: dict[str, float] = {}
    for split, per_category in data.items():
        if not per_category:
            continue
        all_preds: list[str] = []
        all_targets: list[str] = []
        for category, pairs in per_category.items():
            preds = greedy_decode(
                model,
                tokenizer,
                [q for q, _ in pairs],
                arch=arch,
                batch_size=batch_size,
                max_new_tokens=max_new_tokens,
            )
            targets = [a for _, a in pairs]
            for key, value in number_metrics(preds, targets).items():
                row[f"eval/{split}/{category}/{key}"] = value
            all_preds += preds
            all_targets += targets
        for key, value in number_metrics(all_preds, all_targets).items():
            row[f"eval/{split}/{key}"] = value
    return row
