"""ntl.experiments: losses, collators, data order, tiny end-to-end runs, resume, regression."""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F

from ntl import NumberVocab, number_token_loss
from ntl.data.mathematics import CACHE_ENV, PAPER_TRAIN_CATEGORIES
from ntl.data.tokenizer import digit_tokenizer
from ntl.experiments import arith, regression
from ntl.experiments.evaluation import greedy_decode
from ntl.experiments.models import ModelSpec, build_model
from ntl.experiments.training import (
    LOSSES,
    StepLoss,
    StepStream,
    causal_collate,
    make_loss,
    seq2seq_collate,
)

TINY = dict(
    categories=("arithmetic__add_or_sub",),
    train_size=16,
    eval_size=3,
    d_model=16,
    d_ff=32,
    num_layers=1,
    num_heads=2,
    max_steps=4,
    batch_size=4,
    warmup_steps=1,
    log_every=2,
    eval_every=4,
    checkpoint_every=2,
    eval_batch_size=2,
    max_new_tokens=4,
)


@pytest.fixture(scope="module", autouse=True)
def _cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    old = os.environ.get(CACHE_ENV)
    os.environ[CACHE_ENV] = str(tmp_path_factory.mktemp("ntl-cache"))
    yield
    if old is None:
        del os.environ[CACHE_ENV]
    else:
        os.environ[CACHE_ENV] = old


@pytest.fixture(scope="module")
def tok() -> object:
    return digit_tokenizer()


@pytest.fixture(scope="module")
def vocab(tok: object) -> NumberVocab:
    return NumberVocab.from_tokenizer(tok)


