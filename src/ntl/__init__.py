"""Number Token Loss: a regression-like loss on number tokens for language models.

>>> from ntl import NumberVocab, cross_entropy_with_ntl
>>> vocab = NumberVocab.from_tokenizer(tokenizer)            # doctest: +SKIP
>>> loss = cross_entropy_with_ntl(logits, labels, vocab)     # doctest: +SKIP
"""

from ntl.linear import linear_cross_entropy_with_ntl
from ntl.loss import (
    CrossEntropyWithNTL,
    NTLoss,
    count_targets,
    cross_entropy_with_ntl,
    gaussian_number_targets,
    number_token_loss,
    predict_numbers,
)
from ntl.number_level import number_level_loss
from ntl.vocab import NumberVocab

__all__ = [
    "CrossEntropyWithNTL",
    "NTLoss",
    "NumberVocab",
    "count_targets",
    "cross_entropy_with_ntl",
    "gaussian_number_targets",
    "linear_cross_entropy_with_ntl",
    "number_level_loss",
    "number_token_loss",
    "predict_numbers",
]
