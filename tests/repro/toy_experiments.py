"""A small, real, deterministic experiment that follows the protocol, for the runner's tests.

SGD on a noisy 1-D linear regression ``y = 3x + 1 + 0.1ε`` with a seeded torch Generator; it
checkpoints (weights, generator state, step) to ``run_dir/checkpoint.pt`` atomically every
``checkpoint_every`` steps and resumes from it to the identical curve.
"""

from __future__ import annotations

import os
import signal
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from repro.registry import ExperimentSpec, register_experiment


@dataclass
class ToyConfig:
    """SGD on a noisy linear regression."""

    seed: int = 0
    """Random seed."""
    total_steps: int = 30
    """SGD steps; one metric row per step."""
    checkpoint_every: int = 5
    """Save checkpoint.pt every this many steps."""
    lr: float = 0.1
    """Learning rate."""
    batch: int = 16
    """Samples per step."""
    fail_at_step: int = -1
    """Raise a RuntimeError at this step (negative: never)."""
    sleep_s: float = 0.0
    """Sleep after each row (to let a test kill the run mid-way)."""
    die_at_step: int = -1
    """A worker crash: SIGKILL the process running seed ``die_seed`` at this step, the first
    time only (a marker file in the run folder remembers it); negative: never."""
    die_seed: int = 0
    """The seed whose process ``die_at_step`` kills."""
    label: str = "toy"
    """A free-form string (to test string overrides)."""
    fast: bool = False
    """A bool (to test bool overrides); unused."""
    log_threads: bool = False
    """Log torch's thread count in every row (``params/threads``)."""


CONFIGS = {"small": ToyConfig(), "fast-lr": ToyConfig(lr=0.3, total_steps=20)}

if os.environ.get("REPRO_TOY_IMPORT_WARNING"):  # like a library that warns when imported
    warnings.warn("toy: a warning at import", UserWarning, stacklevel=1)


def run(config: ToyConfig, run_dir: Path) -> Iterator[dict[str, float | int]]:
    ckpt = Path(run_dir) / "checkpoint.pt"
    gen = torch.Generator().manual_seed(config.seed)
    w = torch.zeros(2, dtype=torch.float64)  # (slope, intercept)
    start = 0
    if ckpt.exists():
        state = torch.load(ckpt, weights_only=True)
        w, start = state["w"], int(state["step"])
        gen.set_state(state["rng"])
    print(f"toy seed {config.seed}: starting after step {start}")
    for step in range(start + 1, config.total_steps + 1):
        x = torch.randn(config.batch, generator=gen, dtype=torch.float64)  # (B,)
        y = 3.0 * x + 1.0 + 0.1 * torch.randn(config.batch, generator=gen, dtype=torch.float64)
        err = w[0] * x + w[1] - y  # (B,)
        grad = torch.stack([2 * (err * x).mean(), 2 * err.mean()])  # (2,)
        w = w - config.lr * grad
        if step == config.fail_at_step:
            raise RuntimeError(f"toy failure at step {step}")
        if step == config.die_at_step and config.seed == config.die_seed:
            marker = Path(run_dir) / "died-once"
            if not marker.exists():
                marker.touch()
                os.kill(os.getpid(), signal.SIGKILL)
        row = {
            "step": step,
            "losses/mse": float((err**2).mean()),
            "charts/slope": float(w[0]),
            "eval/train/mae": float(err.abs().mean()),
            "params/total": 2,
        }
        if config.log_threads:
            row["params/threads"] = torch.get_num_threads()
        yield row
        if step % config.checkpoint_every == 0:
            tmp = ckpt.with_suffix(".tmp")
            torch.save({"w": w, "rng": gen.get_state(), "step": step}, tmp)
            os.replace(tmp, ckpt)
        if config.sleep_s:
            time.sleep(config.sleep_s)


def run_many(
    configs: list[ToyConfig], run_dirs: list[Path]
) -> Iterator[tuple[int, dict[str, float | int]]]:
    """All members stepped in lockstep (round robin) in one process."""
    iters = [run(c, d) for c, d in zip(configs, run_dirs)]
    live = list(range(len(iters)))
    while live:
        for i in list(live):
            try:
                yield i, next(iters[i])
            except StopIteration:
                live.remove(i)


def validate(config: ToyConfig) -> None:
    for name in ("total_steps", "checkpoint_every", "batch"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be >= 1, got {getattr(config, name)}")


PROTOCOL = {
    "score": "charts/slope",
    "score_per": "run",
    "progress_unit": "SGD step",
    "progress_total": lambda config: config.total_steps,
    "params": lambda config: 2,
    "validate": validate,
    "checkpoint": "checkpoint.pt",
}

SPEC = ExperimentSpec("toy", __name__, "ToyConfig", "deterministic toy regression")
BROKEN = ExperimentSpec("toy-missing", "tests.repro.no_such_module", "X", "never importable")


def register() -> None:
    register_experiment(SPEC)
    register_experiment(BROKEN)
