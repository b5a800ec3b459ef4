"""The paper's mathematics experiment: T5 (or a decoder-only LM) on DeepMind arithmetic questions.

Trains with the loop of :mod:`ntl.experiments.training` (NTL divided by the number-token
targets of each optimiser step, exact under gradient accumulation) and one of the loss variants
of :data:`ntl.experiments.training.LOSSES` (CE, CE + λ·NTL-WAS, CE + λ·NTL-MSE, ...), on a
difficulty level of the generator (``difficulty``), and evaluates greedy answers on held-out
questions of that level and/or the package's interpolation and extrapolation splits with
:func:`ntl.metrics.number_metrics`. The ``laptop-*`` configs are the CPU recipe of
docs/ntl_recipe.md.

    python -m ntl.experiments.arith --config laptop-ntl-was --seed 0 --out /tmp/arith-ntl-was-0

Rows: ``losses/train`` every ``log_every`` steps; at every ``eval_every`` steps and at the end
``eval/<split>/<metric>`` and ``eval/<split>/<category>/<metric>``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ntl import NumberVocab
from ntl.data.mathematics import (
    PAPER_EXTRAPOLATE_CATEGORIES,
    PAPER_TRAIN_CATEGORIES,
    TRAIN_LEVELS,
    extrapolation_twin,
    generate_many,
)
from ntl.data.tokenizer import digit_tokenizer
from ntl.experiments.evaluation import evaluate_splits
from ntl.experiments.models import ARCHS, ModelSpec, build_model
from ntl.experiments.training import (
    LOSSES,
    Example,
    causal_collate,
    make_loss,
    make_optimizer,
    run_segments,
    seq2seq_collate,
)

__all__ = ["CONFIGS", "EVAL_SPLITS", "ArithConfig", "run"]

EVAL_SPLITS = ("heldout", "interpolate", "extrapolate")
HELDOUT_SEED_OFFSET = 7_919
"""The held-out questions use seed ``data_seed + HELDOUT_SEED_OFFSET`` of the training split."""

QUICK_CATEGORIES = (
    "arithmetic__add_or_sub",
    "arithmetic__add_sub_multiple",
    "numbers__place_value",
    "numbers__round_number",
)


@dataclass
class ArithConfig:
    """Configuration of one arithmetic run."""

    seed: int = 0
    """Seed of the model initialisation, the data order and (unless data_seed) the data."""
    loss: str = "ce"
    """Loss variant: ce, ntl-was, ntl-mse, ntl-mae, ntl-huber, gauss-ce, gauss-ce+ntl-was."""
    ntl_weight: float = 0.3
    """λ of CE + λ·NTL (paper: 0.3)."""
    sigma: float = 1.0
    """Standard deviation of the Gaussian label smoothing over digits (gauss-ce losses)."""
    categories: tuple[str, ...] = QUICK_CATEGORIES
    """Training (and interpolation) categories of the mathematics dataset."""
    extrapolate_categories: tuple[str, ...] | None = None
    """Extrapolation categories; None: the extrapolation twins of `categories` that exist."""
    difficulty: str = "train"
    """Training split of the generator: train (all levels), train-easy, train-medium, train-hard."""
    eval_splits: tuple[str, ...] = ("interpolate", "extrapolate")
    """Evaluated splits: interpolate / extrapolate (the package's test sets) and heldout (new
    questions of the training level and categories, none of them in the training set)."""
    curve_splits: int = 0
    """Splits evaluated at the intermediate evaluations: the first `curve_splits` of
    `eval_splits` (0: all); the final evaluation always covers all of them."""
    train_size: int = 6000
    """Training questions per category."""
    eval_size: int = 150
    """Evaluation questions per category and split."""
    data_seed: int | None = None
    """Seed of the generated questions; None: use `seed`."""
    arch: str = "t5"
    """Model: t5 (encoder-decoder) or causal (decoder-only Llama)."""
    d_model: int = 128
    """Model width."""
    d_ff: int = 512
    """Feed-forward width."""
    num_layers: int = 2
    """Layers (T5: per encoder and per decoder)."""
    num_heads: int = 4
    """Attention heads."""
    max_steps: int = 1200
    """Optimizer steps."""
    batch_size: int = 32
    """Questions per optimiser step."""
    grad_accum: int = 1
    """Micro-batches per optimiser step (the loss is normalised over the whole step)."""
    lr: float = 1e-3
    """Peak learning rate of AdamW."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_steps: int = 60
    """Linear warm-up steps (then linear decay to 0)."""
    log_every: int = 50
    """Log the training loss every this many steps."""
    eval_every: int = 600
    """Evaluate every this many steps (and at the end); a multiple of log_every."""
    checkpoint_every: int = 300
    """Save run_dir/checkpoint.pt every this many steps; a multiple of log_every."""
    eval_batch_size: int = 100
    """Questions per greedy-decoding batch."""
    max_new_tokens: int = 32
    """Longest generated answer (the generator's answers have at most 30 characters)."""
    num_threads: int = 1
    """torch CPU threads (0: leave torch's default)."""


