"""CE + Number Token Loss, forward + backward: torch CE, ntloss, our reference, fused and linear paths.

    python benchmarks/ntl_loss.py [--sizes small|all] [--threads N] [--reps R] [--max-gib G]

One process, float32, interleaved repetitions (every method once per round, median over rounds),
10 % number-token labels (a digit vocabulary at ids 100..109, or 10..19 for V < 200).
Peak memory of the linear variant is measured in fresh subprocesses (RSS high-water mark, VmHWM).
Sizes whose estimated working set exceeds ``--max-gib`` are skipped with a note.
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ntl import NumberVocab, cross_entropy_with_ntl
from ntl.linear import linear_cross_entropy_with_ntl

NTL_WEIGHT = 0.3
NUMBER_FRAC = 0.1
SEQ_LEN = 512
LINEAR_METHODS = ("materialised + reference", "materialised + fused", "ours linear (chunked)")


def digit_ids(vocab_size: int) -> list[int]:
    first = 100 if vocab_size >= 200 else 10
    return list(range(first, first + 10))


def make_tokenizer(vocab_size: int) -> object:
    """An offline word-level HF tokenizer of width V whose digits sit at :func:`digit_ids`."""
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    ids = digit_ids(vocab_size)
    table = {"[UNK]": 0}
    table.update({f"w{i}": i for i in range(1, vocab_size) if i not in ids})
    table.update({str(d): i for d, i in enumerate(ids)})
    model = models.WordLevel(table, unk_token="[UNK]")
    return PreTrainedTokenizerFast(tokenizer_object=Tokenizer(model), unk_token="[UNK]")


def make_labels(rows: int, vocab_size: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    ids = torch.tensor(digit_ids(vocab_size))
    labels = torch.randint(20 if vocab_size < 200 else 200, vocab_size, (rows,), generator=gen)
    is_number = torch.rand(rows, generator=gen) < NUMBER_FRAC
    labels[is_number] = ids[torch.randint(0, 10, (int(is_number.sum()),), generator=gen)]
    return labels


def number_vocab(vocab_size: int) -> NumberVocab:
    return NumberVocab.from_values(
        {i: float(d) for d, i in enumerate(digit_ids(vocab_size))}, vocab_size=vocab_size
    )


def free_gib() -> float:
    with open("/proc/meminfo") as f:
        info = {line.split(":")[0]: int(line.split()[1]) for line in f}
    return info["MemAvailable"] / 2**20


def run_rounds(
    methods: dict[str, Callable[[], None]], reps: int, budget_s: float = 3.0
) -> tuple[dict[str, float], int]:
    """Median seconds per method and the number of rounds; each round runs every method once.

    At least ``reps`` rounds, more (up to 500) while a round fits ``budget_s`` in total, so that
    millisecond-sized cases get enough samples on a noisy shared machine.
    """
    start = time.perf_counter()
    for fn in methods.values():  # warm-up
        fn()
    one_round = time.perf_counter() - start
    rounds = max(reps, min(500, int(budget_s / max(one_round, 1e-9))))
    times: dict[str, list[float]] = {name: [] for name in methods}
    gc.collect()
    for _ in range(rounds):
        for name, fn in methods.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(ts) for name, ts in times.items()}, rounds


def loss_methods(vocab_size: int, rows: int) -> tuple[dict[str, Callable[[], None]], str]:
    """The forward+backward closures for one size, and a line checking they agree."""
    from ntloss import NTLoss, NTLossDotProduct

    tokenizer = make_tokenizer(vocab_size)
    was = NTLoss(tokenizer, vocab_size=vocab_size, reweigh=False)
    mse = NTLossDotProduct(tokenizer, vocab_size=vocab_size, reweigh=False)
    vocab = number_vocab(vocab_size)
    labels = make_labels(rows, vocab_size)
    logits = torch.randn(rows, vocab_size, generator=torch.Generator().manual_seed(1)) * 2
    logits.requires_grad_()
    labels3 = labels.reshape(-1, SEQ_LEN) if rows % SEQ_LEN == 0 else labels.reshape(1, -1)

    def step(loss: torch.Tensor) -> None:
        loss.backward()
        logits.grad = None

    def ntloss_total(ntl: Callable[..., torch.Tensor]) -> torch.Tensor:
        logits3 = logits.reshape(*labels3.shape, vocab_size)
        return F.cross_entropy(logits, labels) + NTL_WEIGHT * ntl(logits3, labels3)

    methods: dict[str, Callable[[], None]] = {
        "torch CE": lambda: step(F.cross_entropy(logits, labels)),
        "CE + ntloss WAS": lambda: step(ntloss_total(was)),
        "CE + ntloss MSE": lambda: step(ntloss_total(mse)),
        "ours reference WAS": lambda: step(
            cross_entropy_with_ntl(logits, labels, vocab, fused=False)
        ),
        "ours fused WAS": lambda: step(cross_entropy_with_ntl(logits, labels, vocab, fused=True)),
        "ours fused MSE": lambda: step(
            cross_entropy_with_ntl(logits, labels, vocab, kind="mse", fused=True)
        ),
        "ours fused, weight 0": lambda: step(
            cross_entropy_with_ntl(logits, labels, vocab, ntl_weight=0.0, fused=True)
        ),
    }
    with torch.no_grad():
        values = {
            "ntloss": float(ntloss_total(was)),
            "reference": float(cross_entropy_with_ntl(logits, labels, vocab, fused=False)),
            "fused": float(cross_entropy_with_ntl(logits, labels, vocab, fused=True)),
        }
    spread = max(values.values()) - min(values.values())
    check = (
        f"CE+0.3*WAS values: {values['fused']:.6f} (max spread ntloss/reference/fused {spread:.1e})"
    )
    return methods, check


def linear_methods(vocab_size: int, rows: int, hidden: int) -> dict[str, Callable[[], None]]:
    gen = torch.Generator().manual_seed(2)
    h = torch.randn(rows, hidden, generator=gen).requires_grad_()
    w = (torch.randn(vocab_size, hidden, generator=gen) / hidden**0.5).requires_grad_()
    labels = make_labels(rows, vocab_size)
    vocab = number_vocab(vocab_size)

    def step(loss: torch.Tensor) -> None:
        loss.backward()
        h.grad = None
        w.grad = None

    return {
        "materialised + reference": lambda: step(
            cross_entropy_with_ntl(h @ w.T, labels, vocab, fused=False)
        ),
        "materialised + fused": lambda: step(
            cross_entropy_with_ntl(h @ w.T, labels, vocab, fused=True)
        ),
        "ours linear (chunked)": lambda: step(linear_cross_entropy_with_ntl(h, w, labels, vocab)),
    }


def rss_high_water_kib() -> int:
    """VmHWM of this process (getrusage's ru_maxrss would include the parent's RSS at fork)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def memory_child(method: str, vocab_size: int, rows: int, hidden: int, threads: int) -> None:
    """Run one forward+backward and print the RSS high-water marks (KiB) as JSON."""
    torch.set_num_threads(threads)
    fn = linear_methods(vocab_size, rows, hidden)[method]
    before = rss_high_water_kib()
    fn()
    after = rss_high_water_kib()
    print(json.dumps({"before_kib": before, "peak_kib": after}))


