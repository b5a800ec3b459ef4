"""QA2C: the JAX engine (whole loop compiled) side by side with the torch engine.

For the paper-figure agents A2C5, HA2Q, HQ2C, HQ2Q with the paper's algorithm, at population
sizes P = 1 and P = 10 (seeds trained in lockstep in one process), prints microseconds per
agent-step (one environment step of one agent, its action sampling and its update) of both
engines, measured in interleaved rounds (median), their ratio, and the JAX compile time.
Targets (issue 13): HA2Q <= 3.5 us per agent-step at P = 10, <= 15 us at P = 1.

Times are process CPU seconds (``time.process_time``; XLA and torch both run one thread here):
on a shared machine the wall clock also measures the other tenants. Compile time is wall clock
(first chunk minus a steady chunk). Usage:

    python benchmarks/qa2c_jax.py [--rounds 3] [--chunk 2000] [--torch-iters 200] [--agents A2C5,HA2Q]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
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
            t0 = time.perf_counter()
            pop = JaxPopulation(_agents(name, p), list(range(p)), algo, max_chunk=args.chunk)
            pop.run_chunk(args.chunk)
            first = time.perf_counter() - t0
            learner = A2C(_agents(name, p), list(range(p)), algo)
            for _ in range(10):
                learner.iterate()
            jx, tc, steady = [], [], []
            for _ in range(args.rounds):  # interleaved rounds
                w0, c0 = time.perf_counter(), CLOCK()
                pop.run_chunk(args.chunk)
                steady.append(time.perf_counter() - w0)
                jx.append((CLOCK() - c0) / (args.chunk * p) * 1e6)
                c0 = CLOCK()
                for _ in range(args.torch_iters):
                    learner.iterate()
                tc.append((CLOCK() - c0) / (args.torch_iters * p) * 1e6)
            j, t = statistics.median(jx), statistics.median(tc)
            compile_s = first - statistics.median(steady)
            rows.append((name, p, j, t, t / j, compile_s))
            print(
                f"{name:5s} P={p:<3d} jax {j:7.2f} us/agent-step  torch {t:8.1f}  "
                f"torch/jax {t / j:6.1f}x  compile {compile_s:5.1f} s",
                flush=True,
            )
    print("\n| agent | P | JAX µs/agent-step | torch µs/agent-step | torch / JAX | JAX compile s |")
    print("|---|---|---|---|---|---|")
    for name, p, j, t, r, c in rows:
        print(f"| {name} | {p} | {j:.2f} | {t:.1f} | {r:.1f}x | {c:.1f} |")


if __name__ == "__main__":
    main()
