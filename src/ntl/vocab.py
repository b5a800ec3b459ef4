"""Number vocabularies: which token ids are numbers, and what their values are.

A :class:`NumberVocab` is an immutable pair ``(token_ids, values)`` plus the width ``vocab_size``
of the logits it applies to. Build it from a tokenizer (transformers, ``tokenizers``, tiktoken,
or a plain ``{token_string: id}`` mapping) or from explicit ``{token_id: value}`` pairs.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["NumberTable", "NumberVocab", "number_table", "parse_number_token", "squash_distances"]

# A single leading word-boundary marker is stripped: plain space (tiktoken, raw vocabularies),
# "Ġ" (byte-level BPE, GPT-2/RoBERTa/Llama-3 style), "▁" (SentencePiece) and the WordPiece
# continuation prefix "##" (BERT: "##7" continues a word, e.g. "x7" -> "x", "##7").
_MARKERS = (" ", "\u0120", "\u2581", "##")
_INTEGER = re.compile(r"[0-9]+")
_DECIMAL = re.compile(r"[0-9]+\.[0-9]+")
_MODES = ("digits", "numbers")


def parse_number_token(token: str, mode: str = "digits", decimals: bool = False) -> float | None:
    """The numeric value of a token string, or ``None`` if it is not a number token.

    ``mode="digits"``: exactly one ASCII digit ``0``-``9``, optionally after one marker
    (``" "``, ``"Ġ"``, ``"▁"``, or WordPiece's ``"##"``). ``mode="numbers"``: any run of ASCII digits (``"42"``, ``"007"``
    has value 7), and ``d+.d+`` decimals when ``decimals=True``. Signs, exponents (``"1e5"``),
    ``"inf"``/``"nan"``, underscores and non-ASCII digits are never numbers.
    """
    body = next((token[len(m) :] for m in _MARKERS if token.startswith(m)), token)
    if not body.isascii():
        return None
    if mode == "digits":
        return float(body) if len(body) == 1 and "0" <= body <= "9" else None
    if _INTEGER.fullmatch(body):
        return float(int(body))
    if decimals and _DECIMAL.fullmatch(body):
        return float(body)
    return None


def _token_table(tokenizer: Any) -> tuple[dict[int, str], int]:
    """``({id: token_string}, size_hint)`` for the supported tokenizer kinds, read-only."""
    if isinstance(tokenizer, Mapping):
        table: dict[int, str] = {}
        for token, token_id in tokenizer.items():
            if not isinstance(token, str):
                raise TypeError(f"tokenizer mapping keys must be str, got {token!r}")
            if isinstance(token_id, bool) or not isinstance(token_id, int) or token_id < 0:
                raise ValueError(
                    f"tokenizer mapping value for {token!r} must be an int >= 0, got {token_id!r}"
                )
            table[token_id] = token
        return table, 0
    if hasattr(tokenizer, "decode_single_token_bytes") and hasattr(tokenizer, "n_vocab"):
        # tiktoken.Encoding: ids may have gaps (e.g. between mergeable ranks and special tokens).
        n_vocab = int(tokenizer.n_vocab)
        table = {}
        for token_id in range(n_vocab):
            try:
                raw = tokenizer.decode_single_token_bytes(token_id)
            except KeyError:
                continue
            try:
                table[token_id] = raw.decode("utf-8")
            except UnicodeDecodeError:
                continue
        return table, n_vocab
    get_vocab = getattr(tokenizer, "get_vocab", None)
    if callable(get_vocab):
        # transformers PreTrainedTokenizerBase.get_vocab() includes added tokens;
        # tokenizers.Tokenizer.get_vocab needs with_added_tokens (default True).
        vocab = get_vocab()
        table = {int(token_id): str(token) for token, token_id in vocab.items()}
        size_hint = 0
        if hasattr(tokenizer, "get_vocab_size"):
            size_hint = int(tokenizer.get_vocab_size(with_added_tokens=True))
        elif hasattr(tokenizer, "__len__"):
            size_hint = len(tokenizer)
        return table, size_hint
    raise TypeError(
        "tokenizer must be a transformers tokenizer, a tokenizers.Tokenizer, a tiktoken Encoding "
        f"or a {{token_string: id}} mapping, got {type(tokenizer).__name__}"
    )


class NumberVocab:
    """The number tokens of a vocabulary of width ``vocab_size``.

    Attributes:
        token_ids: LongTensor (K,), ids of the number tokens, strictly increasing.
        values: FloatTensor (K,), their numeric values (duplicates allowed, e.g. "7" and " 7").
        vocab_size: the logit width V this vocabulary applies to (every id is < V).

    The tensors live on the CPU; losses fetch device copies through a per-instance cache,
    so the same vocab serves logits on any device. Treat the tensors as read-only.
    """

    def __init__(
        self, token_ids: Iterable[int] | Tensor, values: Iterable[float] | Tensor, vocab_size: int
    ) -> None:
        ids = torch.as_tensor(token_ids if isinstance(token_ids, Tensor) else list(token_ids))
        vals = (
            values
            if isinstance(values, Tensor)
            else torch.as_tensor([float(v) for v in values], dtype=torch.float64)
        )
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
            raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
        if ids.dim() != 1 or vals.dim() != 1 or ids.shape != vals.shape:
            raise ValueError(
                f"token_ids and values must be 1-D of equal length, got shapes "
                f"{tuple(ids.shape)} and {tuple(vals.shape)}"
            )
        if ids.numel() == 0:
            raise ValueError("the vocabulary has no number tokens (token_ids is empty)")
        if ids.is_floating_point() or ids.dtype == torch.bool:
            raise TypeError(f"token_ids must be integers, got dtype {ids.dtype}")
        vals = vals.detach().to(
            "cpu", torch.float64 if not vals.is_floating_point() else vals.dtype
        )
        ids = ids.detach().to("cpu", torch.long)
        if not bool(torch.isfinite(vals).all()):
            bad = int((~torch.isfinite(vals)).nonzero()[0])
            raise ValueError(
                f"values must be finite, got {vals[bad].item()} for token id {int(ids[bad])}"
            )
        if int(ids.min()) < 0 or int(ids.max()) >= vocab_size:
            raise ValueError(
                f"token ids must lie in [0, vocab_size={vocab_size}), got min {int(ids.min())} "
                f"and max {int(ids.max())}"
            )
        order = torch.argsort(ids)
        ids, vals = ids[order], vals[order]
        if bool((ids[1:] == ids[:-1]).any()):
            dup = int(ids[1:][ids[1:] == ids[:-1]][0])
            raise ValueError(f"token_ids must be unique, token id {dup} appears twice")
        self._token_ids = ids
        self._values64 = vals.to(torch.float64)  # exact master copy for float64 losses
        self._values = vals.to(torch.float32)
        self._vocab_size = vocab_size
        self._cache: dict[tuple[torch.device, torch.dtype], tuple[Tensor, Tensor, Tensor]] = {}
        self._tables: dict[tuple[torch.device, torch.dtype, float | None], NumberTable] = {}

    # --- constructors -----------------------------------------------------------------------

    @classmethod
    def from_values(cls, values: Mapping[int, float], vocab_size: int | None = None) -> NumberVocab:
        """From explicit ``{token_id: value}``; ``vocab_size`` defaults to ``max id + 1``."""
        if not isinstance(values, Mapping):
            raise TypeError(
                f"values must be a mapping {{token_id: value}}, got {type(values).__name__}"
            )
        if len(values) == 0:
            raise ValueError("values is empty: the vocabulary has no number tokens")
        for key, value in values.items():
            if isinstance(key, bool) or not isinstance(key, int):
                raise TypeError(f"values keys must be int token ids, got {key!r}")
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise TypeError(f"values[{key}] must be a real number, got {value!r}")
            if not math.isfinite(value):
                raise ValueError(f"values[{key}] must be finite, got {value!r}")
        size = max(values) + 1 if vocab_size is None else vocab_size
        return cls(list(values.keys()), [float(v) for v in values.values()], size)

    @classmethod
    def from_tokenizer(
        cls,
        tokenizer: Any,
        vocab_size: int | None = None,
        mode: str = "digits",
        decimals: bool = False,
    ) -> NumberVocab:
        """Find the number tokens of ``tokenizer`` (never modifies it).

        Args:
            tokenizer: a transformers tokenizer, a ``tokenizers.Tokenizer``, a tiktoken
                ``Encoding``, or a ``{token_string: id}`` mapping.
            vocab_size: the model's logit width; defaults to the tokenizer's size. May exceed it
                (padded heads) but must be > every token id.
            mode: ``"digits"`` (single digits, the paper) or ``"numbers"`` (any digit run).
            decimals: in ``"numbers"`` mode also take ``d+.d+`` tokens.
        """
        if mode not in _MODES:
            raise ValueError(f"mode must be one of {list(_MODES)}, got {mode!r}")
        if decimals and mode != "numbers":
            raise ValueError(f"decimals=True needs mode='numbers', got mode={mode!r}")
        table, size_hint = _token_table(tokenizer)
        if not table:
            raise ValueError(f"tokenizer {type(tokenizer).__name__} has an empty vocabulary")
        min_size = max(table) + 1
        if vocab_size is None:
            vocab_size = max(min_size, size_hint)
        elif isinstance(vocab_size, bool) or not isinstance(vocab_size, int):
            raise TypeError(f"vocab_size must be an int, got {type(vocab_size).__name__}")
        elif vocab_size < min_size:
            raise ValueError(
                f"vocab_size={vocab_size} is smaller than the tokenizer's largest id + 1 = {min_size}"
            )
        found = {}
        for token_id, token in table.items():
            value = parse_number_token(token, mode, decimals)
            if value is not None:
                found[token_id] = value
        if not found:
            raise ValueError(
                f"tokenizer {type(tokenizer).__name__} has no number tokens in mode={mode!r} "
                f"(searched {len(table)} tokens)"
            )
        return cls(list(found.keys()), list(found.values()), vocab_size)

    # --- accessors --------------------------------------------------------------------------

    @property
    def token_ids(self) -> Tensor:
        """LongTensor (K,), ids of the number tokens, sorted."""
        return self._token_ids

    @property
    def values(self) -> Tensor:
        """FloatTensor (K,), the numeric value of each number token."""
        return self._values

    @property
    def vocab_size(self) -> int:
        """The logit width V."""
        return self._vocab_size

    def __len__(self) -> int:
        return int(self._token_ids.numel())

    def __repr__(self) -> str:
        return (
            f"NumberVocab(K={len(self)}, vocab_size={self._vocab_size}, "
            f"values in [{self._values.min().item():g}, {self._values.max().item():g}])"
        )

    def to_dict(self) -> dict[int, float]:
        """``{token_id: value}`` (round-trips through :meth:`from_values`)."""
        return dict(zip(self._token_ids.tolist(), self._values.tolist()))

    def device_tensors(
        self, device: torch.device, dtype: torch.dtype
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(token_ids (K,), values (K,) in dtype, index_of (V,))`` on ``device``, cached.

        ``index_of[t]`` is the position of token id ``t`` in ``token_ids``, or -1 if ``t`` is
        not a number token.
        """
        key = (torch.device(device), dtype)
        cached = self._cache.get(key)
        if cached is None:
            index_of = torch.full((self._vocab_size,), -1, dtype=torch.long)
            index_of[self._token_ids] = torch.arange(len(self))
            cached = (
                self._token_ids.to(key[0]),
                self._values64.to(key[0], dtype),
                index_of.to(key[0]),
            )
            self._cache[key] = cached
        return cached

    def number_table(
        self, device: torch.device, dtype: torch.dtype, squash_factor: float | None = None
    ) -> NumberTable:
        """:func:`number_table` of this vocabulary on ``device`` in ``dtype``, cached."""
        key = (torch.device(device), dtype, squash_factor)
        table = self._tables.get(key)
        if table is None:
            table = number_table(
                self._token_ids, self._values64, self._vocab_size, key[0], dtype, squash_factor
            )
            self._tables[key] = table
        return table


