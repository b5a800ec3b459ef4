"""Tests of ntl.hf: shift_labels, compute_loss_func, and tiny GPT-2 / T5 models trained by Trainer."""

from __future__ import annotations

import pathlib
import random

import pytest
import torch

from ntl import NumberVocab, cross_entropy_with_ntl, number_token_loss
from ntl.hf import ntl_compute_loss_func, shift_labels

from .conftest import make_fast_tokenizer, word_level_vocab

PAD, EOS = 0, 2
IDS = word_level_vocab()


def test_shift_labels() -> None:
    labels = torch.tensor([[5, 6, 7], [8, -100, 9]])
    before = labels.clone()
    torch.testing.assert_close(shift_labels(labels), torch.tensor([[6, 7, -100], [-100, 9, -100]]))
    assert torch.equal(labels, before)
    assert shift_labels(torch.tensor([1, 2]), ignore_index=0).tolist() == [2, 0]
    with pytest.raises(TypeError, match="integer"):
        shift_labels(torch.ones(2, 3))
    with pytest.raises(ValueError, match="sequence dim"):
        shift_labels(torch.tensor(3))


def _vocab() -> NumberVocab:
    return NumberVocab.from_tokenizer(make_fast_tokenizer())


def test_compute_loss_func_matches_functional() -> None:
    vocab = _vocab()
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 6, vocab.vocab_size, generator=gen)
    labels = torch.randint(0, vocab.vocab_size, (2, 6), generator=gen)
    labels[1, 4:] = -100
    fn = ntl_compute_loss_func(vocab, causal=True, label_smoothing=0.05)
    expected = cross_entropy_with_ntl(
        logits,
        shift_labels(labels),
        vocab,
        normalize_by="tokens",
        label_smoothing=0.05,
        num_items_in_batch=8,  # the shifted targets: 5 + 3
    )
    for outputs in ({"logits": logits}, (logits,), type("Out", (), {"logits": logits})()):
        torch.testing.assert_close(fn(outputs, labels, num_items_in_batch=8), expected)
    seq2seq = ntl_compute_loss_func(vocab, kind="mse", ntl_weight=2.0)
    torch.testing.assert_close(
        seq2seq({"logits": logits}, labels),
        cross_entropy_with_ntl(
            logits, labels, vocab, kind="mse", ntl_weight=2.0, normalize_by="tokens"
        ),
    )
    # Paper normalisation: exact when the Trainer's count is this micro-batch's own.
    paper = ntl_compute_loss_func(vocab, normalize_by="number_tokens")
    n_local = int((labels != -100).sum())
    torch.testing.assert_close(
        paper({"logits": logits}, labels, num_items_in_batch=torch.tensor(n_local)),
        cross_entropy_with_ntl(logits, labels, vocab),
    )
    torch.testing.assert_close(
        paper({"logits": logits}, labels), cross_entropy_with_ntl(logits, labels, vocab)
    )


def test_number_tokens_under_accumulation_refused() -> None:
    """Defect 3: the Trainer's count spans several micro-batches -> a clear error, not a guess."""
    vocab = _vocab()
    logits = torch.randn(2, 6, vocab.vocab_size, generator=torch.Generator().manual_seed(0))
    labels = torch.randint(0, vocab.vocab_size, (2, 6), generator=torch.Generator().manual_seed(1))
    paper = ntl_compute_loss_func(vocab, normalize_by="number_tokens")
    with pytest.raises(ValueError, match=r"number_tokens.*num_items_in_batch=20.*this one has 12"):
        paper({"logits": logits}, labels, num_items_in_batch=torch.tensor(20))


def test_causal_count_uses_shifted_targets() -> None:
    """Defect 4: a Trainer count of the unshifted labels (83 vs 75 used) is corrected."""
    vocab = _vocab()
    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(8, 11, vocab.vocab_size, generator=gen)
    labels = torch.randint(0, vocab.vocab_size, (8, 11), generator=gen)
    labels[:, 10:] = -100
    labels[0, 7:] = -100
    unshifted = int((labels != -100).sum())
    shifted = int((labels[:, 1:] != -100).sum())
    assert (unshifted, shifted) == (77, 69)
    fn = ntl_compute_loss_func(vocab, causal=True)
    expected = cross_entropy_with_ntl(logits, shift_labels(labels), vocab, normalize_by="tokens")
    torch.testing.assert_close(
        fn({"logits": logits}, labels, num_items_in_batch=unshifted), expected
    )
    torch.testing.assert_close(fn({"logits": logits}, labels, num_items_in_batch=shifted), expected)
    # Under accumulation the Trainer's unshifted count cannot be corrected: refused.
    with pytest.raises(ValueError, match=r"num_items_in_batch=150.*labels\[\.\.\., 0\]"):
        fn({"logits": logits}, labels, num_items_in_batch=150)
    # With the first label masked both counts agree and any accumulated count is used as is.
    labels[:, 0] = -100
    scaled = fn({"logits": logits}, labels, num_items_in_batch=2 * shifted)
    torch.testing.assert_close(scaled, expected / 2)


