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

import contextlib
import os
import sys

# One XLA thread per process: the programs are long chains of tiny ops, and Eigen's intra-op
# threads only add contention (2-5x slower on a busy 2-core machine). Only before jax loads.
_FIRST_LOAD = "jax" not in sys.modules
if _FIRST_LOAD:
    _flags = os.environ.get("XLA_FLAGS", "")
    if "xla_cpu_multi_thread_eigen" not in _flags:
        os.environ["XLA_FLAGS"] = f"{_flags} --xla_cpu_multi_thread_eigen=false".strip()


def _start_on_one_cpu() -> set[int] | None:
    """Restrict this thread to one of its CPUs while JAX starts; return the CPUs to restore.

    XLA's CPU client sizes its thread pool ("XLAEigen") by the CPUs the process may use when it
    starts. With two or more, the compiled loop's tiny kernels are handed between the pool's
    threads on different cores and the idle ones spin: on an idle 2-core machine HA2Q at 10
    agents took 9.7 µs of CPU and 6.7 µs wall per agent-step, against 5.3 / 5.3 with a pool of
    one thread (``benchmarks/qa2c_jax.py``). None where the OS has no affinity call.
    """
    if not _FIRST_LOAD or not hasattr(os, "sched_getaffinity"):
        return None
    cpus = os.sched_getaffinity(0)
    if len(cpus) < 2:
        return None
    os.sched_setaffinity(0, {min(cpus)})
    return cpus


def _restore_cpus(cpus: set[int]) -> None:
    """Give every thread of the process (the pool's too, created pinned) its CPUs back."""
    for tid in os.listdir("/proc/self/task"):
        with contextlib.suppress(OSError):  # a thread that ended meanwhile
            os.sched_setaffinity(int(tid), cpus)


_cpus = _start_on_one_cpu()
try:
    import gymnax  # noqa: F401
    import jax
    import optax  # noqa: F401

    if _cpus is not None:
        jax.devices("cpu")  # start the CPU client (and its one-thread pool) now
except ImportError as _e:  # pragma: no cover - depends on the environment
    raise ImportError(
        f"qa2c.jax_engine needs the 'jax' extra (jax, gymnax, optax): "
        f"pip install 'ntl-qa2c[jax]' ({_e})"
    ) from _e
finally:
    if _cpus is not None:
        _restore_cpus(_cpus)

jax.config.update("jax_enable_x64", True)

from qa2c.jax_engine.circuit import CircuitFn, circuit_fn  # noqa: E402
from qa2c.jax_engine.heads import AgentFns, agent_fns  # noqa: E402

__all__ = ["AgentFns", "CircuitFn", "agent_fns", "circuit_fn"]