def _check_config(cfg: ArithConfig) -> None:
    if not isinstance(cfg, ArithConfig):
        raise TypeError(f"config must be an ArithConfig, got {type(cfg).__name__}")
    if cfg.loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {cfg.loss!r}")
    if cfg.arch not in ARCHS:
        raise ValueError(f"arch must be one of {ARCHS}, got {cfg.arch!r}")
    for name in ("train_size", "eval_size", "max_steps", "batch_size", "log_every"):
        value = getattr(cfg, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    for name in ("eval_every", "checkpoint_every"):
        value = getattr(cfg, name)
        if not isinstance(value, int) or value < 1 or value % cfg.log_every:
            raise ValueError(
                f"{name} must be a positive multiple of log_every={cfg.log_every}, got {value!r}"
            )
    if cfg.max_steps % cfg.log_every:
        raise ValueError(
            f"max_steps={cfg.max_steps} must be a multiple of log_every={cfg.log_every}"
        )
    if not cfg.categories:
        raise ValueError("categories must not be empty")
    if cfg.difficulty not in TRAIN_LEVELS:
        raise ValueError(f"difficulty must be one of {TRAIN_LEVELS}, got {cfg.difficulty!r}")
    if not cfg.eval_splits or any(s not in EVAL_SPLITS for s in cfg.eval_splits):
        raise ValueError(
            f"eval_splits must be a non-empty subset of {EVAL_SPLITS}, got {cfg.eval_splits!r}"
        )
    if not 0 <= cfg.curve_splits <= len(cfg.eval_splits):
        raise ValueError(
            f"curve_splits must be in [0, {len(cfg.eval_splits)}], got {cfg.curve_splits!r}"
        )
    if (
        isinstance(cfg.grad_accum, bool)
        or not isinstance(cfg.grad_accum, int)
        or not (1 <= cfg.grad_accum <= cfg.batch_size)
    ):
        raise ValueError(f"grad_accum must be an int in [1, batch_size], got {cfg.grad_accum!r}")
    if cfg.ntl_weight < 0 or cfg.lr <= 0 or cfg.sigma <= 0:
        raise ValueError(
            f"need ntl_weight >= 0, lr > 0, sigma > 0; got {cfg.ntl_weight}, {cfg.lr}, {cfg.sigma}"
        )


def _extrapolate(cfg: ArithConfig) -> tuple[str, ...]:
    if cfg.extrapolate_categories is not None:
        return tuple(cfg.extrapolate_categories)
    twins: list[str] = []
    for category in cfg.categories:
        try:
            twins.append(extrapolation_twin(category))
        except ValueError:
            continue
    return tuple(dict.fromkeys(twins))


def _config_record(cfg: ArithConfig) -> dict[str, Any]:
    """The config as plain lists / scalars (storable with weights_only checkpoints)."""
    record = dataclasses.asdict(cfg)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in record.items()}


def _encode(tokenizer: Any, pairs: list[tuple[str, str]], arch: str) -> list[Example]:
    add_eos_to_input = arch == "t5"
    qs = tokenizer([q for q, _ in pairs], add_special_tokens=add_eos_to_input)["input_ids"]
    ans = tokenizer([a for _, a in pairs])["input_ids"]  # answers end with </s>
    return list(zip(qs, ans))


def _data(
    cfg: ArithConfig, data_seed: int
) -> tuple[list[tuple[str, str]], dict[str, dict[str, list[tuple[str, str]]]]]:
    """The training pairs and ``{split: {category: pairs}}`` of the evaluated splits.

    All generated in one generator process. Held-out questions come from the training level with
    another seed; the ones that also occur in the training set are dropped (so a held-out set may
    have fewer than ``eval_size`` questions where the level has few distinct questions).
    """
    requests = [(c, cfg.train_size, data_seed, cfg.difficulty) for c in cfg.categories]
    split_cats: dict[str, tuple[str, ...]] = {}
    for split in cfg.eval_splits:
        split_cats[split] = _extrapolate(cfg) if split == "extrapolate" else tuple(cfg.categories)
        for c in split_cats[split]:
            if split == "heldout":
                requests.append((c, cfg.eval_size, data_seed + HELDOUT_SEED_OFFSET, cfg.difficulty))
            else:
                requests.append((c, cfg.eval_size, data_seed, split))
    generated = generate_many(requests)  # one generator process
    k = len(cfg.categories)
    train_pairs = [p for pairs in generated[:k] for p in pairs]
    seen = {q for q, _ in train_pairs}
    eval_data: dict[str, dict[str, list[tuple[str, str]]]] = {}
    rest = iter(generated[k:])
    for split in cfg.eval_splits:
        eval_data[split] = {}
        for c in split_cats[split]:
            pairs = next(rest)
            if split == "heldout":
                pairs = [p for p in pairs if p[0] not in seen]
            if pairs:
                eval_data[split][c] = pairs
    return train_pairs, eval_data


