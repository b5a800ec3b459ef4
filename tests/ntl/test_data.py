"""ntl.data: the real mathematics_dataset generator (deterministic, cached) and the digit tokenizer."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ntl import NumberVocab
from ntl.data import mathematics as md
from ntl.data.tokenizer import CHARACTERS, SPECIAL_TOKENS, digit_tokenizer


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(md.CACHE_ENV, str(tmp_path))
    return tmp_path


PAPER_REQUESTS = [(c, 3, 7, "train") for c in md.PAPER_TRAIN_CATEGORIES] + [
    (c, 3, 7, "extrapolate") for c in md.PAPER_EXTRAPOLATE_CATEGORIES
]


def test_all_paper_categories_generate_numbers_and_are_deterministic(cache: Path) -> None:
    first = md.generate_many(PAPER_REQUESTS)
    # Reversed order, in-process reads of the cache files: identical.
    again = md.generate_many(PAPER_REQUESTS[::-1])[::-1]
    assert first == again
    for (category, n, _, _), pairs in zip(PAPER_REQUESTS, first):
        assert len(pairs) == n, category
        for question, answer in pairs:
            assert isinstance(question, str) and isinstance(answer, str)
            assert 0 < len(question) <= 160 and 0 < len(answer) <= 30
            assert any(ch.isdigit() for ch in answer), (category, answer)
    # Cache files are versioned JSON written per request.
    files = sorted((cache / "mathematics").glob("*.json"))
    assert len(files) == len(PAPER_REQUESTS)
    payload = json.loads(files[0].read_text())
    assert payload["format_version"] == md.FORMAT_VERSION
    assert not list((cache / "mathematics").glob("*.tmp"))


def test_generation_independent_of_hash_seed_and_cache(cache: Path) -> None:
    # Composed and algebra modules iterate over sets: the result must not depend on the
    # process (hash seed, memory layout), on the cache, or on the order of requests.
    reqs = [
        ("numbers__div_remainder_composed", 8, 1, "train"),
        ("algebra__linear_1d", 8, 1, "interpolate"),
    ]
    here = md.generate_many(reqs, cache=False)
    code = (
        "import json, sys; from ntl.data.mathematics import generate_many; "
        f"json.dump(generate_many({reqs!r}, cache=False), sys.stdout)"
    )
    # This process has a random hash seed and generates in a child with PYTHONHASHSEED=0; the
    # other process runs the generator in-process (its hash seed is 0 already).
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    there = [[tuple(p) for p in pairs] for pairs in json.loads(out.stdout)]
    assert here == there
    assert md.generate(*reqs[0]) == here[0]  # through the cache
    assert md.generate(*reqs[0]) == here[0]  # from the cache


def test_seeds_splits_differ_and_caller_rng_untouched(cache: Path) -> None:
    random.seed(123)
    np.random.seed(456)
    py_state, np_state = random.getstate(), np.random.get_state()
    a, b, interp, extra, extra_by_train_name = md.generate_many(
        [
            ("arithmetic__add_or_sub", 20, 0, "train"),
            ("arithmetic__add_or_sub", 20, 1, "train"),
            ("arithmetic__add_or_sub", 20, 0, "interpolate"),
            ("arithmetic__add_or_sub_big", 20, 0, "extrapolate"),
            ("arithmetic__add_or_sub", 20, 0, "extrapolate"),
        ]
    )
    assert random.getstate() == py_state
    assert np.array_equal(np.random.get_state()[1], np_state[1])
    assert a != b and a != interp
    assert extra == extra_by_train_name
    # Extrapolation numbers are bigger than training numbers.
    longest = lambda pairs: max(len(q) for q, _ in pairs)  # noqa: E731
    assert longest(extra) > longest(a)


def test_twins_and_categories() -> None:
    assert md.extrapolation_twin("arithmetic__mul") == "arithmetic__mul_big"
    assert md.extrapolation_twin("arithmetic__mixed") == "arithmetic__mixed_longer"
    assert md.extrapolation_twin("numbers__place_value") == "numbers__place_value_big"
    assert set(md.PAPER_EXTRAPOLATE_CATEGORIES) <= set(md.categories("extrapolate"))
    assert set(md.PAPER_TRAIN_CATEGORIES) <= set(md.categories("train"))
    with pytest.raises(ValueError, match="no extrapolation twin"):
        md.extrapolation_twin("numbers__gcd")


@pytest.mark.parametrize(
    ("args", "exc", "match"),
    [
        (("arithmetic__nope", 2, 0, "train"), ValueError, "arithmetic__nope"),
        (("arithmetic__mul", -1, 0, "train"), ValueError, "n must be"),
        (("arithmetic__mul", 2, 0, "test"), ValueError, "split must be"),
        (("arithmetic__mul", 2, "0", "train"), TypeError, "seed must be"),
        ((3, 2, 0, "train"), TypeError, "category must be"),
    ],
)
def test_bad_requests(args: tuple, exc: type, match: str, cache: Path) -> None:
    with pytest.raises(exc, match=match):
        md.generate(*args)
    assert not (cache / "mathematics").exists()  # nothing written


def test_tokenizer_round_trip_and_digit_tokens() -> None:
    tok = digit_tokenizer()
    text = "".join(CHARACTERS) + " What is -12 + 3.5? Let x(g) = 8/91."
    ids = tok(text)["input_ids"]
    assert ids[-1] == tok.eos_token_id  # T5 convention: </s> appended
    assert len(ids) == len(text) + 1  # one token per character
    assert tok.decode(ids, skip_special_tokens=True) == text
    assert tok.convert_ids_to_tokens(tok("907", add_special_tokens=False)["input_ids"]) == [
        "9",
        "0",
        "7",
    ]
    assert (tok.pad_token_id, tok.eos_token_id, tok.unk_token_id) == (0, 1, 2)
    assert len(tok) == len(SPECIAL_TOKENS) + len(CHARACTERS)
    assert tok("é", add_special_tokens=False)["input_ids"] == [tok.unk_token_id]
    vocab = NumberVocab.from_tokenizer(tok)
    assert sorted(vocab.values.tolist()) == list(range(10))
    for tid, value in zip(vocab.token_ids.tolist(), vocab.values.tolist()):
        assert tok.convert_ids_to_tokens(tid) == str(int(value))


def test_tokenizer_round_trips_generated_questions(cache: Path) -> None:
    tok = digit_tokenizer(add_eos=False)
    pairs = md.generate_many([(c, 5, 3, "train") for c in md.PAPER_TRAIN_CATEGORIES])
    for question, answer in (p for ps in pairs for p in ps):
        for text in (question, answer):
            ids = tok(text)["input_ids"]
            assert tok.unk_token_id not in ids
            assert tok.decode(ids) == text


def test_difficulty_levels(cache: Path) -> None:
    assert md.TRAIN_LEVELS == ("train", "train-easy", "train-medium", "train-hard")
    assert md.categories("train-easy") == md.categories("train") == md.categories("train-hard")
    levels = ("train-easy", "train-medium", "train-hard")
    reqs = [("arithmetic__add_or_sub", 60, 3, level) for level in levels]
    easy, medium, hard = md.generate_many(reqs)

    # The package's rule: thirds of the entropy range, so the numbers grow with the level.
    def mean_len(pairs: list[tuple[str, str]]) -> float:
        return float(np.mean([len(q) + len(a) for q, a in pairs]))

    assert mean_len(easy) < mean_len(medium) < mean_len(hard)
    assert easy != md.generate("arithmetic__add_or_sub", 60, 3, "train")
    assert md.generate("arithmetic__add_or_sub", 60, 3, "train-easy") == easy  # cached, same
    with pytest.raises(ValueError, match="split must be one of"):
        md.generate("arithmetic__add_or_sub", 1, 3, "train-trivial")


def test_entropy_level_rule() -> None:
    # generate.py's _make_entropy_fn: level l of n maps (a, b) to (a + l/n (b-a), a + (l+1)/n (b-a))
    assert md._entropy_level(0, 1)((3.0, 10.0)) == (3.0, 10.0)
    lo, hi = md._entropy_level(1, 3)((3.0, 9.0))
    assert (lo, hi) == pytest.approx((5.0, 7.0))