def _batch(vocab: NumberVocab, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(3, 5, vocab.vocab_size, generator=g, dtype=torch.float64)  # (B, T, V)
    labels = torch.randint(0, vocab.vocab_size, (3, 5), generator=g)  # (B, T)
    labels[0, :2] = vocab.token_ids[torch.tensor([3, 7])]  # digit positions for sure
    labels[1, 4] = -100
    labels[2, 3:] = -100
    return logits, labels


def test_ce_loss_is_torch_cross_entropy(vocab: NumberVocab) -> None:
    logits, labels = _batch(vocab)
    out = SimpleNamespace(logits=logits)
    loss = make_loss("ce", vocab, 0.3, 1.0, causal=False)
    ref = F.cross_entropy(logits.reshape(-1, vocab.vocab_size), labels.reshape(-1))
    assert torch.allclose(loss(out, labels), ref)
    ref_sum = F.cross_entropy(
        logits.reshape(-1, vocab.vocab_size), labels.reshape(-1), reduction="sum"
    )
    assert torch.allclose(loss(out, labels, num_items_in_batch=40), ref_sum / 40)


@pytest.mark.parametrize("kind", ["was", "mse"])
def test_ntl_loss_is_ce_plus_weighted_ntl(vocab: NumberVocab, kind: str) -> None:
    logits, labels = _batch(vocab, 1)
    out = SimpleNamespace(logits=logits)
    loss = make_loss(f"ntl-{kind}", vocab, 0.7, 1.0, causal=False)
    n = int((labels != -100).sum())
    ce = F.cross_entropy(logits.reshape(-1, vocab.vocab_size), labels.reshape(-1), reduction="sum")
    ntl = number_token_loss(logits, labels, vocab, kind=kind, reduction="sum")
    m = int(torch.isin(labels, vocab.token_ids).sum())  # the paper: NTL over number tokens
    assert 0 < m < n
    assert torch.allclose(loss(out, labels), ce / n + 0.7 * ntl / m)
    # explicit step-wide denominators (gradient accumulation) replace both counts
    assert torch.allclose(
        loss(out, labels, num_items_in_batch=40, num_number_items_in_batch=9),
        ce / 40 + 0.7 * ntl / 9,
    )
    assert loss.count(labels) == (n, m)


def test_gaussian_ce(vocab: NumberVocab) -> None:
    logits, labels = _batch(vocab, 2)
    out = SimpleNamespace(logits=logits)
    ce = make_loss("ce", vocab, 0.3, 1.0, causal=False)(out, labels)
    # A vanishing sigma puts all target mass on the label: plain CE.
    sharp = make_loss("gauss-ce", vocab, 0.3, 1e-3, causal=False)(out, labels)
    assert torch.allclose(sharp.double(), ce, atol=1e-6)
    # sigma = 1.5 by hand: at digit positions -sum_j q_j log p_j, q_j ∝ exp(-(j - y)^2 / 4.5).
    logp = torch.log_softmax(logits, -1)
    values = vocab.values.double()
    total = 0.0
    for b in range(3):
        for t in range(5):
            y = int(labels[b, t])
            if y == -100:
                continue
            where = (vocab.token_ids == y).nonzero()
            if len(where):
                q = torch.softmax(-((values - values[where[0, 0]]) ** 2) / (2 * 1.5**2), 0)
                total += float(-(q * logp[b, t, vocab.token_ids]).sum())
            else:
                total += float(-logp[b, t, y])
    n = int((labels != -100).sum())
    smooth = make_loss("gauss-ce", vocab, 0.3, 1.5, causal=False)(out, labels)
    assert float(smooth) == pytest.approx(total / n, rel=1e-5)
    both = make_loss("gauss-ce+ntl-was", vocab, 0.3, 1.5, causal=False)(out, labels)
    was = number_token_loss(logits, labels, vocab, kind="was", reduction="sum")
    m = int(torch.isin(labels, vocab.token_ids).sum())
    assert float(both) == pytest.approx(total / n + 0.3 * float(was) / m, rel=1e-5)


@pytest.mark.parametrize("loss_name", ["ce", "ntl-was", "gauss-ce+ntl-was"])
def test_causal_loss_shifts_labels(vocab: NumberVocab, loss_name: str) -> None:
    logits, labels = _batch(vocab, 3)
    out = SimpleNamespace(logits=logits)
    shifted = torch.cat([labels[:, 1:], torch.full((3, 1), -100)], dim=1)
    causal = make_loss(loss_name, vocab, 0.3, 1.0, causal=True)(out, labels)
    plain = make_loss(loss_name, vocab, 0.3, 1.0, causal=False)(out, shifted)
    assert torch.allclose(causal, plain)


def test_make_loss_rejects_unknown(vocab: NumberVocab) -> None:
    with pytest.raises(ValueError, match="loss must be one of"):
        make_loss("ntl-foo", vocab, 0.3, 1.0, causal=False)


def test_collators() -> None:
    batch = [([5, 6, 7, 1], [8, 1]), ([9, 1], [4, 5, 6, 1])]
    s2s = seq2seq_collate(batch)
    assert s2s["input_ids"].tolist() == [[5, 6, 7, 1], [9, 1, 0, 0]]
    assert s2s["attention_mask"].tolist() == [[1, 1, 1, 1], [1, 1, 0, 0]]
    assert s2s["labels"].tolist() == [[8, 1, -100, -100], [4, 5, 6, 1]]
    assert s2s["decoder_input_ids"].tolist() == [[0, 8, 1, 0], [0, 4, 5, 6]]
    causal = causal_collate([([5, 6], [8, 1]), ([9], [4, 5, 1])])
    assert causal["input_ids"].tolist() == [[5, 6, 3, 8, 1], [9, 3, 4, 5, 1]]
    assert causal["labels"].tolist() == [[-100, -100, -100, 8, 1], [-100, -100, 4, 5, 1]]


def test_step_stream_order() -> None:
    examples = list(range(10))
    full = list(StepStream(examples, seed=3, batch_size=4, start=0, end=6))
    parts = list(StepStream(examples, 3, 4, 0, 2)) + list(StepStream(examples, 3, 4, 2, 6))
    assert full == parts and len(full) == 24
    assert sorted(full[:10]) == examples and sorted(full[10:20]) == examples  # epochs
    assert full[:10] != examples  # shuffled
    assert list(StepStream(examples, 4, 4, 0, 6)) != full


@pytest.mark.parametrize("arch", ["t5", "causal"])
def test_greedy_decode_batched_equals_one_by_one(tok: object, arch: str) -> None:
    model = build_model(ModelSpec(arch, len(tok), 16, 32, 1, 2), seed=0)  # type: ignore[arg-type]
    questions = ["1 + 2", "What is 345 - 6?", "7", "Round 0.25 to one dp."]
    batched = greedy_decode(model, tok, questions, arch=arch, batch_size=4, max_new_tokens=5)
    single = [greedy_decode(model, tok, [q], arch=arch, max_new_tokens=5)[0] for q in questions]
    assert batched == single
    assert all(isinstance(a, str) for a in batched)


def _tiny(**kw: object) -> arith.ArithConfig:
    return arith.ArithConfig(**{**TINY, **kw})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("loss", "arch"), [(name, "t5") for name in LOSSES] + [("ntl-was", "causal")]
)
def test_tiny_training_run(tmp_path: Path, loss: str, arch: str) -> None:
    rows = list(arith.run(_tiny(loss=loss, arch=arch), tmp_path))
    assert [r["step"] for r in rows] == [2, 4]
    assert all(math.isfinite(r["losses/train"]) for r in rows)
    final = rows[-1]
    for split, category in [
        ("interpolate", "arithmetic__add_or_sub"),
        ("extrapolate", "arithmetic__add_or_sub_big"),
    ]:
        for metric in ("accuracy", "mae", "invalid_rate", "token_accuracy"):
            assert f"eval/{split}/{metric}" in final
            assert f"eval/{split}/{category}/{metric}" in final
        assert final[f"eval/{split}/count"] == 3.0
    json.dumps(rows)  # rows are JSON-serialisable scalars
    ckpt = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 4


