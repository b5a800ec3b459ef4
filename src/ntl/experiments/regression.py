"""The paper's regression comparison: a tabular regression task rendered as text -> number.

Two data sets (``RegressionConfig.dataset``), no downloads:

- ``"friedman1"``: ``sklearn.datasets.make_friedman1`` (``y = 10 sin(pi x1 x2) + 20 (x3 - 1/2)^2
  + 10 x4 + 5 x5 + noise``, features uniform on [0, 1], the rest of them irrelevant), features
  rendered with a fixed number of decimals, e.g. ``"0.37 0.95 0.73 0.60 0.16"`` -> ``"14.2"``;
- ``"diabetes"``: scikit-learn's bundled diabetes data (442 patients, 10 features, an integer
  target 25..346), e.g. ``"age 59 sex 2 bmi 32.1 bp 101 ..."`` -> ``"151"`` (too small for a
  transformer to learn from: see docs/ntl_regression.md).

Three models share one encoder architecture:

- ``"ce"``: T5 generating the target's characters, cross-entropy;
- ``"ntl-was"``: the same with CE + λ·NTL-WAS (NTL divided by the number tokens);
- ``"regression-head"``: the T5 encoder, mean-pooled, with a linear head trained with MSE on
  the standardised target.

Every evaluation also reports scikit-learn baselines fitted on the *same split* of the same
rendered feature values (``baseline/gbr_r2``: ``GradientBoostingRegressor``,
``baseline/linear_r2``: ``LinearRegression``) and ``regression/r2_over_gbr``.

    python -m ntl.experiments.regression --config f1-head --seed 0 --out /tmp/reg-f1-head-0

Rows: ``losses/train`` and, at evaluations, ``regression/<metric>`` (:func:`ntl.metrics.
number_metrics` on the held-out test split: r2, rmse, mae, median_ae, log_ae, within_1pct, ...)
and ``baseline/<name>``.
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

__all__ = [
    "CONFIGS",
    "RegressionConfig",
    "Table",
    "diabetes_text",
    "friedman1_table",
    "make_split",
    "run",
    "sklearn_baselines",
]

METHODS = ("ce", "ntl-was", "regression-head")
DATASETS = ("diabetes", "friedman1")


@dataclass
class RegressionConfig:
    """Configuration of one regression run."""

    seed: int = 0
    """Seed of the data draw (friedman1), the train/test split, the model init and data order."""
    method: str = "ce"
    """ce, ntl-was (CE + λ·NTL-WAS on the answer digits) or regression-head."""
    ntl_weight: float = 2.0
    """λ of the ntl-was method (paper's regression task: 2.0)."""
    dataset: str = "diabetes"
    """diabetes (442 rows, bundled) or friedman1 (sklearn.datasets.make_friedman1)."""
    n_rows: int = 5000
    """friedman1: rows drawn (train + test)."""
    n_features: int = 5
    """friedman1: features (>= 5; only the first 5 carry signal)."""
    noise: float = 0.0
    """friedman1: standard deviation of the Gaussian noise added to the target."""
    feature_decimals: int = 2
    """friedman1: decimals of each rendered feature ("0.37")."""
    target_decimals: int = 1
    """friedman1: decimals of the rendered target ("14.2"); the LM methods generate it."""
    test_fraction: float = 0.2
    """Held-out fraction of the rows."""
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


@dataclass(frozen=True)
class Table:
    """Rows of a regression data set: rendered text, the feature values it shows, the target.

    ``x`` (N, F) holds exactly the values the text shows (rounded as rendered), ``targets`` the
    rendered target strings and ``y`` (N,) their values, so the scikit-learn baselines see the
    same information as the language models.
    """

    texts: list[str]
    targets: list[str]
    x: np.ndarray
    y: np.ndarray

    def subset(self, index: np.ndarray) -> Table:
        """The rows ``index`` (in that order)."""
        idx = [int(i) for i in index]
        return Table(
            [self.texts[i] for i in idx], [self.targets[i] for i in idx], self.x[idx], self.y[idx]
        )


def _format_value(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else f"{x:.2f}".rstrip("0").rstrip(".")


def diabetes_text() -> list[tuple[str, str]]:
    """The 442 rows of ``sklearn.datasets.load_diabetes(scaled=False)`` as (text, target) pairs."""
    table = _diabetes_table()
    return list(zip(table.texts, table.targets))


def _diabetes_table() -> Table:
    from sklearn.datasets import load_diabetes

    data = load_diabetes(scaled=False)
    names = list(data.feature_names)
    texts, targets, rows = [], [], []
    for row, target in zip(np.asarray(data.data), np.asarray(data.target)):
        shown = [_format_value(float(v)) for v in row]
        texts.append(" ".join(f"{n} {v}" for n, v in zip(names, shown)))
        targets.append(_format_value(float(target)))
        rows.append([float(v) for v in shown])
    return Table(texts, targets, np.array(rows), np.array([float(t) for t in targets]))


def friedman1_table(
    n_rows: int,
    n_features: int = 5,
    noise: float = 0.0,
    seed: int = 0,
    feature_decimals: int = 2,
    target_decimals: int = 1,
) -> Table:
    """``make_friedman1(n_rows, n_features, noise, random_state=seed)`` rendered as text.

    Each row is its features with ``feature_decimals`` decimals, separated by spaces
    (``"0.37 0.95 0.73 0.60 0.16"``: fixed width, so a feature's position names it); the target
    is ``y`` with ``target_decimals`` decimals (``"14.2"``).
    """
    from sklearn.datasets import make_friedman1

    if isinstance(n_rows, bool) or not isinstance(n_rows, int) or n_rows < 10:
        raise ValueError(f"n_rows must be an int >= 10, got {n_rows!r}")
    if isinstance(n_features, bool) or not isinstance(n_features, int) or n_features < 5:
        raise ValueError(f"n_features must be an int >= 5, got {n_features!r}")
    if not noise >= 0.0:
        raise ValueError(f"noise must be >= 0, got {noise!r}")
    for name, value in (
        ("feature_decimals", feature_decimals),
        ("target_decimals", target_decimals),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 6:
            raise ValueError(f"{name} must be an int in [0, 6], got {value!r}")
    x, y = make_friedman1(n_samples=n_rows, n_features=n_features, noise=noise, random_state=seed)
    texts = [" ".join(f"{v:.{feature_decimals}f}" for v in row) for row in x]
    targets = [f"{v:.{target_decimals}f}" for v in y]
    shown_x = np.array([[float(v) for v in t.split()] for t in texts])  # (N, F)
    return Table(texts, targets, shown_x, np.array([float(t) for t in targets]))


def make_split(cfg: RegressionConfig) -> tuple[Table, Table]:
    """``(train, test)`` of ``cfg``'s data set; the split is a permutation by ``cfg.seed``."""
    if cfg.dataset == "diabetes":
        table = _diabetes_table()
    else:
        table = friedman1_table(
            cfg.n_rows,
            cfg.n_features,
            cfg.noise,
            cfg.seed,
            cfg.feature_decimals,
            cfg.target_decimals,
        )
    order = np.random.default_rng(cfg.seed).permutation(len(table.texts))
    n_test = round(cfg.test_fraction * len(order))
    return table.subset(order[n_test:]), table.subset(order[:n_test])


def sklearn_baselines(train: Table, test: Table, seed: int) -> dict[str, float]:
    """Test R² of ``GradientBoostingRegressor`` (default settings, ``random_state=seed``) and
    ``LinearRegression`` fitted on ``train``'s rendered feature values and targets."""
    from sklearn.ensemble import GradientBoostingRegressor
    from sklearn.linear_model import LinearRegression

    gbr = GradientBoostingRegressor(random_state=seed).fit(train.x, train.y)
    linear = LinearRegression().fit(train.x, train.y)
    return {
        "baseline/gbr_r2": float(gbr.score(test.x, test.y)),
        "baseline/linear_r2": float(linear.score(test.x, test.y)),
    }


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
    if cfg.dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {cfg.dataset!r}")
    if not 0.0 < cfg.test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {cfg.test_fraction!r}")
    if not cfg.ntl_weight >= 0.0:
        raise ValueError(f"ntl_weight must be >= 0, got {cfg.ntl_weight!r}")
    for name in ("max_steps", "batch_size", "log_every", "n_rows", "n_features"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    for name in ("eval_every", "checkpoint_every", "max_steps"):
        value = getattr(cfg, name)
        if value % cfg.log_every:
            raise ValueError(f"{name} must be a multiple of log_every={cfg.log_every}, got {value}")
    if cfg.dataset == "friedman1":
        friedman1_table(  # validates n_rows, n_features, noise and the decimals
            10, cfg.n_features, cfg.noise, 0, cfg.feature_decimals, cfg.target_decimals
        )
        if cfg.n_rows < 10:
            raise ValueError(f"n_rows must be an int >= 10, got {cfg.n_rows!r}")


def run(config: RegressionConfig, run_dir: Path) -> Iterator[dict[str, Any]]:
    """Train one method; yields rows; resumes from ``run_dir / "checkpoint.pt"``."""
    _check_config(config)
    cfg = config
    run_dir = Path(run_dir)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    tokenizer = digit_tokenizer()
    train, test = make_split(cfg)
    baselines = sklearn_baselines(train, test, cfg.seed)
    spec = ModelSpec("t5", len(tokenizer), cfg.d_model, cfg.d_ff, cfg.num_layers, cfg.num_heads)
    seq2seq = build_model(spec, cfg.seed)
    inputs = tokenizer(train.texts)["input_ids"]

    def scored(preds: list[str]) -> dict[str, float]:
        row = {f"regression/{k}": v for k, v in number_metrics(preds, test.targets).items()}
        gbr = baselines["baseline/gbr_r2"]  # nan where boosting itself explains nothing
        row["regression/r2_over_gbr"] = row["regression/r2"] / gbr if gbr > 0 else float("nan")
        return {**row, **baselines}

    if cfg.method == "regression-head":
        mean, std = float(train.y.mean()), float(train.y.std())
        regressor = EncoderRegressor(seq2seq.get_encoder(), cfg.d_model)
        torch.manual_seed(cfg.seed)  # the head's init; the encoder comes from build_model
        regressor.head.reset_parameters()
        model: nn.Module = regressor
        examples: list[Any] = [(x, (float(v) - mean) / std) for x, v in zip(inputs, train.y)]
        collate: Any = _head_collate
        loss_fn: Any = _MSELoss()
        test_ids = tokenizer(test.texts)["input_ids"]

        def evaluate(final: bool = True) -> dict[str, float]:
            model.eval()
            preds: list[str] = []
            with torch.no_grad():
                for start in range(0, len(test_ids), 256):
                    batch = _head_collate([(x, 0.0) for x in test_ids[start : start + 256]])
                    out = model(batch["input_ids"], batch["attention_mask"])["logits"]
                    preds += [f"{float(p):.3f}" for p in out * std + mean]
            model.train()
            return scored(preds)

    else:
        model = seq2seq
        vocab = NumberVocab.from_tokenizer(tokenizer, vocab_size=len(tokenizer))
        weight = cfg.ntl_weight if cfg.method == "ntl-was" else 0.0
        loss_fn = make_loss("ntl-was" if weight else "ce", vocab, weight, 1.0, causal=False)
        examples = list(zip(inputs, tokenizer(train.targets)["input_ids"]))
        collate = seq2seq_collate
        max_new = max(len(t) for t in train.targets) + 4

        def evaluate(final: bool = True) -> dict[str, float]:
            preds = greedy_decode(
                model, tokenizer, test.texts, arch="t5", batch_size=256, max_new_tokens=max_new
            )
            return scored(preds)

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


# The friedman1 task (issue 11, point 6): one setting for every method, found by a short search
# (docs/ntl_regression.md); the methods differ in ``method`` / ``ntl_weight`` only.
FRIEDMAN1 = RegressionConfig(
    dataset="friedman1",
    n_rows=5000,
    n_features=5,
    noise=0.0,
    feature_decimals=2,
    target_decimals=1,
    d_model=64,
    d_ff=256,
    num_layers=2,
    num_heads=4,
    max_steps=1000,
    batch_size=64,
    lr=1e-3,
    warmup_steps=100,
    log_every=50,
    eval_every=500,
    checkpoint_every=500,
)

CONFIGS: dict[str, RegressionConfig] = {
    # diabetes (442 rows): the original task, kept for comparison; the models do not learn it
    **{m: RegressionConfig(method=m) for m in METHODS},
    "f1-head": dataclasses.replace(FRIEDMAN1, method="regression-head"),
    "f1-ce": dataclasses.replace(FRIEDMAN1, method="ce"),
    "f1-ntl-was": dataclasses.replace(FRIEDMAN1, method="ntl-was", ntl_weight=0.3),
    **{
        f"f1-ntl-was-{w}": dataclasses.replace(FRIEDMAN1, method="ntl-was", ntl_weight=w)
        for w in (0.1, 0.8, 2.0)
    },
}


def main(argv: list[str] | None = None) -> None:
    """Minimal entry point: run one named config, append rows to ``OUT/metrics.jsonl``."""
    import argparse
    import json

    from ntl.experiments.arith import _append_rows

    parser = argparse.ArgumentParser(description="NTL regression comparison (text -> number)")
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