def test_trainer_gpt2_counts_causal_targets(tmp_path: pathlib.Path) -> None:
    """Defect 4 through transformers.Trainer: the loss is normalised by the shifted count."""
    from transformers import Trainer

    vocab = _vocab()
    data = _causal_dataset(8)
    for row in data:  # the first label is a target before shifting: counts differ by one per row
        row["labels"] = row["input_ids"].clone()
        row["labels"][row["attention_mask"] == 0] = -100
    model = _tiny_gpt2(vocab.vocab_size)
    fn = ntl_compute_loss_func(vocab, causal=True)
    seen: list[tuple[float, float]] = []

    def recording(
        outputs: object, labels: torch.Tensor, num_items_in_batch: object = None
    ) -> torch.Tensor:
        loss = fn(outputs, labels, num_items_in_batch=num_items_in_batch)
        own = cross_entropy_with_ntl(
            outputs.logits,
            shift_labels(labels),
            vocab,
            normalize_by="tokens",  # type: ignore[attr-defined]
        )
        seen.append((float(loss), float(own)))
        return loss

    args = _training_args(tmp_path, per_device_train_batch_size=8, max_steps=1)
    Trainer(model=model, args=args, train_dataset=data, compute_loss_func=recording).train()
    assert len(seen) == 1 and seen[0][0] == pytest.approx(seen[0][1], rel=1e-6)


def test_compute_loss_func_bad_input() -> None:
    vocab = _vocab()
    with pytest.raises(TypeError, match="unexpected keyword"):
        ntl_compute_loss_func(vocab, reduction="sum")
    with pytest.raises(ValueError, match="kind"):
        ntl_compute_loss_func(vocab, kind="l2")
    with pytest.raises(TypeError, match="vocab"):
        ntl_compute_loss_func({"1": 3})  # type: ignore[arg-type]
    fn = ntl_compute_loss_func(vocab)
    with pytest.raises(ValueError, match="labels is None"):
        fn({"logits": torch.zeros(1, 2, vocab.vocab_size)}, None)
    with pytest.raises(TypeError, match="outputs must carry logits"):
        fn(object(), torch.zeros(1, 2, dtype=torch.long))


# --- tiny models trained with transformers.Trainer ------------------------------------------------


