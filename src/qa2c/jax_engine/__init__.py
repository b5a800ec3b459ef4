"""The JAX engine of qa2c: the whole training loop compiled as one XLA program per chunk.

Populations of agents (independent weights, Adam states, environments and keys) run by
``jax.vmap``, environment steps by a compiled loop; metrics and checkpoints between chunks. The
circuit family, the heads and A2C in both forms (the paper's one-step update and the improved
n-envs / GAE / entropy / normalisation / clipping / annealing form) follow the torch engine
(``qa2c.vqc``, ``qa2c.agents``, ``qa2c.a2c``), which stays the reference: the tests compare the
two update by update in float64.

Importing this package (before jax itself is imported) limits XLA to one CPU thread, and enables JAX's float64 mode (``jax_enable_x64``): the environments' physics
run in float64 like Gymnasium's, whatever dtype the agents compute in. Needs the ``jax`` extra
(``pip install 'ntl-qa2c[jax]'``).
"""

from __future__ import annotations

import os
import sys

# One XLA thread per process: the programs are long chains of tiny ops, and Eigen's intra-op
# threads only add contention (2-5x slower on a busy 2-core machine). Only before jax loads.
if "jax" not in sys.modules:
    _flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_multi_thread_eigen" not in _flags:
        os.environ["XLA_FLAGS"] = (
            f"{_flags} --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1".strip()
        )

try:
    import gymnax  # noqa: F401
    import jax
    import optax  # noqa: F401
except ImportError as _e:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"qa2c.jax_engine needs the 'jax' extra (jax, gymnax, optax): "
        f"pip install 'ntl-qa2c[jax]' ({_e})"
    ) from _e

jax.config.update("jax_enable_x64", True)

from qa2c.jax_engine.circuit import CircuitFn, circuit_fn  # noqa: E402
from qa2c.jax_engine.heads import AgentFns, agent_fns  # noqa: E402

__all__ = ["AgentFns", "CircuitFn", "agent_fns", "circuit_fn"]
