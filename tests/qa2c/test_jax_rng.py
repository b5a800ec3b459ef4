"""The engine's unrolled Threefry-2x32 draws exactly what jax.random draws."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

from qa2c.jax_engine.rng import random_words, split  # noqa: E402


@pytest.mark.parametrize("n", [1, 2, 3, 6, 17])
def test_words_and_split_equal_jax_random(n: int) -> None:
    rng = np.random.default_rng(n)
    for _ in range(20):
        key = jnp.asarray(rng.integers(0, 2**32, size=2, dtype=np.uint64).astype(np.uint32))
        np.testing.assert_array_equal(
            random_words(key, n), jax.random.bits(key, (n, 2), jnp.uint32)
        )
        np.testing.assert_array_equal(split(key, n), jax.random.split(key, n))


def test_batched_under_vmap_and_jit() -> None:
    keys = jax.random.split(jax.random.PRNGKey(7), 10)
    got = jax.jit(jax.vmap(lambda k: random_words(k, 4)))(keys)
    want = jax.vmap(lambda k: jax.random.bits(k, (4, 2), jnp.uint32))(keys)
    np.testing.assert_array_equal(got, want)
