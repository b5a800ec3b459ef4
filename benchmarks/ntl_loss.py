"""CE + Number Token Loss, forward + backward: torch CE, ntloss, our reference, fused and linear paths.

    python benchmarks/ntl_loss.py [--reps R] [--hidden H] [--no-memory] [--no-timing]
        [--vocab-sizes 128,32000] [--linear-rows 512,2048] [--memory-rows 512,2048,8192]
        [--memory-dtypes float32,bfloat16] [--linear-chunks 57,128]

(the list options select rows of the tables, e.g. while iterating on one of them).

Times: float32, interleaved repetitions (every method once per round, in a new seeded random
order each round; median over rounds of the per-round ratios), wall clock and this thread's CPU
time (the machine is shared: CPU time is the steadier of the two),
10 % number-token labels (a digit vocabulary at ids 100..109, or 10..19 for V < 200). They run
twice, in two subprocesses that differ only in glibc's allocator settings:

* ``glibc default``: buffers above 32 MiB come from fresh ``mmap`` pages and go back to the OS
  when freed, so every (N, V) tensor torch allocates pays its page faults again, each step;
* ``retain``: ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=100000000000`` keeps freed memory in
  the heap for reuse, as a caching allocator does on GPU.

Peak memory of the linear path against the materialised logits + torch CE is measured in a fresh
subprocess per method, with and without the hidden / W gradients every method returns (see
:func:`memory_table`) (RSS high-water mark, VmHWM, reset after a warm-up call of the same
method and sizes), fp32 and bf16,
B·T = 512, 2048, 8192, with ``MALLOC_MMAP_THRESHOLD_=65536`` so that every freed buffer leaves
the RSS at once (glibc otherwise keeps some for reuse, which hides or inflates peaks).
The machine is shared: read the ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import random
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
LINEAR_METHODS = ("materialised + torch CE", "materialised + reference", "ours linear (chunked)")
RETAIN_ENV = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "100000000000"}
MODES = {"glibc default": {}, "retain": RETAIN_ENV}


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
    methods: dict[str, Callable[[], None]], reps: int, budget_s: float = 3.0, seed: int = 0
) -> tuple[dict[str, list[float]], dict[str, list[float]], int]:
    """Wall and CPU seconds per method and round, and the number of rounds.

    Each round runs every method once. At least ``reps`` rounds, more (up to 500) while they
    fit ``budget_s`` of this thread's CPU time in total, so that millisecond-sized cases get
    enough samples on a noisy shared machine (a wall-clock budget gave a loaded machine fewer
    rounds). CPU time is this thread's (``time.thread_time``: user + system, page faults
    included), which a loaded machine inflates less than the wall clock.

    The order of the methods is shuffled every round (seeded): in a fixed order a method that
    runs right after a similar one finds its code and data in cache. At V = 128, where a call
    is ~1 ms of ~50 small ops, fused CE + NTL-WAS read 1.23x fused CE with weight 0 when it ran
    just before it, and 1.05x when it ran just after it.
    """
    start = time.thread_time()
    for fn in methods.values():  # warm-up
        fn()
    one_round = time.thread_time() - start
    rounds = max(reps, min(500, int(budget_s / max(one_round, 1e-9))))
    wall: dict[str, list[float]] = {name: [] for name in methods}
    cpu: dict[str, list[float]] = {name: [] for name in methods}
    gc.collect()
    order = list(methods)
    shuffle = random.Random(seed).shuffle
    for _ in range(rounds):
        shuffle(order)
        for name in order:
            fn = methods[name]
            start, start_cpu = time.perf_counter(), time.thread_time()
            fn()
            cpu[name].append(time.thread_time() - start_cpu)
            wall[name].append(time.perf_counter() - start)
    return wall, cpu, rounds


def paired_ratio(times: dict[str, list[float]], name: str, baseline: str) -> float:
    """Median over rounds of the per-round ratio: robust to load that drifts between rounds."""
    return statistics.median(a / b for a, b in zip(times[name], times[baseline]))


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
        "ours fused, weight 0": lambda: step(
            cross_entropy_with_ntl(logits, labels, vocab, ntl_weight=0.0, fused=True)
        ),
        "ours fused MSE": lambda: step(
            cross_entropy_with_ntl(logits, labels, vocab, kind="mse", fused=True)
        ),
    }
    if vocab_size > 100000:  # ntloss's dense zero gradient does not fit a small machine
        del methods["CE + ntloss WAS"], methods["CE + ntloss MSE"]
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


def linear_methods(
    vocab_size: int,
    rows: int,
    hidden: int,
    dtype: torch.dtype = torch.float32,
    chunks: tuple[int, ...] = (),
) -> tuple[dict[str, Callable[[], None]], int]:
    """Forward+backward closures of the linear variants, and the bytes of the two gradients.

    ``chunks``: extra variants of the linear path with these explicit ``chunk_size`` rows.
    """
    gen = torch.Generator().manual_seed(2)
    h = torch.randn(rows, hidden, generator=gen).to(dtype).requires_grad_()
    w = (torch.randn(vocab_size, hidden, generator=gen) / hidden**0.5).to(dtype).requires_grad_()
    labels = make_labels(rows, vocab_size)
    vocab = number_vocab(vocab_size)

    def step(loss: torch.Tensor) -> None:
        loss.backward()
        h.grad = None
        w.grad = None

    methods: dict[str, Callable[[], None]] = {
        # the usual recipe: logits in the model dtype, CE in float32
        "materialised + torch CE": lambda: step(F.cross_entropy((h @ w.T).float(), labels)),
        "ours linear (chunked)": lambda: step(linear_cross_entropy_with_ntl(h, w, labels, vocab)),
        "materialised + reference": lambda: step(
            cross_entropy_with_ntl(h @ w.T, labels, vocab, fused=False)
        ),
        "materialised + fused": lambda: step(
            cross_entropy_with_ntl(h @ w.T, labels, vocab, fused=True)
        ),
    }
    for n in chunks:
        methods[f"ours linear, chunk {n}"] = lambda n=n: step(
            linear_cross_entropy_with_ntl(h, w, labels, vocab, chunk_size=n)
        )
    return methods, (h.numel() + w.numel()) * h.element_size()


def status_kib(key: str) -> int:
    """``VmRSS`` / ``VmHWM`` of this process in KiB (Linux ``/proc/self/status``)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def reset_high_water() -> bool:
    """Reset VmHWM to the current RSS (``clear_refs`` 5), so set-up transients do not count."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return False
    return True


def memory_child(method: str, vocab_size: int, rows: int, hidden: int, dtype: str) -> None:
    """Run one forward+backward and print the RSS high-water marks (KiB) as JSON."""
    torch.set_num_threads(1)
    # One warm-up call of the same method and sizes: one-time library set-up (the thread pool,
    # oneDNN's kernels and buffers for each new matmul shape: ~1.4 MiB for the 29-row bf16
    # chunks when the warm-up ran other shapes) is not the method's memory per step.
    warm, _ = linear_methods(vocab_size, rows, hidden, getattr(torch, dtype))
    warm[method]()
    del warm
    fn, grad_bytes = linear_methods(vocab_size, rows, hidden, getattr(torch, dtype))
    methods = {k: v for k, v in fn.items() if k == method}
    gc.collect()
    before = status_kib("VmRSS") if reset_high_water() else status_kib("VmHWM")
    methods[method]()
    after = status_kib("VmHWM")
    print(json.dumps({"before_kib": before, "peak_kib": after, "grad_kib": grad_bytes / 1024}))


def child(args: list[str], env: dict[str, str] | None = None) -> str:
    cmd = [sys.executable, __file__, *args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(cmd, check=True, capture_output=True, text=True, env=full_env).stdout


def print_table(
    title: str, wall: dict[str, list[float]], cpu: dict[str, list[float]], baseline: str
) -> None:
    """Median ms per method and the medians of its per-round ratios to ``baseline``."""
    print(f"\n{title}; ratios x {baseline} (paired medians)")
    print(f"  {'method':28s} {'wall ms':>10s} {'cpu ms':>10s} {'x wall':>8s} {'x cpu':>8s}")
    for name in wall:
        print(
            f"  {name:28s} {1e3 * statistics.median(wall[name]):10.2f} "
            f"{1e3 * statistics.median(cpu[name]):10.2f} "
            f"{paired_ratio(wall, name, baseline):8.2f} {paired_ratio(cpu, name, baseline):8.2f}"
        )


def add_ratios(
    ratios: dict[str, float],
    key: str,
    wall: dict[str, list[float]],
    cpu: dict[str, list[float]],
    name: str,
    baseline: str,
) -> None:
    ratios[key + " (wall)"] = paired_ratio(wall, name, baseline)
    ratios[key + " (cpu)"] = paired_ratio(cpu, name, baseline)


def timing_child(
    reps: int,
    hidden: int,
    vocab_sizes: list[int],
    linear_rows: list[int],
    linear_chunks: tuple[int, ...] = (),
) -> None:
    """All timings in this process (its allocator mode comes from the parent); ratios as JSON."""
    torch.set_num_threads(1)
    ratios: dict[str, float] = {}
    for vocab_size in vocab_sizes:
        methods, check = loss_methods(vocab_size, 2048)
        wall, cpu, rounds = run_rounds(methods, reps)
        print_table(f"V={vocab_size} B*T=2048 ({rounds} rounds); {check}", wall, cpu, "torch CE")
        add_ratios(
            ratios, f"fused WAS / torch CE, V={vocab_size}", wall, cpu, "ours fused WAS", "torch CE"
        )
        add_ratios(
            ratios,
            f"fused WAS / fused weight 0, V={vocab_size}",
            wall,
            cpu,
            "ours fused WAS",
            "ours fused, weight 0",
        )
        del methods
        gc.collect()
    for rows in linear_rows:
        lin, _ = linear_methods(32000, rows, hidden, chunks=linear_chunks)
        wall, cpu, rounds = run_rounds(lin, max(3, (2 * reps) // 3))
        print_table(
            f"linear V=32000 B*T={rows} H={hidden} fp32 ({rounds} rounds)",
            wall,
            cpu,
            "materialised + torch CE",
        )
        add_ratios(
            ratios,
            f"linear / materialised + torch CE, B*T={rows}",
            wall,
            cpu,
            "ours linear (chunked)",
            "materialised + torch CE",
        )
        del lin
        gc.collect()
    print("RATIOS " + json.dumps(ratios))


def memory_table(hidden: int, rows_list: list[int], dtypes: list[str]) -> None:
    """Peak memory of one forward+backward per method, with and without the returned gradients.

    ``total`` = the RSS high-water mark above the inputs: everything the call allocates,
    including the gradients of hidden and W it returns (what Cut Cross-Entropy's benchmark
    reports as op memory: its 1,164 MB against 28,000 MB, the 0.042x, is mostly Gemma 2's
    classifier gradient). ``grads`` = the bytes of those two gradients, which every method must
    return: a floor for ``total``. ``scratch`` = total - grads, what a method adds beyond its
    outputs. Ratios are to the materialised logits + torch CE path; ``floor x`` = grads / its
    total, the best ``total x`` any method can reach.
    """
    vocab_size = 32000
    print(
        f"\npeak memory of one forward+backward, fresh subprocess, V={vocab_size} H={hidden} "
        "(MiB above the inputs)"
    )
    print(
        f"  {'dtype':8s} {'B*T':>5s} {'method':26s} {'total':>8s} {'grads':>7s} {'scratch':>8s} "
        f"{'total x':>8s} {'floor x':>8s} {'scratch x':>10s}"
    )
    for dtype in dtypes:
        for rows in rows_list:
            found: dict[str, tuple[float, float]] = {}
            for method in LINEAR_METHODS:
                out = child(
                    ["--memory-child", method, "--rows", str(rows), "--hidden", str(hidden),
                     "--dtype", dtype],
                    {"MALLOC_MMAP_THRESHOLD_": "65536"},
                )  # fmt: skip
                mem = json.loads(out.strip().splitlines()[-1])
                found[method] = (
                    (mem["peak_kib"] - mem["before_kib"]) / 1024,
                    mem["grad_kib"] / 1024,
                )
            base_total, base_grads = found["materialised + torch CE"]
            for method, (total, grads) in found.items():
                scratch = max(total - grads, 0.0)
                print(
                    f"  {dtype:8s} {rows:5d} {method:26s} {total:8.1f} {grads:7.1f} {scratch:8.1f} "
                    f"{total / base_total:8.3f} {grads / base_total:8.3f} "
                    f"{scratch / (base_total - base_grads):10.3f}"
                )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--reps", type=int, default=5, help="minimum timed rounds per size")
    parser.add_argument("--hidden", type=int, default=256, help="hidden size of the linear variant")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory table")
    parser.add_argument("--no-timing", action="store_true", help="only the memory table")
    parser.add_argument(
        "--vocab-sizes", default="128,32000", help="V of the loss timings (comma-separated)"
    )
    parser.add_argument(
        "--linear-rows", default="512,2048", help="B*T of the linear timings (comma-separated)"
    )
    parser.add_argument(
        "--linear-chunks",
        default="",
        help="also time the linear path with these chunk sizes (comma-separated rows)",
    )
    parser.add_argument(
        "--memory-rows", default="512,2048,8192", help="B*T of the memory table (comma-separated)"
    )
    parser.add_argument(
        "--memory-dtypes", default="float32,bfloat16", help="dtypes of the memory table"
    )
    parser.add_argument("--timing-child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=2048, help=argparse.SUPPRESS)
    parser.add_argument("--dtype", default="float32", help=argparse.SUPPRESS)
    args = parser.parse_args()
    vocab_sizes = [int(v) for v in args.vocab_sizes.split(",") if v]
    linear_rows = [int(v) for v in args.linear_rows.split(",") if v]
    if args.memory_child is not None:
        memory_child(args.memory_child, 32000, args.rows, args.hidden, args.dtype)
        return
    if args.timing_child:
        chunks = tuple(int(v) for v in args.linear_chunks.split(",") if v)
        timing_child(args.reps, args.hidden, vocab_sizes, linear_rows, chunks)
        return
    print(
        f"torch {torch.__version__}, 1 thread, forward+backward; memory available {free_gib():.1f} GiB"
    )
    summary: dict[str, dict[str, float]] = {}
    for mode, env in {} if args.no_timing else MODES.items():
        settings = " ".join(f"{k}={v}" for k, v in env.items()) or "(no MALLOC_* settings)"
        print(f"\n=== allocator: {mode} {settings} ===")
        out = child(
            ["--timing-child", "--reps", str(args.reps), "--hidden", str(args.hidden),
             "--vocab-sizes", args.vocab_sizes, "--linear-rows", args.linear_rows,
             "--linear-chunks", args.linear_chunks],
            env,
        )  # fmt: skip
        lines = out.strip().splitlines()
        print("\n".join(line for line in lines if not line.startswith("RATIOS ")))
        summary[mode] = json.loads(lines[-1][len("RATIOS ") :])
    if summary:
        print("\n=== ratios (time, paired medians), both allocator modes ===")
        modes = list(MODES)
        print(f"  {'':58s}" + "".join(f"{m:>15s}" for m in modes))
        for key in summary[modes[0]]:
            print(f"  {key:58s}" + "".join(f"{summary[m][key]:15.2f}" for m in modes))
    if not args.no_memory:
        memory_table(
            args.hidden,
            [int(v) for v in args.memory_rows.split(",") if v],
            [d for d in args.memory_dtypes.split(",") if d],
        )


if __name__ == "__main__":
    main()
