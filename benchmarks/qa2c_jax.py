"""QA2C: the JAX engine (whole loop compiled) side by side with the torch engine.

For the paper-figure agents A2C5, HA2Q, HQ2C, HQ2Q with the paper's algorithm, at population
sizes P = 1 and P = 10 (seeds trained in lockstep in one process), prints microseconds per
agent-step (one environment step of one agent, its action sampling and its update) of both
engines, measured in interleaved rounds (median), their ratio, and the JAX compile time.
Targets (issue 13): HA2Q <= 3.5 us per agent-step at P = 10, <= 15 us at P = 1.

Times are process CPU seconds (``time.process_time``; XLA and torch both run one thread here):
on a shared machine the wall clock also measures the other tenants, so the JAX engine's wall
clock per agent-step is printed beside its CPU time, with the 1-minute load average. Compile
time is the first chunk minus a steady chunk, wall clock and CPU. ``--torch-iters 0`` skips the
torch engine. Usage:

    python benchmarks/qa2c_jax.py [--rounds 3] [--chunk 2000] [--torch-iters 200] [--agents A2C5,HA2Q]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import os
import statistics
import time

import torch

import qa2c.jax_engine  # noqa: F401  (first: one XLA thread, float64 mode)
from qa2c.a2c import A2C
from qa2c.experiments.cartpole import CONFIGS, make_agent
from qa2c.jax_engine.train import JaxPopulation

CLOCK = time.process_time


def _agents(name: str, p: int) -> list:  # type: ignore[type-arg]
    cfg = CONFIGS[name]
    return [make_agent(dataclasses.replace(cfg, seed=s), warn=False) for s in range(p)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--chunk", type=int, default=2000, help="JAX iterations per round")
    ap.add_argument("--torch-iters", type=int, default=200, help="torch iterations per round")
    ap.add_argument("--agents", default="A2C5,HA2Q,HQ2C,HQ2Q")
    ap.add_argument("--pops", default="1,10")
    args = ap.parse_args()
    logging.disable(logging.WARNING)
    torch.set_num_threads(1)
    rows = []
    for name in args.agents.split(","):
        algo = CONFIGS[name].a2c
        for p in (int(x) for x in args.pops.split(",")):
            t0, c0 = time.perf_counter(), CLOCK()
            pop = JaxPopulation(_agents(name, p), list(range(p)), algo, max_chunk=args.chunk)
            pop.run_chunk(args.chunk)
            first, first_cpu = time.perf_counter() - t0, CLOCK() - c0
            learner = A2C(_agents(name, p), list(range(p)), algo)
            for _ in range(10 if args.torch_iters else 0):
                learner.iterate()
            jx, jw, tc, steady = [], [], [], []
            for _ in range(args.rounds):  # interleaved rounds
                w0, c0 = time.perf_counter(), CLOCK()
                pop.run_chunk(args.chunk)
                steady.append((time.perf_counter() - w0, CLOCK() - c0))
                jw.append(steady[-1][0] / (args.chunk * p) * 1e6)
                jx.append(steady[-1][1] / (args.chunk * p) * 1e6)
                c0 = CLOCK()
                for _ in range(args.torch_iters):
                    learner.iterate()
                if args.torch_iters:
                    tc.append((CLOCK() - c0) / (args.torch_iters * p) * 1e6)
            j, w = statistics.median(jx), statistics.median(jw)
            t = statistics.median(tc) if tc else math.nan
            compile_s = first - statistics.median(s[0] for s in steady)
            compile_cpu = first_cpu - statistics.median(s[1] for s in steady)
            load = os.getloadavg()[0]
            rows.append((name, p, j, w, t, t / j, compile_s, compile_cpu, load))
            print(
                f"{name:5s} P={p:<3d} jax {j:7.2f} us/agent-step CPU ({w:7.2f} wall)  "
                f"torch {t:8.1f}  torch/jax {t / j:6.1f}x  "
                f"compile {compile_s:5.1f} s wall ({compile_cpu:4.1f} s CPU)  load {load:.1f}",
                flush=True,
            )
    print(
        "\n| agent | P | JAX µs/agent-step CPU | JAX wall | torch µs/agent-step CPU | torch / JAX "
        "| JAX compile s wall (CPU) | load |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for name, p, j, w, t, r, c, cc, load in rows:
        print(
            f"| {name} | {p} | {j:.2f} | {w:.2f} | {t:.1f} | {r:.1f}x | {c:.1f} ({cc:.1f}) "
            f"| {load:.1f} |"
        )


if __name__ == "__main__":
    main()
