"""Counter-based random words for the compiled loop: Threefry-2x32 (20 rounds), unrolled.

The engine draws its random numbers with ``jax.random``'s default generator, Threefry-2x32
(Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011). On CPU, JAX lowers the
hash as a loop of 5 iterations (to keep compile times down): inside the engine's step that loop
was about 80 of the ~300 kernels XLA launched per step for 10 agents, each iteration copying its
loop state. Written out as the 20 rounds of adds, rotations and xors, the same hash is a single
fused elementwise kernel. The functions here return exactly what ``jax.random.bits`` and
``jax.random.split`` return for a raw ``uint32[2]`` key (``tests/qa2c/test_jax_rng.py``), so the
engine's random streams are JAX's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["random_words", "split"]

Array = jax.Array
_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)


def _rotl(x: Array, r: int) -> Array:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def threefry2x32(key: Array, hi: Array, lo: Array) -> tuple[Array, Array]:
    """Threefry-2x32-20 of the counters ``(hi, lo)`` (uint32, any shape) under ``key`` (2,)."""
    ks = (key[0], key[1], key[0] ^ key[1] ^ _PARITY)
    x0, x1 = hi + ks[0], lo + ks[1]
    for block in range(5):
        for r in _ROTATIONS[block % 2]:
            x0 = x0 + x1
            x1 = _rotl(x1, r) ^ x0
        x0 = x0 + ks[(block + 1) % 3]
        x1 = x1 + ks[(block + 2) % 3] + np.uint32(block + 1)
    return x0, x1


def _counters(n: int, width: int) -> tuple[Array, Array]:
    """The flat index of an (n, width) array as 64-bit counters (hi, lo)."""
    lo = jnp.arange(n * width, dtype=jnp.uint32).reshape(n, width)
    return jnp.zeros_like(lo), lo


def random_words(key: Array, n: int) -> Array:
    """``jax.random.bits(key, (n, 2), jnp.uint32)`` for a raw key ``uint32[2]``."""
    x0, x1 = threefry2x32(key, *_counters(n, 2))
    return x0 ^ x1


def split(key: Array, n: int) -> Array:
    """``jax.random.split(key, n)`` for a raw key ``uint32[2]``: (n, 2) keys."""
    x0, x1 = threefry2x32(key, *_counters(n, 1))
    return jnp.concatenate([x0, x1], -1)
