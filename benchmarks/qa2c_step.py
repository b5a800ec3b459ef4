"""QA2C training-step speed: our loop vs the same loop on PennyLane, and population throughput.

Prints, in one run (torch with 1 thread):
  1. faithful single-agent step time (act + env step + update, batch 1) of classical A2C and of
     HA2Q on our simulator and on PennyLane default.qubit (``VQC(backend="pennylane")``), and
     the ratios HA2Q / A2C (target <= 1.5) and PennyLane / ours (target >= 15);
  2. population throughput (10 seeds in lockstep, one process) of the paper-figure configs
     A2C5, HA2Q, HQ2C, HQ2Q and the improved pure-quantum config, and the projected wall-clock
     of the paper's figure (4 configs x 10 seeds x 1 M steps) on 2 cores (2 processes at once).

Times are process CPU seconds (``time.process_time``) by default: on a shared machine the wall
clock measures the other tenants; ``--wall`` switches to wall-clock time.

Usage: python benchmarks/qa2c_step.py [--steps 3000] [--pl-steps 150] [--rounds 5] [--pop-iters 400] [--wall]
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import statistics
import time

import torch

from qa2c.a2c import A2C, A2CConfig
from qa2c.agents import build_agent
from qa2c.experiments.cartpole import CONFIGS, make_agent

CLOCK = time.process_time


def make_learner(name: str, backend: str = "torch") -> A2C:
    """One agent with the faithful algorithm, warmed up."""
    kw = {} if backend == "torch" else {"backend": backend}
    learner = A2C([build_agent(name, seed=0, warn=False, **kw)], [0], A2CConfig())
    for _ in range(20):
        learner.iterate()
    return learner


def step_time(learner: A2C, steps: int) -> float:
    """Seconds per faithful training step of one agent."""
    t0 = CLOCK()
    for _ in range(steps):
        learner.iterate()
    return (CLOCK() - t0) / steps


def population_rate(config_name: str, n_seeds: int, iters: int) -> float:
    """Agent environment steps per second of ``n_seeds`` agents trained in lockstep."""
    cfg = CONFIGS[config_name]
    agents = [make_agent(dataclasses.replace(cfg, seed=s), warn=False) for s in range(n_seeds)]
    learner = A2C(agents, list(range(n_seeds)), cfg.a2c)
    for _ in range(max(5, iters // 10)):
        learner.iterate()
    steps0, t0 = learner.steps, CLOCK()
    for _ in range(iters):
        learner.iterate()
    return n_seeds * (learner.steps - steps0) / (CLOCK() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3000, help="timed steps per torch agent")
    parser.add_argument("--pl-steps", type=int, default=150, help="timed steps on PennyLane")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    parser.add_argument(
        "--pop-iters", type=int, default=400, help="timed lockstep iterations (0: skip)"
    )
    parser.add_argument("--seeds", type=int, default=10, help="population size")
    parser.add_argument("--wall", action="store_true", help="wall-clock instead of CPU time")
    args = parser.parse_args()
    global CLOCK
    CLOCK = time.perf_counter if args.wall else time.process_time
    print(f"clock: {'wall' if args.wall else 'process CPU'} time, torch threads = 1")
    torch.set_num_threads(1)
    logging.disable(logging.WARNING)

    # interleaved rounds: a slow phase of a shared machine hits every candidate of a round alike
    learners = {"A2C": make_learner("A2C"), "HA2Q": make_learner("HA2Q")}
    steps = {"A2C": args.steps // args.rounds, "HA2Q": args.steps // args.rounds}
    try:
        learners["PennyLane"] = make_learner("HA2Q", backend="pennylane")
        steps["PennyLane"] = max(1, args.pl_steps // args.rounds)
    except ImportError as e:
        print(f"  PennyLane not available ({e})")
    times: dict[str, list[float]] = {name: [] for name in learners}
    for _ in range(args.rounds):
        for name, learner in learners.items():
            times[name].append(step_time(learner, steps[name]))
    med = {name: statistics.median(t) for name, t in times.items()}
    print(
        f"single agent, faithful step (ms, median of {args.rounds} interleaved rounds): "
        f"A2C {med['A2C'] * 1e3:.3f}   HA2Q {med['HA2Q'] * 1e3:.3f}"
    )
    ratios = sorted(h / a for h, a in zip(times["HA2Q"], times["A2C"]))
    print(
        f"  HA2Q / A2C = {statistics.median(ratios):.2f} (rounds {ratios[0]:.2f}-{ratios[-1]:.2f})"
        "   (target <= 1.5)"
    )
    if "PennyLane" in times:
        ratios = sorted(p / h for p, h in zip(times["PennyLane"], times["HA2Q"]))
        print(f"  HA2Q on PennyLane default.qubit: {med['PennyLane'] * 1e3:.2f} ms/step")
        print(
            f"  PennyLane / ours = {statistics.median(ratios):.1f}x "
            f"(rounds {ratios[0]:.1f}-{ratios[-1]:.1f})   (target >= 15)"
        )

    if args.pop_iters <= 0:
        return
    print(f"population of {args.seeds} seeds in lockstep, one process, agent-steps/s:")
    hours = 0.0
    for name in ("A2C5", "HA2Q", "HQ2C", "HQ2Q"):
        rate = population_rate(name, args.seeds, args.pop_iters)
        h = args.seeds * 1_000_000 / rate / 3600
        hours += h
        print(f"  {name:5s} {rate:9.0f}  -> {args.seeds} seeds x 1M steps: {h:.2f} h on one core")
    print(
        f"paper figure (4 configs x {args.seeds} seeds x 1M steps): {hours:.2f} core-hours = "
        f"{hours / 2:.2f} h wall-clock on 2 cores (target <= 2 h; paper's stack ~200 h)"
    )
    rate = population_rate("Q2Q-improved", args.seeds, max(20, args.pop_iters // 20))
    cfg = CONFIGS["Q2Q-improved"]
    print(
        f"  Q2Q-improved {rate:9.0f} agent-steps/s -> {args.seeds} seeds x "
        f"{cfg.total_steps} steps: {args.seeds * cfg.total_steps / rate / 60:.1f} min on one core"
    )


if __name__ == "__main__":
    main()
