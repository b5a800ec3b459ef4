"""A character-level ("digit-splitting") tokenizer built with `tokenizers`, wrapped for transformers.

Every character of the mathematics questions is its own token, so every digit is its own token
(the paper's digit-level setting, where NTL applies to every digit of an answer). Special tokens
follow the T5 convention: ``<pad>`` = 0 (also the decoder start), ``</s>`` = 1, ``<unk>`` = 2;
``<sep>`` = 3 separates question and answer for decoder-only models.

>>> tok = digit_tokenizer()
>>> tok("12 + 3", add_special_tokens=False)["input_ids"]  # doctest: +SKIP
>>> tok.decode(tok("12 + 3")["input_ids"], skip_special_tokens=True)
'12 + 3'
"""

from __future__ import annotations

import string
from typing import Any

__all__ = ["CHARACTERS", "SPECIAL_TOKENS", "digit_tokenizer"]

SPECIAL_TOKENS: tuple[str, ...] = ("<pad>", "</s>", "<unk>", "<sep>")
# Digits first (ids 4..13), then the rest of printable ASCII the generator's questions may use.
CHARACTERS: tuple[str, ...] = tuple(
    dict.fromkeys(string.digits + " " + string.ascii_letters + string.punctuation)
)


def digit_tokenizer(add_eos: bool = True) -> Any:
    """A ``transformers.PreTrainedTokenizerFast`` with one token per character.

    Args:
        add_eos: append ``</s>`` when ``add_special_tokens=True`` (the T5 convention).

    Round trip: ``decode(encode(s), skip_special_tokens=True) == s`` for every string over
    :data:`CHARACTERS`; other characters become ``<unk>``.
    """
    try:
        from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
        from transformers import PreTrainedTokenizerFast
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "digit_tokenizer needs the 'transformers' extra: pip install 'ntl-qa2c[transformers]'"
        ) from exc
    vocab = {tok: i for i, tok in enumerate((*SPECIAL_TOKENS, *CHARACTERS))}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    # Every single character is its own pre-token (spaces included), so nothing is merged or lost.
    core.pre_tokenizer = pre_tokenizers.Split(Regex("(?m)."), behavior="isolated")
    core.decoder = decoders.Fuse()
    if add_eos:
        core.post_processor = processors.TemplateProcessing(
            single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", vocab["</s>"])]
        )
    core.add_special_tokens(list(SPECIAL_TOKENS))
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        pad_token="<pad>",
        eos_token="</s>",
        unk_token="<unk>",
        sep_token="<sep>",
        model_max_length=512,
    )
