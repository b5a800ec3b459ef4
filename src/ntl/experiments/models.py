"""Small randomly initialised transformers models for the NTL experiments (no downloads).

- ``"t5"``: ``T5ForConditionalGeneration`` from a small ``T5Config`` (the paper's model family);
- ``"causal"``: a decoder-only ``LlamaForCausalLM`` (rotary positions, so longer extrapolation
  questions do not meet untrained position embeddings).

Special token ids follow :mod:`ntl.data.tokenizer`: pad 0 (T5's decoder start), eos 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["ARCHS", "ModelSpec", "build_model"]

ARCHS = ("t5", "causal")


@dataclass(frozen=True)
class ModelSpec:
    """Size of a model; ``vocab_size`` is the logit width."""

    arch: str
    vocab_size: int
    d_model: int = 128
    d_ff: int = 256
    num_layers: int = 2
    num_heads: int = 4
    dropout: float = 0.0
    pad_token_id: int = 0
    eos_token_id: int = 1
    max_positions: int = 512

    def __post_init__(self) -> None:
        if self.arch not in ARCHS:
            raise ValueError(f"arch must be one of {ARCHS}, got {self.arch!r}")
        for name in ("vocab_size", "d_model", "d_ff", "num_layers", "num_heads", "max_positions"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if self.d_model % self.num_heads:
            raise ValueError(
                f"d_model={self.d_model} must be divisible by num_heads={self.num_heads}"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")


def build_model(spec: ModelSpec, seed: int) -> Any:
    """A freshly initialised model for ``spec``; the weights depend only on ``(spec, seed)``.

    The caller's global torch RNG state is restored afterwards.
    """
    if not isinstance(spec, ModelSpec):
        raise TypeError(f"spec must be a ModelSpec, got {type(spec).__name__}")
    try:
        import transformers
    except ImportError as exc:  # pragma: no cover
        raise ImportError(
            "needs the 'transformers' extra: pip install 'ntl-qa2c[transformers]'"
        ) from exc
    state = torch.random.get_rng_state()
    try:
        torch.manual_seed(seed)
        model: Any
        if spec.arch == "t5":
            # decoder_start_token_id is not a declared T5Config field in transformers 5; it is
            # stored as an extra attribute (used by generate and _shift_right).
            extra: dict[str, Any] = {"decoder_start_token_id": spec.pad_token_id}
            t5_config = transformers.T5Config(
                vocab_size=spec.vocab_size,
                d_model=spec.d_model,
                d_kv=spec.d_model // spec.num_heads,
                d_ff=spec.d_ff,
                num_layers=spec.num_layers,
                num_decoder_layers=spec.num_layers,
                num_heads=spec.num_heads,
                dropout_rate=spec.dropout,
                feed_forward_proj="relu",
                pad_token_id=spec.pad_token_id,
                eos_token_id=spec.eos_token_id,
                **extra,
            )
            model = transformers.T5ForConditionalGeneration(t5_config)
        else:
            llama_config = transformers.LlamaConfig(
                vocab_size=spec.vocab_size,
                hidden_size=spec.d_model,
                intermediate_size=spec.d_ff,
                num_hidden_layers=spec.num_layers,
                num_attention_heads=spec.num_heads,
                num_key_value_heads=spec.num_heads,
                max_position_embeddings=spec.max_positions,
                attention_dropout=spec.dropout,
                pad_token_id=spec.pad_token_id,
                bos_token_id=spec.pad_token_id,
                eos_token_id=spec.eos_token_id,
                tie_word_embeddings=True,
            )
            model = transformers.LlamaForCausalLM(llama_config)
    finally:
        torch.random.set_rng_state(state)
    model.generation_config.pad_token_id = spec.pad_token_id
    model.generation_config.eos_token_id = spec.eos_token_id
    if spec.arch == "t5":
        model.generation_config.decoder_start_token_id = spec.pad_token_id
    return model
