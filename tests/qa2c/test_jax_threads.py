"""qa2c.jax_engine starts XLA with a one-thread CPU pool and leaves every thread its CPUs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("jax")

PROBE = textwrap.dedent(
    """
    import json, os
    before = sorted(os.sched_getaffinity(0))
    import qa2c.jax_engine
    import jax, jax.numpy as jnp
    jax.block_until_ready(jax.jit(lambda x: x * 2.0)(jnp.ones(4)))
    threads = {}
    for tid in os.listdir("/proc/self/task"):
        with open(f"/proc/self/task/{tid}/comm") as f:
            name = f.read().strip()
        threads[tid] = (name, sorted(os.sched_getaffinity(int(tid))))
    print(json.dumps({"before": before, "main": sorted(os.sched_getaffinity(0)),
                      "threads": threads}))
    """
)


@pytest.mark.skipif(
    not hasattr(os, "sched_getaffinity") or len(os.sched_getaffinity(0)) < 2,
    reason="needs Linux CPU affinity and at least two CPUs",
)
def test_one_xla_pool_thread_and_every_thread_keeps_its_cpus() -> None:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=300
    )
    info = json.loads(out.stdout.strip().splitlines()[-1])
    assert info["main"] == info["before"]
    pool = [cpus for name, cpus in info["threads"].values() if "XLAEigen" in name]
    assert len(pool) == 1, info["threads"]  # one per core before the fix
    assert all(cpus == info["before"] for _, cpus in info["threads"].values()), info["threads"]
