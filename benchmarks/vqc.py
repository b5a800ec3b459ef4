"""Forward+backward of the QA2C paper circuit: qa2c.VQC vs PennyLane default.qubit vs an MLP.

PennyLane runs the same circuit (RX encoding, L layers of CNOT ring + RZ RY RZ, ⟨Z⟩ on 4 wires)
with interface="torch", diff_method="backprop" and parameter broadcasting over the batch. The MLP
is Linear(4, h) → ReLU → Linear(h, 4) with h chosen so that its parameter count is closest to the
circuit's 12·L weights. All three run interleaved in one process, one thread by default. Every call
is timed on its own, by default in this thread's CPU time (a long PennyLane call on a busy shared
machine is otherwise charged for the time other processes ran); the table shows the 10th
percentile ("p10") and the median of the per-call times.

    python benchmarks/vqc.py                    # layers 2 4 6, batch 1 and 256
    python benchmarks/vqc.py --layers 2 --batch 1 --rounds 5
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from collections.abc import Callable

import torch
from torch import nn

from qa2c import VQC


def pennylane_step(n_layers: int, batch: int) -> Callable[[], None]:
    import pennylane as qml

    dev = qml.device("default.qubit", wires=4)

    @qml.qnode(dev, interface="torch", diff_method="backprop")
    def circuit(x: torch.Tensor, w: torch.Tensor) -> list[object]:
        qml.RX(math.pi * x[..., 0] / 4.8, wires=0)
        qml.RX(2 * torch.atan(x[..., 1]), wires=1)
        qml.RX(math.pi * x[..., 2] / 0.418, wires=2)
        qml.RX(2 * torch.atan(x[..., 3]), wires=3)
        for layer in range(n_layers):
            for i in range(4):
                qml.CNOT(wires=[i, (i + 1) % 4])
            for i in range(4):
                qml.RZ(w[i, layer, 0], wires=i)
                qml.RY(w[i, layer, 1], wires=i)
                qml.RZ(w[i, layer, 2], wires=i)
        return [qml.expval(qml.PauliZ(i)) for i in range(4)]

    w = nn.Parameter(torch.rand(4, n_layers, 3) * 2 * math.pi)
    x = torch.randn(batch, 4) if batch > 1 else torch.randn(4)

    def step() -> None:
        out = torch.stack(circuit(x, w), dim=-1)
        out.sum().backward()

    return step


def ours_step(n_layers: int, batch: int) -> Callable[[], None]:
    vqc = VQC(n_qubits=4, n_layers=n_layers, measure=(0, 1, 2, 3))
    x = torch.randn(batch, 4)

    def step() -> None:
        vqc(x).sum().backward()

    return step


def mlp_hidden(n_params: int) -> int:
    return max(1, round((n_params - 4) / 9))  # Linear(4,h) + Linear(h,4): 9h + 4 parameters


def mlp_step(n_layers: int, batch: int) -> Callable[[], None]:
    h = mlp_hidden(12 * n_layers)
    mlp = nn.Sequential(nn.Linear(4, h), nn.ReLU(), nn.Linear(h, 4))
    x = torch.randn(batch, 4)

    def step() -> None:
        mlp(x).sum().backward()

    return step


def measure(
    steps: dict[str, Callable[[], None]],
    calls: dict[str, int],
    rounds: int,
    clock: Callable[[], float],
) -> dict[str, list[float]]:
    """Per-call times in µs, interleaved: every round runs each candidate ``calls[name]`` times."""
    times: dict[str, list[float]] = {name: [] for name in steps}
    for fn in steps.values():
        for _ in range(3):
            fn()  # warm-up
    for _ in range(rounds):
        for name, fn in steps.items():
            for _ in range(calls[name]):
                t0 = clock()
                fn()
                times[name].append((clock() - t0) * 1e6)
    return times


def low(values: list[float], q: float = 0.1) -> float:
    """The q-quantile: robust to preemption by other processes (which only ever adds time)."""
    ordered = sorted(values)
    return ordered[int(q * (len(ordered) - 1))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, nargs="+", default=[2, 4, 6])
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-pennylane", action="store_true")
    parser.add_argument(
        "--clock",
        choices=["cpu", "wall"],
        default="cpu",
        help="cpu: this thread's CPU time (time.thread_time; immune to preemption on a shared "
        "machine); wall: time.perf_counter",
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    print(
        f"torch {torch.__version__}, threads {args.threads}, rounds {args.rounds}, {args.clock} clock; µs per forward+backward"
    )
    header = (
        f"{'L':>2} {'B':>4} | {'ours p10':>9} {'med':>7} | {'PL p10':>9} {'med':>7} | "
        f"{'MLP p10':>8} {'med':>6} (h, params) | {'PL/ours':>7} {'ours/MLP':>8}"
    )
    print(header)
    for n_layers in args.layers:
        for batch in args.batch:
            steps = {"ours": ours_step(n_layers, batch), "mlp": mlp_step(n_layers, batch)}
            calls = {"ours": 20, "mlp": 20}
            if not args.no_pennylane:
                steps["pl"] = pennylane_step(n_layers, batch)
                calls["pl"] = 2
            t = measure(steps, calls, args.rounds, clock)
            best = {k: low(v) for k, v in t.items()}
            med = {k: statistics.median(v) for k, v in t.items()}
            h = mlp_hidden(12 * n_layers)
            pl = f"{best['pl']:9.0f} {med['pl']:7.0f}" if "pl" in best else f"{'-':>9} {'-':>7}"
            ratio = f"{best['pl'] / best['ours']:7.1f}" if "pl" in best else f"{'-':>7}"
            print(
                f"{n_layers:>2} {batch:>4} | {best['ours']:9.0f} {med['ours']:7.0f} | {pl} | "
                f"{best['mlp']:8.0f} {med['mlp']:6.0f} ({h}, {9 * h + 4:>2}) | {ratio} "
                f"{best['ours'] / best['mlp']:8.2f}",
                flush=True,
            )


if __name__ == "__main__":
    main()