def run(config: ArithConfig, run_dir: Path) -> Iterator[dict[str, Any]]:
    """Train and evaluate; yields metric rows; resumes from ``run_dir / "checkpoint.pt"``."""
    _check_config(config)
    run_dir = Path(run_dir)
    cfg = config
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    tokenizer = digit_tokenizer()
    vocab = NumberVocab.from_tokenizer(tokenizer, vocab_size=len(tokenizer))
    data_seed = cfg.seed if cfg.data_seed is None else cfg.data_seed
    train_pairs, eval_data = _data(cfg, data_seed)
    curve_data = {s: eval_data[s] for s in cfg.eval_splits[: cfg.curve_splits]}
    examples = _encode(tokenizer, train_pairs, cfg.arch)
    spec = ModelSpec(cfg.arch, len(tokenizer), cfg.d_model, cfg.d_ff, cfg.num_layers, cfg.num_heads)
    model = build_model(spec, cfg.seed)
    optimizer, scheduler = make_optimizer(
        model, cfg.lr, cfg.weight_decay, cfg.warmup_steps, cfg.max_steps
    )
    causal = cfg.arch == "causal"
    loss_fn = make_loss(cfg.loss, vocab, cfg.ntl_weight, cfg.sigma, causal)
    collate = causal_collate if causal else seq2seq_collate

    yield from run_segments(
        model=model,
        optimizer=optimizer,
        scheduler=scheduler,
        examples=examples,
        collate=collate,
        compute_loss_func=loss_fn,
        evaluate=lambda final: evaluate_splits(
            model,
            tokenizer,
            eval_data if final or not cfg.curve_splits else curve_data,
            arch=cfg.arch,
            batch_size=cfg.eval_batch_size,
            max_new_tokens=cfg.max_new_tokens,
        ),
        seed=cfg.seed,
        batch_size=cfg.batch_size,
        max_steps=cfg.max_steps,
        log_every=cfg.log_every,
        eval_every=cfg.eval_every,
        checkpoint_every=cfg.checkpoint_every,
        run_dir=run_dir,
        config_record=_config_record(cfg),
        grad_accum=cfg.grad_accum,
    )


def _quick(loss: str, **kw: Any) -> ArithConfig:
    return ArithConfig(loss=loss, **kw)


def _paper(loss: str) -> ArithConfig:
    """T5-small-sized, the 13 training / 7 extrapolation categories: a GPU run."""
    return ArithConfig(
        loss=loss,
        categories=PAPER_TRAIN_CATEGORIES,
        extrapolate_categories=PAPER_EXTRAPOLATE_CATEGORIES,
        train_size=200_000,
        eval_size=1000,
        d_model=512,
        d_ff=2048,
        num_layers=6,
        num_heads=8,
        max_steps=100_000,
        batch_size=128,
        lr=5e-4,
        warmup_steps=2000,
        log_every=100,
        eval_every=10_000,
        checkpoint_every=2000,
        eval_batch_size=500,
        num_threads=0,
    )


LAPTOP_CATEGORIES = (
    "numbers__place_value",
    "numbers__round_number",
    "arithmetic__add_sub_multiple",
)


def _laptop(loss: str, **kw: Any) -> ArithConfig:
    """The laptop recipe (docs/ntl_recipe.md): a small T5 on three of the paper's categories at
    the generator's train-easy level; ~1,000 steps take 2-3 CPU-minutes on one idle core."""
    base: dict[str, Any] = dict(
        loss=loss,
        categories=LAPTOP_CATEGORIES,
        difficulty="train-easy",
        eval_splits=("heldout", "interpolate"),
        curve_splits=1,
        train_size=8000,
        eval_size=100,
        arch="t5",
        d_model=128,
        d_ff=512,
        num_layers=2,
        num_heads=4,
        max_steps=1000,
        batch_size=32,
        lr=3e-3,
        warmup_steps=50,
        log_every=50,
        eval_every=200,
        checkpoint_every=200,
        max_new_tokens=16,
    )
    return ArithConfig(**{**base, **kw})


LAPTOP2_CATEGORIES = (
    "numbers__place_value",
    "numbers__round_number",
    "numbers__div_remainder",
)


