"""Data parallelism: 2 CPU processes (gloo) running transformers.Trainer + our compute_loss_func
produce the same gradients as one process on the same global batch.

The global batch of 8 questions is split 4 + 4 by accelerate (``dispatch_batches``); the two
halves have different numbers of answer tokens. With ``normalize_by="tokens"`` the loss is a
sum over tokens divided by the Trainer's ``num_items_in_batch``, which the Trainer all-reduces
across processes (``average_tokens_across_devices``) and compensates for DDP's gradient mean by
multiplying the loss by the number of processes: the result equals the single-process gradient.
A per-process mean (no global count) gives a different gradient: the counter-check.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.multiprocessing as mp

from ntl import NumberVocab
from ntl.data.tokenizer import digit_tokenizer
from ntl.experiments.models import ModelSpec, build_model
from ntl.experiments.training import StepStream, seq2seq_collate
from ntl.hf import ntl_compute_loss_func

STEPS = 3
PER_DEVICE = 4
QUESTIONS = [
    ("What is 12 + 7?", "19"),
    ("Calculate 3 - 1000.", "-997"),
    ("What is the units digit of 5?", "5"),
    ("Round 0.24 to one dp.", "0.2"),
    ("What is 123456 + 654321?", "777777"),
    ("Calculate 9 * 9.", "81"),
    ("What is -0.5 + 2.25?", "1.75"),
    ("Work out 88888 - 1.", "88887"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fixed_width_collate(batch: Any) -> dict[str, torch.Tensor]:
    """seq2seq_collate padded to fixed widths: accelerate concatenates the per-process batches."""
    out = seq2seq_collate(batch)
    widths = {"input_ids": 40, "attention_mask": 40, "decoder_input_ids": 10, "labels": 10}
    fill = {"input_ids": 0, "attention_mask": 0, "decoder_input_ids": 0, "labels": -100}
    for key, width in widths.items():
        t = out[key]  # (B, T)
        out[key] = torch.nn.functional.pad(t, (0, width - t.shape[1]), value=fill[key])
    return out


def _train_and_record_grads(per_device: int, mode: str, out_dir: Path) -> list[torch.Tensor]:
    """Run STEPS Trainer steps; return the flat gradient seen before each optimizer step."""
    from transformers import Trainer, TrainerCallback, TrainingArguments

    tok = digit_tokenizer()
    vocab = NumberVocab.from_tokenizer(tok)
    examples = list(
        zip(
            tok([q for q, _ in QUESTIONS])["input_ids"], tok([a for _, a in QUESTIONS])["input_ids"]
        )
    )
    model = build_model(ModelSpec("t5", len(tok), 16, 32, 1, 2), seed=0)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    # the experiments' own loop normalises NTL by number tokens (ntl.experiments.training); the
    # Trainer path tested here is the library's "tokens" normalisation
    ntl_loss = ntl_compute_loss_func(vocab, kind="was", ntl_weight=0.3, normalize_by="tokens")
    if mode == "tokens":
        loss_fn = ntl_loss
    else:  # per-process mean: ignores the Trainer's global token count

        def loss_fn(outputs: Any, labels: torch.Tensor, num_items_in_batch: Any = None) -> Any:
            return ntl_loss(outputs, labels)

    grads: list[torch.Tensor] = []

    class Record(TrainerCallback):  # type: ignore[misc]
        def on_pre_optimizer_step(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
            grads.append(torch.cat([p.grad.reshape(-1).clone() for p in model.parameters()]))

    args = TrainingArguments(
        output_dir=str(out_dir / f"trainer-{mode}-{os.environ.get('RANK', 'single')}"),
        max_steps=STEPS,
        per_device_train_batch_size=per_device,
        learning_rate=0.05,
        lr_scheduler_type="constant",
        optim="sgd",
        weight_decay=0.0,
        max_grad_norm=0.0,
        logging_strategy="no",
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        remove_unused_columns=False,
        average_tokens_across_devices=mode == "tokens",
        dataloader_num_workers=0,
    )
    trainer = Trainer(
        model=model,
        args=args,
        # The same stream of examples; each step takes per_device * world of them.
        train_dataset=StepStream(examples, 0, per_device * world, 0, STEPS),
        data_collator=_fixed_width_collate,
        compute_loss_func=loss_fn,
        callbacks=[Record()],
    )
    trainer.train()
    return grads


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world),
            "LOCAL_WORLD_SIZE": str(world),
        }
    )
    torch.set_num_threads(1)
    results = {
        m: _train_and_record_grads(PER_DEVICE, m, Path(out_dir)) for m in ("tokens", "local")
    }
    assert torch.distributed.is_initialized() and torch.distributed.get_world_size() == world
    if rank == 0:
        torch.save(results, Path(out_dir) / "ddp_grads.pt")
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()


@pytest.mark.slow
def test_two_process_gradient_equals_single_process(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ddp = torch.load(tmp_path / "ddp_grads.pt", weights_only=True)
    single = _train_and_record_grads(2 * PER_DEVICE, "tokens", tmp_path)
    assert len(ddp["tokens"]) == len(single) == STEPS
    for step, (g_ddp, g_one) in enumerate(zip(ddp["tokens"], single)):
        assert torch.allclose(g_ddp, g_one, rtol=1e-4, atol=1e-6), (
            f"step {step}: max |diff| = {(g_ddp - g_one).abs().max():.3g}"
        )
    # The halves have different answer-token counts, so a per-process mean is not the same.
    first_local = ddp["local"][0]
    rel = (first_local - single[0]).norm() / single[0].norm()
    assert rel > 1e-2, f"per-process mean unexpectedly matched (relative difference {rel:.3g})"
