"""The paper's regression comparison on a real tabular data set: text -> number.

scikit-learn's bundled diabetes data set (442 patients, 10 features, target: disease
progression after one year, an integer 25..346; no download) is rendered as text, e.g.
``"age 59 sex 2 bmi 32.1 bp 101 s1 157 s2 93.2 s3 38 s4 4 s5 4.86 s6 87"`` -> ``"151"``.
Three models share one encoder architecture:

- ``"ce"``: T5 generating the digits, cross-entropy;
- ``"ntl-was"``: the same with CE + λ·NTL-WAS (λ = 2.0 as in the paper's regression task);
- ``"regression-head"``: the T5 encoder, mean-pooled, with a linear head trained with MSE on
  the standardised target.

    python -m ntl.experiments.regression --config ntl-was --seed 0 --out /tmp/reg-ntl-was-0

Rows: ``losses/train`` and, at evaluations, ``regression/<metric>`` (rmse, r2, mae, median_ae,
accuracy, invalid_rate) on the held-out test split.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ntl import NumberVocab
from ntl.data.tokenizer import digit_tokenizer
from ntl.experiments.evaluation import greedy_decode
from ntl.experiments.models import ModelSpec, build_model
from ntl.experiments.training import make_loss, make_optimizer, run_segments, seq2seq_collate
from ntl.metrics import number_metrics

__all__ = ["CONFIGS", "RegressionConfig", "diabetes_text", "run"]

METHODS = ("ce", "ntl-was", "regression-head")


@dataclass
class RegressionConfig:
    """Configuration of one regression run."""

    seed: int = 0
    """Seed of the model initialisation, the train/test split and the data order."""
    method: str = "ce"
    """ce, ntl-was (CE + λ·NTL-WAS on the answer digits) or regression-head."""
    ntl_weight: float = 2.0
    """λ of the ntl-was method (paper's regression task: 2.0)."""
    test_fraction: float = 0.2
    """Held-out fraction of the 442 rows."""
    d_model: int = 64
    """Model width."""
    d_ff: int = 256
    """Feed-forward width."""
    num_layers: int = 2
    """Encoder (and decoder) layers."""
    num_heads: int = 4
    """Attention heads."""
    max_steps: int = 300
    """Optimizer steps."""
    batch_size: int = 32
    """Rows per step."""
    lr: float = 1e-3
    """Peak AdamW learning rate."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_steps: int = 50
    """Linear warm-up steps (then linear decay to 0)."""
    log_every: int = 50
    """Log the training loss every this many steps."""
    eval_every: int = 300
    """Evaluate every this many steps (a multiple of log_every)."""
    checkpoint_every: int = 150
    """Save run_dir/checkpoint.pt every this many steps (a multiple of log_every)."""
    num_threads: int = 1
    """torch CPU threads (0: leave torch's default)."""


def _format_value(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.2f}".rstrip("0").rstrip(".")


def diabetes_text() -> list[tuple[str, str]]:
    """The 442 rows of ``sklearn.datasets.load_diabetes(scaled=False)`` as (text, target) pairs."""
    from sklearn.datasets import load_diabetes

    data = load_diabetes(scaled=False)
    names = list(data.feature_names)
    pairs = []
    for row, target in zip(np.asarray(data.data), np.asarray(data.target)):
        text = " ".join(f"{n} {_format_value(float(v))}" for n, v in zip(names, row))
        pairs.append((text, _format_value(float(target))))
    return pairs


class EncoderRegressor(nn.Module):
    """T5 encoder -> masked mean pool -> linear: one scalar per input, ``logits`` (B,)."""

    def __init__(self, encoder: nn.Module, d_model: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(d_model, 1)

    def forward(self, input_ids: Tensor, attention_mask: Tensor, **_: Any) -> dict[str, Tensor]:
        hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, S, 1)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1)  # (B, D)
        return {"logits": self.head(pooled).squeeze(-1)}  # (B,)


class _MSELoss:
    """Mean squared error of the head's output; the count is the rows of the step."""

    def __call__(
        self,
        outputs: Any,
        labels: Tensor,
        num_items_in_batch: int | Tensor | None = None,
        num_number_items_in_batch: int | Tensor | None = None,
    ) -> Tensor:
        pred = outputs["logits"]  # (B,)
        total = (pred - labels.to(pred.dtype)).square().sum()
        denom = labels.numel() if num_items_in_batch is None else num_items_in_batch
        return total / torch.as_tensor(denom, dtype=pred.dtype, device=pred.device)

    def count(self, labels: Tensor) -> tuple[int, int]:
        return labels.numel(), 0


def _head_collate(batch: Sequence[tuple[list[int], float]]) -> dict[str, Tensor]:
    width = max(len(x) for x, _ in batch)
    ids = torch.zeros((len(batch), width), dtype=torch.long)  # (B, S)
    mask = torch.zeros((len(batch), width), dtype=torch.long)  # (B, S)
    for i, (x, _) in enumerate(batch):
        ids[i, : len(x)] = torch.as_tensor(x)
        mask[i, : len(x)] = 1
    labels = torch.tensor([y for _, y in batch], dtype=torch.float32)  # (B,)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def _check_config(cfg: RegressionConfig) -> None:
    if not isinstance(cfg, RegressionConfig):
        raise TypeError(f"config must be a RegressionConfig, got {type(cfg).__name__}")
    if cfg.method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {cfg.method!r}")
    if not 0.0 < cfg.test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {cfg.test_fraction!r}")
    for name in ("max_steps", "batch_size", "log_every"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    for name in ("eval_every", "checkpoint_every", "max_steps"):
        value = getattr(cfg, name)
        if value % cfg.log_every:
            raise ValueError(f"{name} must be a multiple of log_every={cfg.log_every}, got {value}")


def run(config: RegressionConfig, run_dir: Path) -> Iterator[dict[str, Any]]:
    """Train one method; yields rows; resumes from ``run_dir / "checkpoint.pt"``."""
    _check_config(config)
    cfg = config
    run_dir = Path(run_dir)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    tokenizer = digit_tokenizer()
    pairs = diabetes_text()
    order = np.random.default_rng(cfg.seed).permutation(len(pairs))
    n_test = round(cfg.test_fraction * len(pairs))
    test = [pairs[i] for i in order[:n_test]]
    train = [pairs[i] for i in order[n_test:]]
    spec = ModelSpec("t5", len(tokenizer), cfg.d_model, cfg.d_ff, cfg.num_layers, cfg.num_heads)
    seq2seq = build_model(spec, cfg.seed)
    questions = [q for q, _ in test]
    targets = [a for _, a in test]
    inputs = tokenizer([q for q, _ in train])["input_ids"]

    if cfg.method == "regression-head":
        y = np.array([float(a) for _, a in train])
        mean, std = float(y.mean()), float(y.std())
        regressor = EncoderRegressor(seq2seq.get_encoder(), cfg.d_model)
        torch.manual_seed(cfg.seed)  # the head's init; the encoder comes from build_model
        regressor.head.reset_parameters()
        model: nn.Module = regressor
        examples: list[Any] = [(x, (float(a) - mean) / std) for x, (_, a) in zip(inputs, train)]
        collate: Any = _head_collate
        loss_fn: Any = _MSELoss()

        def evaluate(final: bool = True) -> dict[str, float]:
            model.eval()
            with torch.no_grad():
                batch = _head_collate([(x, 0.0) for x in tokenizer(questions)["input_ids"]])
                pred = model(batch["input_ids"], batch["attention_mask"])["logits"] * std + mean
            model.train()
            preds = [f"{float(p):.3f}" for p in pred]
            return {f"regression/{k}": v for k, v in number_metrics(preds, targets).items()}

    else:
        model = seq2seq
        vocab = NumberVocab.from_tokenizer(tokenizer, vocab_size=len(tokenizer))
        weight = cfg.ntl_weight if cfg.method == "ntl-was" else 0.0
        loss_fn = make_loss("ntl-was" if weight else "ce", vocab, weight, 1.0, causal=False)
        examples = list(zip(inputs, tokenizer([a for _, a in train])["input_ids"]))
        collate = seq2seq_collate

        def evaluate(final: bool = True) -> dict[str, float]:
            preds = greedy_decode(model, tokenizer, questions, arch="t5", max_new_tokens=8)
            return {f"regression/{k}": v for k, v in number_metrics(preds, targets).items()}

    optimizer, scheduler = make_optimizer(
        model, cfg.lr, cfg.weight_decay, cfg.warmup_steps, cfg.max_steps
    )
    yield from run_segments(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        examples=examples,
        collate=collate,
        compute_loss_func=loss_fn,
        evaluate=evaluate,
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        max_steps=cfg.max_steps,
        log_every=cfg.log_every,
        eval_every=cfg.eval_every,
        checkpoint_every=cfg.checkpoint_every,
        run_dir=run_dir,
        config_record=dataclasses.asdict(cfg),
    )


CONFIGS: dict[str, RegressionConfig] = {m: RegressionConfig(method=m) for m in METHODS}


def main(argv: list[str] | None = None) -> None:
    """Minimal entry point: run one named config, append rows to ``OUT/metrics.jsonl``."""
    import argparse
    import json

    from ntl.experiments.arith import _append_rows

    parser = argparse.ArgumentParser(description="NTL regression comparison (diabetes)")
    parser.add_argument("--config", default="ce", choices=sorted(CONFIGS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    cfg = dataclasses.replace(CONFIGS[args.config], seed=args.seed)
    _append_rows(run(cfg, args.out), args.out / "metrics.jsonl", json.dumps)


if __name__ == "__main__":
    main()


# What the experiment runner needs to know, as plain data (DESIGN.md convention 11).
PROTOCOL: dict[str, Any] = {
    "score": "regression/r2",
    "score_per": "run",
    "progress_unit": "optimiser step",
    "progress_total": lambda config: config.max_steps,
    "validate": _check_config,
    "checkpoint": "checkpoint.pt",
}