def _laptop2(loss: str, **kw: Any) -> ArithConfig:
    """The second laptop recipe (docs/ntl_recipe.md, "Recipe 2"): the decoder-only model of the
    issue's measurement on three of the paper's numbers categories at train-easy, trained 3,600
    steps (the learning bar's 15 CPU-minutes on one core, evaluations included: ~0.24 CPU-s per
    step) with a schedule sized to the run. Candidate X of the search ran the same settings for
    3,000 steps."""
    base: dict[str, Any] = dict(
        loss=loss,
        categories=LAPTOP2_CATEGORIES,
        difficulty="train-easy",
        eval_splits=("heldout", "interpolate"),
        curve_splits=1,
        train_size=15000,
        eval_size=100,
        arch="causal",
        d_model=128,
        d_ff=512,
        num_layers=4,
        num_heads=4,
        max_steps=3600,
        batch_size=32,
        lr=2e-3,
        warmup_steps=100,
        log_every=50,
        eval_every=250,
        checkpoint_every=250,
        max_new_tokens=16,
    )
    return ArithConfig(**{**base, **kw})


def _laptop3(loss: str, **kw: Any) -> ArithConfig:
    """The third laptop recipe (docs/ntl_recipe.md, "Fourth round"): ``laptop2`` with 40,000
    training questions per category instead of 15,000, so the 3,600 x 32 questions of a run are
    (almost) all distinct (one pass instead of 2.6 epochs); otherwise identical."""
    return _laptop2(loss, **{"train_size": 40_000, **kw})


_COMPARISON: tuple[tuple[str, str, dict[str, Any]], ...] = (
    ("ce", "ce", {}),
    ("ntl-was", "ntl-was", {}),
    ("ntl-mse", "ntl-mse", {}),
    ("gauss-ce", "gauss-ce", {}),
    ("gauss-ce+ntl-was", "gauss-ce+ntl-was", {}),
    ("ntl-was-0.1", "ntl-was", {"ntl_weight": 0.1}),
    ("ntl-was-0.8", "ntl-was", {"ntl_weight": 0.8}),
    ("ntl-was-2.0", "ntl-was", {"ntl_weight": 2.0}),
)
"""The issue's comparison for each laptop recipe: (name suffix, loss, overrides)."""


def _recipe(prefix: str, make: Callable[..., ArithConfig]) -> dict[str, ArithConfig]:
    return {f"{prefix}-{name}": make(loss, **kw) for name, loss, kw in _COMPARISON}


CONFIGS: dict[str, ArithConfig] = {
    **_recipe("laptop", _laptop),
    **_recipe("laptop2", _laptop2),
    **_recipe("laptop3", _laptop3),
    "ce": _quick("ce"),
    "ntl-was": _quick("ntl-was"),
    "ntl-mse": _quick("ntl-mse"),
    "gauss-ce": _quick("gauss-ce"),
    "gauss-ce+ntl-was": _quick("gauss-ce+ntl-was"),
    "causal-ce": _quick("ce", arch="causal"),
    "causal-ntl-was": _quick("ntl-was", arch="causal"),
    "paper-ce": _paper("ce"),
    "paper-ntl-was": _paper("ntl-was"),
    "paper-ntl-mse": _paper("ntl-mse"),
}


def main(argv: list[str] | None = None) -> None:
    """Minimal entry point: run one named config and append its rows to ``OUT/metrics.jsonl``."""
    import argparse
    import json

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--config", default="ce", choices=sorted(CONFIGS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--max-steps", type=int, default=None)
    args = parser.parse_args(argv)
    cfg = dataclasses.replace(CONFIGS[args.config], seed=args.seed)
    if args.max_steps is not None:
        cfg.max_steps = args.max_steps
    _append_rows(run(cfg, args.out), args.out / "metrics.jsonl", json.dumps)


def _append_rows(rows: Iterator[dict[str, Any]], path: Path, dumps: Any) -> None:
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    last = -1
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                last = max(last, int(json.loads(line)["step"]))
    with path.open("a") as fh:
        for row in rows:
            if row["step"] > last:
                fh.write(dumps(row) + "\n")
                fh.flush()
                last = row["step"]
                print({k: v for k, v in row.items() if k.count("/") < 3}, flush=True)


if __name__ == "__main__":
    main()


# What the experiment runner needs to know, as plain data (DESIGN.md convention 11).
PROTOCOL: dict[str, Any] = {
    "score": "eval/interpolate/accuracy",
    "score_per": "run",
    "progress_unit": "optimiser step",
    "progress_total": lambda config: config.max_steps,
    "validate": _check_config,
    "checkpoint": "checkpoint.pt",
}
