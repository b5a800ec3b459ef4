"""Checkpoint writes of both engines are atomic: a failed write leaves the old file and no temp."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from qa2c.jax_engine import train as jax_train
from qa2c.train import load_checkpoint, save_checkpoint


def _fail(file: object, *args: object, **kwargs: object) -> None:
    """A writer that dies half-way: it has written some bytes to its file."""
    Path(str(file)).write_bytes(b"half a checkpoint")
    raise OSError("disk full")


def test_torch_checkpoint_failed_write_keeps_old_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"step": 1, "w": torch.ones(3)}, path)
    monkeypatch.setattr(torch, "save", lambda obj, f, *a, **k: _fail(f))
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint.pt"]
    assert load_checkpoint(path)["step"] == 1


def test_jax_checkpoint_failed_write_keeps_old_file_and_leaves_no_temp(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "checkpoint_jax.npz"
    jax_train.save_state({"w": np.arange(3.0)}, path)
    monkeypatch.setattr(np, "savez", _fail)
    with pytest.raises(OSError, match="disk full"):
        jax_train.save_state({"w": np.zeros(3)}, path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_jax.npz"]
    np.testing.assert_array_equal(jax_train.load_state(path)["w"], np.arange(3.0))
