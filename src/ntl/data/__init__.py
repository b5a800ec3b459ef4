"""Data for the NTL experiments: the DeepMind mathematics generator and a digit-level tokenizer.

Heavy dependencies (``mathematics-dataset``, ``sympy``, ``tokenizers``, ``transformers``) are
imported only when a function needs them.
"""

from ntl.data.mathematics import generate, generate_many
from ntl.data.tokenizer import digit_tokenizer

__all__ = ["digit_tokenizer", "generate", "generate_many"]