def squash_distances(dist: Tensor, values: Tensor, squash_factor: float | None) -> Tensor:
    """ntloss's ``squash_factor`` applied to distances ``dist`` between number values.

    Non-zero distances are mapped affinely so that the smallest non-zero distance between two
    values of the vocabulary becomes 1 and the largest becomes ``squash_factor``; 0 stays 0.
    ``None`` returns ``dist`` unchanged. ``values`` (K,) are the vocabulary's values.
    """
    if squash_factor is None:
        return dist
    pairwise = (values.unsqueeze(0) - values.unsqueeze(1)).abs()  # (K, K)
    d_max = pairwise.max()
    nonzero = pairwise[pairwise > 0]
    d_min = nonzero.min() if nonzero.numel() else d_max
    scale = (squash_factor - 1.0) / (d_max - d_min) if bool(d_max > d_min) else d_max * 0.0
    squashed = (dist - d_min).mul_(scale).add_(1.0)
    return squashed.masked_fill_(dist == 0, 0.0)


@dataclass(frozen=True)
class NumberTable:
    """The number tokens as lookup tables for the fused and linear losses (one device, one dtype).

    A number token's *slot* is 1 + its position in ``token_ids``; slot 0 means "not a number
    token", so that ``slot_of[labels].nonzero()`` finds the number labels in one step and the
    slots index the distance tables directly. Built once per vocabulary, device, dtype and
    squash factor (:meth:`NumberVocab.number_table`), so that a loss call only looks them up.
    """

    token_ids: Tensor  # (K,) long
    values: Tensor  # (K,) in the loss dtype
    slot_of: Tensor  # (V,) long: the slot of each token id, 0 for non-number tokens
    slot_dist: Tensor  # (K, K + 1): |v_k - v_slot| (squashed if asked; column 0: 0), for WAS
    slot_diff: Tensor  # (K + 1, K): v_slot - v_k (row 0: 0), for the value-based kinds
    plain_id: int | None  # a non-number token id (stands in for ignored labels); None if none


def number_table(
    token_ids: Tensor,
    values: Tensor,
    vocab_size: int,
    device: torch.device,
    dtype: torch.dtype,
    squash_factor: float | None = None,
) -> NumberTable:
    """Build the :class:`NumberTable` of unique ``token_ids`` (K,) with ``values`` (K,).

    The distance tables are computed in float64 and rounded once to ``dtype``.
    """
    ids = token_ids.detach().to(device=device, dtype=torch.long)
    exact = values.detach().to(device=device, dtype=torch.float64)
    diff = torch.cat([exact.new_zeros(1, exact.numel()), exact.unsqueeze(1) - exact.unsqueeze(0)])
    dist = squash_distances(diff.t().abs(), exact, squash_factor)  # (K, K + 1)
    slot_of = torch.zeros(vocab_size, dtype=torch.long, device=device)
    slot_of[ids] = torch.arange(1, ids.numel() + 1, device=device)
    taken = set(token_ids.tolist())
    plain_id = next((i for i in range(vocab_size) if i not in taken), None)
    return NumberTable(ids, exact.to(dtype), slot_of, dist.to(dtype), diff.to(dtype), plain_id)