def measure_memory(
    method: str, vocab_size: int, rows: int, hidden: int, threads: int
) -> dict[str, int]:
    cmd = [sys.executable, __file__, "--memory-child", method]
    cmd += ["--vocab", str(vocab_size), "--rows", str(rows), "--hidden", str(hidden)]
    cmd += ["--threads", str(threads)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])  # type: ignore[no-any-return]


def print_table(title: str, results: dict[str, float], baseline: str) -> None:
    print(f"\n{title}")
    print(f"  {'method':28s} {'ms':>10s} {'x ' + baseline:>16s}")
    for name, seconds in results.items():
        print(f"  {name:28s} {1e3 * seconds:10.2f} {seconds / results[baseline]:16.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", choices=["small", "all"], default="small")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument(
        "--reps",
        type=int,
        default=5,
        help="minimum timed rounds per size (median; small sizes get more)",
    )
    parser.add_argument("--max-gib", type=float, default=6.0, help="skip sizes needing more memory")
    parser.add_argument("--hidden", type=int, default=256, help="hidden size of the linear variant")
    parser.add_argument("--no-linear", action="store_true", help="skip the linear variant")
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--vocab", type=int, default=32000, help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=4096, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child is not None:
        memory_child(args.memory_child, args.vocab, args.rows, args.hidden, args.threads)
        return

    torch.set_num_threads(args.threads)
    print(
        f"torch {torch.__version__}, threads {torch.get_num_threads()}, float32, forward+backward"
    )
    print(f"memory available {free_gib():.1f} GiB, limit per size {args.max_gib} GiB")
    vocab_sizes = [128, 32000] if args.sizes == "small" else [128, 32000, 128000]
    row_counts = [2048] if args.sizes == "small" else [2048, 8192]
    for vocab_size in vocab_sizes:
        for rows in row_counts:
            tensor_gib = rows * vocab_size * 4 / 2**30
            need = 5 * tensor_gib  # logits, grad, log-softmax, ntloss's dense zero grad, slack
            if need > min(args.max_gib, free_gib() * 0.8):
                print(
                    f"\nV={vocab_size} B*T={rows}: SKIPPED, needs ~{need:.1f} GiB (> limit or free)"
                )
                continue
            methods, check = loss_methods(vocab_size, rows)
            reps = args.reps if vocab_size < 100000 else max(2, args.reps // 2)
            results, rounds = run_rounds(methods, reps)
            print_table(
                f"V={vocab_size} B*T={rows} ({rounds} rounds); {check}", results, "torch CE"
            )
            del methods
            gc.collect()
            if args.no_linear or vocab_size > 100000:
                continue
            lin, rounds = run_rounds(
                linear_methods(vocab_size, rows, args.hidden), max(2, reps // 2)
            )
            print_table(
                f"linear V={vocab_size} B*T={rows} H={args.hidden} ({rounds} rounds)",
                lin,
                "materialised + reference",
            )
            gc.collect()
    if args.no_linear:
        return
    vocab_size, rows, hidden = 32000, 4096, args.hidden
    print(f"\npeak RSS, fresh subprocess, V={vocab_size} B*T={rows} H={hidden} (MiB)")
    print(f"  {'method':28s} {'after setup':>12s} {'peak':>10s} {'peak - setup':>14s}")
    peaks = {}
    for method in LINEAR_METHODS:
        mem = measure_memory(method, vocab_size, rows, hidden, args.threads)
        peaks[method] = mem
        extra = (mem["peak_kib"] - mem["before_kib"]) / 1024
        print(
            f"  {method:28s} {mem['before_kib'] / 1024:12.0f} {mem['peak_kib'] / 1024:10.0f} {extra:14.0f}"
        )
    base = peaks["materialised + reference"]
    ours = peaks["ours linear (chunked)"]
    ratio_peak = ours["peak_kib"] / base["peak_kib"]
    ratio_extra = (ours["peak_kib"] - ours["before_kib"]) / max(
        1, base["peak_kib"] - base["before_kib"]
    )
    print(
        f"  linear / materialised+reference: peak {ratio_peak:.2f}, peak above setup {ratio_extra:.2f}"
    )


if __name__ == "__main__":
    main()