def test_training_reduces_loss(tmp_path: Path) -> None:
    cfg = _tiny(
        loss="ntl-was",
        train_size=8,
        max_steps=40,
        log_every=10,
        eval_every=40,
        checkpoint_every=40,
        lr=3e-3,
        d_model=32,
        d_ff=64,
    )
    rows = list(arith.run(cfg, tmp_path))
    assert rows[-1]["losses/train"] < 0.7 * rows[0]["losses/train"]


def test_resume_gives_identical_rows(tmp_path: Path) -> None:
    cfg = _tiny(loss="ntl-was", max_steps=6, eval_every=2, checkpoint_every=4)
    full = list(arith.run(cfg, tmp_path / "a"))
    seen = []
    gen = arith.run(cfg, tmp_path / "b")
    for row in gen:  # interrupt right after the checkpoint at step 4
        seen.append(row)
        if row["step"] == 4:
            break
    gen.close()
    rest = list(arith.run(cfg, tmp_path / "b"))
    assert rest[0]["step"] <= 4  # the checkpoint's rows come again first
    merged = seen + [r for r in rest if r["step"] > seen[-1]["step"]]
    assert json.dumps(merged) == json.dumps(full)
    # A different config must not silently resume from this checkpoint.
    with pytest.raises(ValueError, match="different config"):
        list(arith.run(dataclasses.replace(cfg, lr=0.5), tmp_path / "b"))


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        (dict(loss="xe"), "loss must be one of"),
        (dict(arch="rnn"), "arch must be one of"),
        (dict(eval_every=3), "multiple of log_every"),
        (dict(max_steps=0), "max_steps must be"),
        (dict(categories=()), "categories must not be empty"),
    ],
)
def test_arith_config_validation(tmp_path: Path, kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        next(arith.run(_tiny(**kw), tmp_path))
    assert not (tmp_path / "checkpoint.pt").exists()


def test_named_configs() -> None:
    assert {"ce", "ntl-was", "ntl-mse", "paper-ce", "paper-ntl-was", "paper-ntl-mse"} <= set(
        arith.CONFIGS
    )
    assert arith.CONFIGS["ntl-was"].loss == "ntl-was" and arith.CONFIGS["ntl-was"].ntl_weight == 0.3
    assert len(arith.CONFIGS["paper-ce"].categories) == 13
    assert len(arith.CONFIGS["paper-ce"].extrapolate_categories or ()) == 7
    assert {"ce", "ntl-was", "regression-head"} <= set(regression.CONFIGS)
    assert regression.CONFIGS["ntl-was"].ntl_weight == 2.0


@pytest.mark.parametrize("recipe", ["laptop2", "laptop3"])
def test_laptop_recipe_configs_exist_and_validate(recipe: str) -> None:
    names = (f"{recipe}-ce", f"{recipe}-ntl-was", f"{recipe}-ntl-mse")
    configs = [arith.CONFIGS[n] for n in names]
    assert [c.loss for c in configs] == ["ce", "ntl-was", "ntl-mse"]
    for cfg in configs:
        arith.PROTOCOL["validate"](cfg)
        assert cfg.ntl_weight == 0.3
        assert set(cfg.categories) <= set(PAPER_TRAIN_CATEGORIES) and len(cfg.categories) >= 3
        assert cfg.difficulty == "train-easy" and cfg.num_threads == 1
        assert cfg.eval_splits[0] == "heldout" and cfg.curve_splits == 1
    # the NTL configs differ from the CE baseline in the loss only
    base = dataclasses.asdict(configs[0])
    for cfg in configs[1:]:
        diff = {k for k, v in dataclasses.asdict(cfg).items() if base[k] != v}
        assert diff == {"loss"}
    # the ablations differ in the loss and/or lambda only
    for name, loss, weight in (
        (f"{recipe}-gauss-ce", "gauss-ce", 0.3),
        (f"{recipe}-gauss-ce+ntl-was", "gauss-ce+ntl-was", 0.3),
        (f"{recipe}-ntl-was-0.1", "ntl-was", 0.1),
        (f"{recipe}-ntl-was-0.8", "ntl-was", 0.8),
        (f"{recipe}-ntl-was-2.0", "ntl-was", 2.0),
    ):
        cfg = arith.CONFIGS[name]
        arith.PROTOCOL["validate"](cfg)
        assert (cfg.loss, cfg.ntl_weight) == (loss, weight)
        diff = {k for k, v in dataclasses.asdict(cfg).items() if base[k] != v}
        assert diff <= {"loss", "ntl_weight"}
    if recipe == "laptop3":  # laptop2 with one pass over fresh questions, nothing else changed
        old = dataclasses.asdict(arith.CONFIGS["laptop2-ce"])
        assert {k for k, v in base.items() if old[k] != v} == {"train_size"}
        assert (
            base["train_size"] * len(configs[0].categories)
            >= base["max_steps"] * base["batch_size"]
        )


def test_diabetes_text(tok: object) -> None:
    pairs = regression.diabetes_text()
    assert len(pairs) == 442
    assert pairs[0][0].startswith("age ")
    assert all(a.isdigit() for _, a in pairs)
    ids = tok([q for q, _ in pairs[:20]])["input_ids"]  # type: ignore[operator]
    assert all(tok.unk_token_id not in row for row in ids)  # type: ignore[attr-defined]


@pytest.mark.parametrize("method", ["ce", "ntl-was", "regression-head"])
def test_regression_smoke(tmp_path: Path, method: str) -> None:
    cfg = regression.RegressionConfig(
        method=method,
        d_model=16,
        d_ff=32,
        num_layers=1,
        num_heads=2,
        max_steps=4,
        log_every=2,
        eval_every=4,
        checkpoint_every=4,
        batch_size=8,
    )
    rows = list(regression.run(cfg, tmp_path))
    assert [r["step"] for r in rows] == [2, 4]
    for key in ("regression/rmse", "regression/r2", "regression/mae", "regression/invalid_rate"):
        assert key in rows[-1]
    if method == "regression-head":
        assert rows[-1]["regression/invalid_rate"] == 0.0
        assert math.isfinite(rows[-1]["regression/rmse"])


def test_report_table(tmp_path: Path) -> None:
    from ntl.experiments.report import final_values, format_table

    for config, seed, acc in [("ce", 0, 0.5), ("ce", 1, 0.7), ("ntl-was", 0, 0.9)]:
        run_dir = tmp_path / config / str(seed)
        run_dir.mkdir(parents=True)
        rows = [{"step": 1, "losses/train": 3.0}, {"step": 2, "eval/interpolate/accuracy": acc}]
        (run_dir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert final_values(tmp_path, "eval/interpolate/accuracy") == {
        "ce": [0.5, 0.7],
        "ntl-was": [0.9],
    }
    table = format_table(tmp_path, ["eval/interpolate/accuracy"])
    assert "| ce | 0.6 ± 0.14 (n=2) |" in table and "| ntl-was | 0.9 ± nan (n=1) |" in table


def test_paper_config_runs_all_categories(tmp_path: Path) -> None:
    # The GPU-sized config, shrunk: all 13 training and 7 extrapolation categories flow through.
    cfg = dataclasses.replace(
        arith.CONFIGS["paper-ntl-was"],
        **{
            **TINY,
            "categories": arith.CONFIGS["paper-ntl-was"].categories,
            "train_size": 2,
            "eval_size": 1,
            "max_steps": 2,
            "batch_size": 2,
            "log_every": 2,
            "eval_every": 2,
            "checkpoint_every": 2,
            "eval_batch_size": 20,
            "num_threads": 1,
        },
    )
    (row,) = list(arith.run(cfg, tmp_path))
    assert row["eval/interpolate/count"] == 13.0
    assert row["eval/extrapolate/count"] == 7.0
    assert "eval/extrapolate/arithmetic__mixed_longer/accuracy" in row
    assert "eval/interpolate/algebra__linear_2d_composed/accuracy" in row


class _PerMicroBatchMean:
    """The non-exact alternative: every micro-batch divided by its own counts."""

    def __init__(self, inner: StepLoss, parts: int) -> None:
        self.inner, self.parts = inner, parts

    def __call__(self, outputs: object, labels: torch.Tensor, **_: object) -> torch.Tensor:
        return self.inner(outputs, labels) / self.parts

    def count(self, labels: torch.Tensor) -> tuple[int, int]:
        return self.inner.count(labels)


def _one_step_update(
    tok: object, vocab: NumberVocab, arch: str, loss: str, grad_accum: int, exact: bool = True
) -> torch.Tensor:
    """The parameter change of one SGD(lr=1) step over 8 examples in ``grad_accum`` parts."""
    from ntl.experiments.training import train_segment

    pairs = [
        ("What is 12 + 7?", "19"),
        ("Round 0.25 to one dp.", "0.2"),
        ("3 - 40", "-37"),
        ("Calculate the remainder when 99 is divided by 8.", "3"),
        ("What is the tens digit of 584?", "8"),
        ("Sum 1 and 2.", "3"),
        ("Work out 6 * -17.", "-102"),
        ("What is -91790 rounded to the nearest ten thousand?", "-90000"),
    ]
    examples = arith._encode(tok, pairs, arch)
    model = build_model(ModelSpec(arch, len(tok), 16, 32, 1, 2), seed=0).double()  # type: ignore[arg-type]
    before = torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()])
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    objective: object = make_loss(loss, vocab, 0.3, 1.0, causal=arch == "causal")
    if not exact:
        objective = _PerMicroBatchMean(objective, grad_accum)  # type: ignore[arg-type]
    collate = causal_collate if arch == "causal" else seq2seq_collate
    # the same 8 examples as one step (a stream of exactly one epoch in a fixed order)
    stream = StepStream(examples, seed=0, batch_size=8, start=0, end=1)
    train_segment(
        model,
        optimizer,
        scheduler,
        stream,
        collate,
        objective,  # type: ignore[arg-type]
        log_every=1,
        grad_accum=grad_accum,
        max_grad_norm=math.inf,
    )
    after = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    return after - before


