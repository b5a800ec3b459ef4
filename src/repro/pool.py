"""The local backend's worker processes: they die with the driver, and one crash costs one batch.

Each worker is a ``spawn`` process that executes one :class:`~repro.runner.Batch` at a time,
sent over a pipe. Compared with ``concurrent.futures.ProcessPoolExecutor``:

* a worker dies with its driver: ``PR_SET_PDEATHSIG`` on Linux, and on every platform a thread
  that ends the worker once its parent PID changes (the driver was killed, even by SIGKILL);
* a worker that dies (``kill -9``, out of memory, a segfault) fails only the batch it was running:
  its runs are recorded as failed and a fresh worker takes the next batch;
* Ctrl-C / SIGTERM: workers ignore SIGINT (it goes to the terminal's whole process group); the
  driver stops dispatching and sends each busy worker SIGTERM, which ends its run the way a kill
  would, minus the torn line: rows written so far are flushed, no ``summary.json`` is written, so
  the run stays ``incomplete`` and resumes from its checkpoint next time.
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.process import BaseProcess
from typing import Any

from repro.runner import Batch, RunInterrupted, RunResult, execute_batch, record_crash

__all__ = ["die_with_parent", "run_pool", "stop_signals"]

_PR_SET_PDEATHSIG = 1


def die_with_parent(parent_pid: int) -> None:
    """End this process when ``parent_pid`` is no longer its parent (the parent died)."""
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="repro-parent-watch", daemon=True).start()


def _raise_interrupt(signum: int, frame: object) -> None:
    raise RunInterrupted(f"stopped by signal {signal.Signals(signum).name}")


class _ToDriver(io.TextIOBase):
    """The worker's Python-level stdout/stderr outside a run (while a run executes, its output
    goes to its ``output.log``): whole lines are sent to the driver, which prints them above
    its progress bars instead of through them."""

    def __init__(self, conn: multiprocessing.connection.Connection) -> None:
        super().__init__()
        self._conn = conn
        self._buffer = ""

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        self._buffer += text
        if "\n" in self._buffer:
            lines, self._buffer = self._buffer.rsplit("\n", 1)
            with contextlib.suppress(OSError):
                self._conn.send(lines)
        return len(text)


def _worker_main(conn: multiprocessing.connection.Connection, parent_pid: int) -> None:
    die_with_parent(parent_pid)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the driver decides what Ctrl-C means
    signal.signal(signal.SIGTERM, _raise_interrupt)
    sys.stdout = sys.stderr = _ToDriver(conn)
    try:
        while True:
            try:
                batch = conn.recv()
            except EOFError:
                return
            if batch is None:
                return
            conn.send(execute_batch(batch))
    except (RunInterrupted, BrokenPipeError, KeyboardInterrupt):
        return


@dataclass
class _Worker:
    proc: BaseProcess
    conn: multiprocessing.connection.Connection
    batch: Batch | None = None


@contextlib.contextmanager
def _ignoring_sigint() -> Iterator[None]:
    """Ignore SIGINT meanwhile (only possible in the main thread); an ignored signal stays
    ignored in a child across exec, so workers never see a Ctrl-C while they start up."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _start_worker(ctx: Any) -> _Worker:
    parent_conn, child_conn = ctx.Pipe()
    proc = ctx.Process(target=_worker_main, args=(child_conn, os.getpid()), name="repro-worker")
    with _ignoring_sigint():
        proc.start()
    child_conn.close()
    return _Worker(proc, parent_conn)


def _exit_reason(code: int | None) -> str:
    if code is not None and code < 0:
        with contextlib.suppress(ValueError):
            return f"killed by {signal.Signals(-code).name}"
    return f"exit code {code}"


def _stop(workers: Sequence[_Worker], grace_s: float = 10.0) -> None:
    """End every worker: idle ones are told to exit, busy ones get SIGTERM (their run stays
    resumable); whatever is still alive after ``grace_s`` is killed."""
    with _ignoring_sigint():
        for w in workers:
            if not w.proc.is_alive():
                continue
            if w.batch is None:
                with contextlib.suppress(OSError):
                    w.conn.send(None)
            else:
                with contextlib.suppress(OSError):
                    os.kill(w.proc.pid or 0, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        for w in workers:
            w.proc.join(max(0.0, deadline - time.monotonic()))
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join()
            w.conn.close()


def run_pool(
    batches: Sequence[Batch],
    workers: int,
    on_done: Callable[[list[RunResult]], None],
    on_tick: Callable[[], None],
    on_output: Callable[[str], None] = print,
) -> list[RunResult]:
    """Execute ``batches`` on up to ``workers`` worker processes; return every run's result.

    ``on_done`` gets each batch's results as they come, ``on_tick`` is called about once a
    second (progress), ``on_output`` gets what a worker prints outside its runs (e.g. warnings
    while it imports an experiment). A ``KeyboardInterrupt`` in the driver stops the workers
    and propagates.
    """
    ctx = multiprocessing.get_context("spawn")
    queue = deque(batches)
    pool: list[_Worker] = []
    results: list[RunResult] = []
    try:
        while queue or any(w.batch is not None for w in pool):
            for w in pool:
                if queue and w.batch is None:
                    w.batch = queue.popleft()
                    w.conn.send(w.batch)
            while queue and len(pool) < workers:  # first start, or replacing a dead worker
                w = _start_worker(ctx)
                pool.append(w)
                w.batch = queue.popleft()
                w.conn.send(w.batch)
            busy = [w for w in pool if w.batch is not None]
            handles: list[Any] = [w.conn for w in busy] + [w.proc.sentinel for w in busy]
            ready = multiprocessing.connection.wait(handles, timeout=1.0)
            for w in busy:
                if w.conn not in ready and w.proc.sentinel not in ready:
                    continue
                assert w.batch is not None
                done: list[RunResult] | None = None
                with contextlib.suppress(EOFError, OSError):
                    while done is None and w.conn.poll():
                        message = w.conn.recv()
                        if isinstance(message, str):
                            on_output(message)
                        else:
                            done = message
                if done is None and w.proc.is_alive():
                    continue  # only output so far
                if done is None:  # the worker died while running this batch
                    w.proc.join()
                    message = f"worker process died ({_exit_reason(w.proc.exitcode)})"
                    done = [record_crash(w.batch.spec, t, message) for t in w.batch.tasks]
                    w.conn.close()
                    pool.remove(w)
                w.batch = None
                results += done
                on_done(done)
            on_tick()
    finally:
        _stop(pool)
    return results


class _Terminated(KeyboardInterrupt):
    """SIGTERM, handled like Ctrl-C."""


def _sigterm_to_interrupt(signum: int, frame: object) -> None:
    raise _Terminated()


@contextlib.contextmanager
def stop_signals() -> Iterator[None]:
    """Meanwhile, SIGTERM raises ``KeyboardInterrupt`` like Ctrl-C does, so that the cleanup of
    a sweep runs for both (main thread only; elsewhere this does nothing)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGTERM, _sigterm_to_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)
