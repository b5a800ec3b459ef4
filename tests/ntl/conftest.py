"""Shared offline fixtures for the NTL tests: small tokenizers built in-process (no downloads)."""

from __future__ import annotations

import pytest

from ntl import NumberVocab

# A tiny word-level vocabulary: specials, the ten digits, operators and a few words.
WORDS = ["[PAD]", "[UNK]", "</s>", *[str(d) for d in range(10)], "+", "-", "=", "what", "is", "x"]


def word_level_vocab() -> dict[str, int]:
    return {token: i for i, token in enumerate(WORDS)}


def make_fast_tokenizer() -> object:
    """A transformers PreTrainedTokenizerFast over :data:`WORDS`, whitespace pre-tokenised."""
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(WordLevel(word_level_vocab(), unk_token="[UNK]"))
    backend.pre_tokenizer = WhitespaceSplit()
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", pad_token="[PAD]", eos_token="</s>"
    )


@pytest.fixture
def fast_tokenizer() -> object:
    return make_fast_tokenizer()


@pytest.fixture
def small_vocab() -> NumberVocab:
    """Ids 1..4 are numbers with values 0, 1, 2, 5 in a vocabulary of width 6."""
    return NumberVocab.from_values({1: 0.0, 2: 1.0, 3: 2.0, 4: 5.0}, vocab_size=6)