@pytest.mark.parametrize(
    ("arch", "loss"), [("causal", "ntl-was"), ("t5", "ntl-mse"), ("causal", "gauss-ce+ntl-was")]
)
def test_gradient_accumulation_is_exact(
    tok: object, vocab: NumberVocab, arch: str, loss: str
) -> None:
    full = _one_step_update(tok, vocab, arch, loss, grad_accum=1)  # 1 micro-batch of 8
    four = _one_step_update(tok, vocab, arch, loss, grad_accum=4)  # 4 micro-batches of 2
    eight = _one_step_update(tok, vocab, arch, loss, grad_accum=8)  # 8 micro-batches of 1
    scale = float(full.abs().max())
    assert scale > 0
    assert float((four - full).abs().max()) <= 1e-9 * scale
    assert float((eight - full).abs().max()) <= 1e-9 * scale
    # dividing each micro-batch by its own counts is not the same update (the test can fail)
    naive = _one_step_update(tok, vocab, arch, loss, grad_accum=4, exact=False)
    assert float((naive - full).abs().max()) > 1e-3 * scale


def test_train_segment_rejects_bad_grad_accum(tok: object, vocab: NumberVocab) -> None:
    with pytest.raises(ValueError, match="grad_accum"):
        _one_step_update(tok, vocab, "t5", "ce", grad_accum=0)
    with pytest.raises(ValueError, match="exceeds batch_size"):
        _one_step_update(tok, vocab, "t5", "ce", grad_accum=9)