def _sum_examples(n: int, seed: int) -> list[tuple[list[int], list[int]]]:
    """(question "a + b =", answer digits of a + b then </s>) as token ids."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        a, b = rng.randrange(10), rng.randrange(10)
        question = [IDS[str(a)], IDS["+"], IDS[str(b)], IDS["="]]
        answer = [IDS[d] for d in str(a + b)] + [EOS]
        out.append((question, answer))
    return out


def _causal_dataset(n: int) -> list[dict[str, torch.Tensor]]:
    rows = []
    for question, answer in _sum_examples(n, seed=1):
        ids = question + answer + [PAD] * (8 - len(question) - len(answer))
        labels = [-100] * len(question) + answer + [-100] * (8 - len(question) - len(answer))
        # labels[t] is the token at t; the loss shifts them (position t predicts t + 1).
        rows.append(
            {
                "input_ids": torch.tensor(ids),
                "attention_mask": torch.tensor([int(i != PAD) for i in ids]),
                "labels": torch.tensor(labels),
            }
        )
    return rows


def _training_args(tmp_path: pathlib.Path, **overrides: object) -> object:
    from transformers import TrainingArguments

    kwargs: dict[str, object] = {
        "output_dir": str(tmp_path),
        "per_device_train_batch_size": 16,
        "gradient_accumulation_steps": 1,
        "max_steps": 25,
        "learning_rate": 3e-3,
        "lr_scheduler_type": "constant",
        "logging_steps": 5,
        "report_to": "none",
        "save_strategy": "no",
        "use_cpu": True,
        "disable_tqdm": True,
        "seed": 0,
        "dataloader_num_workers": 0,
    }
    kwargs.update(overrides)
    return TrainingArguments(**kwargs)  # type: ignore[arg-type]


def _dataset_loss(model: torch.nn.Module, data: list[dict[str, torch.Tensor]], fn: object) -> float:
    batch = {k: torch.stack([row[k] for row in data]) for k in data[0]}
    labels = batch.pop("labels")
    with torch.no_grad():
        return float(fn(model.eval()(**batch), labels))  # type: ignore[operator]


def _tiny_gpt2(vocab_size: int) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=vocab_size, n_positions=16, n_embd=32, n_layer=2, n_head=2,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=EOS, eos_token_id=EOS,
    )  # fmt: skip
    return GPT2LMHeadModel(config)


def test_trainer_gpt2_loss_decreases(tmp_path: pathlib.Path) -> None:
    from transformers import Trainer

    vocab = NumberVocab.from_tokenizer(make_fast_tokenizer(), vocab_size=24)  # padded head
    model = _tiny_gpt2(vocab.vocab_size)
    data = _causal_dataset(64)
    fn = ntl_compute_loss_func(vocab, kind="was", ntl_weight=0.3, causal=True)

    def ntl_only(outputs: object, labels: torch.Tensor) -> torch.Tensor:
        return number_token_loss(outputs.logits, shift_labels(labels), vocab)  # type: ignore[attr-defined]

    before, before_ntl = _dataset_loss(model, data, fn), _dataset_loss(model, data, ntl_only)
    trainer = Trainer(
        model=model, args=_training_args(tmp_path, gradient_accumulation_steps=2, per_device_train_batch_size=8),
        train_dataset=data, compute_loss_func=fn,
    )  # fmt: skip
    result = trainer.train()
    after = _dataset_loss(model, data, fn)
    logged = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    assert all(torch.isfinite(torch.tensor(logged))) and len(logged) == 5
    assert torch.isfinite(torch.tensor(result.training_loss))
    assert after < 0.7 * before, (before, after, logged)
    assert _dataset_loss(model, data, ntl_only) < before_ntl  # the number part improved too


def test_trainer_gradient_accumulation_matches_big_batch(tmp_path: pathlib.Path) -> None:
    """One optimizer step: batch 16 vs 2 × 8 with accumulation give the same parameters."""
    from transformers import Trainer

    vocab = _vocab()
    data = _causal_dataset(16)
    params = []
    for batch, accumulation in ((16, 1), (8, 2)):
        model = _tiny_gpt2(vocab.vocab_size)
        fn = ntl_compute_loss_func(vocab, kind="was", ntl_weight=0.5, causal=True)
        args = _training_args(
            tmp_path / str(batch), per_device_train_batch_size=batch, gradient_accumulation_steps=accumulation,
            max_steps=1, optim="sgd", learning_rate=0.5, max_grad_norm=1e9,
        )  # fmt: skip
        Trainer(model=model, args=args, train_dataset=data, compute_loss_func=fn).train()
        params.append(torch.cat([p.detach().reshape(-1) for p in model.parameters()]))
    assert not torch.equal(
        params[0],
        torch.cat([p.detach().reshape(-1) for p in _tiny_gpt2(vocab.vocab_size).parameters()]),
    )
    torch.testing.assert_close(params[0], params[1], atol=1e-6, rtol=1e-5)


def test_trainer_t5_loss_decreases(tmp_path: pathlib.Path) -> None:
    from transformers import T5Config, T5ForConditionalGeneration, Trainer

    vocab = _vocab()
    torch.manual_seed(0)
    config = T5Config(
        vocab_size=vocab.vocab_size, d_model=32, d_kv=8, d_ff=64, num_layers=1, num_decoder_layers=1,
        num_heads=2, dropout_rate=0.0, pad_token_id=PAD, eos_token_id=EOS, decoder_start_token_id=PAD,
    )  # fmt: skip
    model = T5ForConditionalGeneration(config)
    data = []
    for question, answer in _sum_examples(64, seed=2):
        labels = torch.tensor(answer + [-100] * (3 - len(answer)))
        data.append(
            {
                "input_ids": torch.tensor(question),
                "attention_mask": torch.ones(4, dtype=torch.long),
                "labels": labels,
                # Trainer pops labels when compute_loss_func is set: feed decoder inputs explicitly.
                "decoder_input_ids": model.prepare_decoder_input_ids_from_labels(
                    labels=labels[None]
                )[0],
            }
        )
    fn = ntl_compute_loss_func(vocab, kind="mse", ntl_weight=0.3, normalize_by="number_tokens")
    before = _dataset_loss(model, data, fn)
    trainer = Trainer(
        model=model, args=_training_args(tmp_path), train_dataset=data, compute_loss_func=fn
    )
    trainer.train()
    after = _dataset_loss(model, data, fn)
    logged = [row["loss"] for row in trainer.state.log_history if "loss" in row]
    assert all(torch.isfinite(torch.tensor(logged)))
    assert after < 0.7 * before, (before, after, logged)