def test_heldout_split_and_curve_splits(tmp_path: Path) -> None:
    cfg = _tiny(
        categories=("numbers__place_value",),
        difficulty="train-easy",
        eval_splits=("heldout", "interpolate"),
        curve_splits=1,
        train_size=40,
        eval_size=20,
    )
    train, evals = arith._data(cfg, 0)
    assert len(train) == 40 and set(evals) == {"heldout", "interpolate"}
    heldout = evals["heldout"]["numbers__place_value"]
    assert 0 < len(heldout) <= 20
    assert not {q for q, _ in heldout} & {q for q, _ in train}  # none seen in training
    rows = list(arith.run(cfg, tmp_path))
    first, last = rows[0], rows[-1]
    assert "eval/heldout/accuracy" not in first  # step 2: no evaluation
    assert last["step"] == 4
    assert "eval/heldout/accuracy" in last and "eval/interpolate/accuracy" in last
    mid = list(arith.run(dataclasses.replace(cfg, eval_every=2), tmp_path / "mid"))
    assert "eval/heldout/accuracy" in mid[0] and "eval/interpolate/accuracy" not in mid[0]
    for kw, match in [
        (dict(difficulty="train-trivial"), "difficulty must be one of"),
        (dict(eval_splits=("test",)), "eval_splits must be"),
        (dict(curve_splits=3), "curve_splits must be"),
        (dict(grad_accum=5), "grad_accum must be"),
    ]:
        with pytest.raises(ValueError, match=match):
            next(arith.run(dataclasses.replace(cfg, **kw), tmp_path / "bad"))
