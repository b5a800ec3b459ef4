"""Execute runs inside a worker: one run, or a group of seeds trained together by ``run_many``.

This module is what a worker process (or a Ray task) imports; everything it receives is a
picklable :class:`Batch`. It owns the run folder while the run is alive: it writes
``config.json``, appends rows to ``metrics.jsonl`` (dropping rows a resumed experiment yields
again), mirrors them to TensorBoard when available, and writes ``summary.json`` at the end.
An exception inside the experiment is recorded (status ``failed`` with its traceback) and
returned, never raised: the sweep goes on. A run holds its folder's lock (:mod:`repro.locks`)
while it executes; a run whose lock another live process holds is ``skipped`` with a message.
A :class:`RunInterrupted` or ``KeyboardInterrupt`` (Ctrl-C, the driver's SIGTERM) closes the
run's files without a summary, so the run stays ``incomplete``, and propagates.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import io
import os
import time
import traceback
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, Literal

from repro.events import open_event_writer
from repro.locks import RunLock, RunLockedError
from repro.registry import (
    ExperimentSpec,
    LoadedExperiment,
    Protocol,
    config_to_json,
    count_params,
    load_experiment,
)
from repro.storage import (
    CONFIG_FILE,
    CONFIG_HINT,
    METRICS_FILE,
    OUTPUT_FILE,
    SUMMARY_FILE,
    CorruptFileError,
    MetricsWriter,
    atomic_write_json,
    dotted_json,
    has_results,
    json_equal,
    read_json,
    read_metrics,
)

__all__ = [
    "Batch",
    "ConfigMismatchError",
    "RunInterrupted",
    "RunResult",
    "RunTask",
    "check_checkpoint",
    "check_config",
    "execute_batch",
    "record_crash",
]


class ConfigMismatchError(ValueError):
    """A run folder already holds a run of a different config (or of one it cannot verify)."""


class RunInterrupted(BaseException):
    """The run was stopped from outside (the driver's SIGTERM); it stays resumable."""


@dataclass(frozen=True)
class RunTask:
    """One (config, seed) run: the resolved config (its ``seed`` set) and its folder."""

    config_name: str
    config: Any
    run_dir: Path
    total: int | None = None
    """The step the run ends at, in the experiment's progress unit (None: not declared)."""

    @property
    def seed(self) -> int:
        return int(self.config.seed)


@dataclass(frozen=True)
class Batch:
    """What one worker executes: a single run, or several trained together by ``run_many``."""

    spec: ExperimentSpec
    tasks: tuple[RunTask, ...]
    group: bool = False
    threads: int | None = None
    """torch threads of the worker; None: :func:`repro.sweep.run_sweep` sets its default
    (``default_threads(workers)``), and a batch executed on its own leaves torch as it is."""
    tensorboard: bool = True
    capture_output: bool = True
    """Send the experiment's Python-level stdout/stderr to ``run_dir/output.log``."""


@dataclass(frozen=True)
class RunResult:
    experiment: str
    config_name: str
    seed: int
    run_dir: str
    status: Literal["finished", "failed", "skipped"]
    rows: int = 0
    wall_time_s: float = 0.0
    error: str = ""


def check_config(
    run_dir: Path, config_json: Mapping[str, Any], protocol: Protocol | None = None
) -> bool:
    """Whether ``run_dir`` already has a ``config.json``; raise if it differs from ``config_json``
    (:class:`ConfigMismatchError`), if it is corrupt (:class:`CorruptFileError`), or if it is
    missing while the folder holds a run's files: they could be from any config. A stored config
    of an older shape is compared after the experiment's ``upgrade_config`` (the file stays)."""
    path = Path(run_dir) / CONFIG_FILE
    if not path.exists():
        if has_results(run_dir):
            raise CorruptFileError(
                f"{run_dir} holds a run's files but no {CONFIG_FILE}, so which config wrote "
                f"them cannot be checked; {CONFIG_HINT}"
            )
        return False
    stored = read_json(path, CONFIG_HINT)
    if not isinstance(stored, dict):
        raise CorruptFileError(f"{path} does not hold a JSON object; {CONFIG_HINT}")
    if protocol is not None and protocol.upgrade_config is not None:
        stored = protocol.upgrade_config(stored)
    if not json_equal(stored, dict(config_json)):
        old, new = dotted_json(stored), dotted_json(config_json)
        diff = sorted(k for k in set(old) | set(new) if not json_equal(old.get(k), new.get(k)))
        details = ", ".join(f"{k}: {old.get(k)!r} -> {new.get(k)!r}" for k in diff)
        raise ConfigMismatchError(
            f"{run_dir} holds a run of a different config ({details}); "
            "use another --out folder or remove that run folder"
        )
    return True


def check_checkpoint(run_dir: Path, protocol: Protocol) -> None:
    """A declared checkpoint that exists must be a complete zip archive (``torch.save`` or
    ``np.savez``); a truncated one raises :class:`CorruptFileError` naming it (instead of an
    ``OSError`` from the loader on every retry)."""
    names = protocol.checkpoint
    if names is None:
        return
    for name in (names,) if isinstance(names, str) else names:
        path = Path(run_dir) / name
        if path.exists() and not zipfile.is_zipfile(path):
            raise CorruptFileError(
                f"{path} is truncated or corrupt (not a complete checkpoint archive); restore "
                "it, or remove this run folder to train the run again"
            )


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


class _Member:
    """The open files of one run while it executes."""

    def __init__(
        self, spec: ExperimentSpec, protocol: Protocol, task: RunTask, tensorboard: bool
    ) -> None:
        """Take the run's lock, check what is on disk, then open the run's files.

        Raises (with nothing on disk changed) :class:`RunLockedError`,
        :class:`ConfigMismatchError` or :class:`CorruptFileError`.
        """
        self.experiment = spec.name
        self.task = task
        run_dir = Path(task.run_dir)
        self.lock = RunLock(run_dir).acquire()
        try:
            self.params = count_params(protocol, task.config)
            config_json = config_to_json(task.config)
            has_config = check_config(run_dir, config_json, protocol)
            check_checkpoint(run_dir, protocol)
            self.metrics = MetricsWriter(run_dir / METRICS_FILE)  # checks every stored line
        except BaseException:
            self.lock.release()
            raise
        if not has_config:
            atomic_write_json(run_dir / CONFIG_FILE, config_json)
        (run_dir / SUMMARY_FILE).unlink(missing_ok=True)  # a failed run being retried
        self.resumed_from = self.metrics.last_step
        self.tb = open_event_writer(run_dir) if tensorboard else None
        self.start = time.perf_counter()
        self.started_at = _now()

    def abandon(self) -> None:
        """Close the files without a summary (the run stays ``incomplete``) and unlock."""
        self.metrics.close()
        if self.tb is not None:
            self.tb.close()
        self.lock.release()

    def add(self, row: Mapping[str, Any]) -> bool:
        if not self.metrics.append(row):
            return False
        if self.tb is not None:
            values = {k: v for k, v in row.items() if k != "step" and isinstance(v, int | float)}
            self.tb.add_row(int(row["step"]), values)
        return True

    def finish(self, error: BaseException | None) -> RunResult:
        self.metrics.close()
        if self.tb is not None:
            self.tb.close()
        wall = time.perf_counter() - self.start
        status: Literal["finished", "failed"] = "finished" if error is None else "failed"
        summary: dict[str, Any] = {
            "status": status,
            "experiment": self.experiment,
            "config": self.task.config_name,
            "seed": self.task.seed,
            "last_step": self.metrics.last_step,
            "rows": self.metrics.rows,
            "resumed_from_step": self.resumed_from,
            "started_at": self.started_at,
            "finished_at": _now(),
            "wall_time_s": round(wall, 3),
            "params": self.params,
            "final": self.metrics.final,
        }
        message = ""
        if error is not None:
            message = f"{type(error).__name__}: {error}"
            summary["error"] = message
            summary["traceback"] = "".join(
                traceback.format_exception(type(error), error, error.__traceback__)
            )
        try:
            atomic_write_json(Path(self.task.run_dir) / SUMMARY_FILE, summary)
        finally:
            self.lock.release()
        return RunResult(
            self.experiment,
            self.task.config_name,
            self.task.seed,
            str(self.task.run_dir),
            status,
            self.metrics.rows,
            wall,
            message,
        )


def _set_threads(threads: int) -> None:
    with contextlib.suppress(ImportError):
        import torch

        torch.set_num_threads(max(1, threads))


def _failed(
    spec: ExperimentSpec, tasks: Sequence[RunTask], error: BaseException
) -> list[RunResult]:
    """Results for runs that could not even start (their module failed to import, their lock is
    held elsewhere: ``skipped``, a file of theirs is corrupt ...); nothing on disk changes."""
    message = f"{type(error).__name__}: {error}"
    status: Literal["failed", "skipped"] = (
        "skipped" if isinstance(error, RunLockedError) else "failed"
    )
    return [
        RunResult(spec.name, t.config_name, t.seed, str(t.run_dir), status, error=message)
        for t in tasks
    ]


def record_crash(spec: ExperimentSpec, task: RunTask, message: str) -> RunResult:
    """Record a run whose worker process died under it: ``summary.json`` says ``failed`` with
    ``message`` (when the run had started, i.e. wrote its ``config.json``) and what it logged."""
    run_dir = Path(task.run_dir)
    failed = RunResult(
        spec.name, task.config_name, task.seed, str(run_dir), "failed", error=message
    )
    if not (run_dir / CONFIG_FILE).exists():
        return failed
    try:
        with RunLock(run_dir):
            final: dict[str, Any] = {}
            rows, last = 0, None
            for row in read_metrics(run_dir / METRICS_FILE):
                final.update(row)
                rows, last = rows + 1, row["step"]
            summary = {
                "status": "failed",
                "experiment": spec.name,
                "config": task.config_name,
                "seed": task.seed,
                "last_step": last,
                "rows": rows,
                "finished_at": _now(),
                "final": final,
                "error": message,
            }
            atomic_write_json(run_dir / SUMMARY_FILE, summary)
    except (RunLockedError, CorruptFileError, OSError) as e:
        return dataclasses.replace(failed, error=f"{message}; {e}")
    return dataclasses.replace(failed, rows=rows)


class _Tee(io.TextIOBase):
    """A text stream that writes to several files (the output logs of a group's members)."""

    def __init__(self, files: Sequence[IO[str]]) -> None:
        super().__init__()
        self._files = files

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        for f in self._files:
            f.write(text)
            f.flush()
        return len(text)


@contextlib.contextmanager
def _output_to(run_dirs: Sequence[Path], enabled: bool) -> Iterator[None]:
    """Send this process's Python-level stdout/stderr to ``run_dir/output.log`` (appended)."""
    if not enabled:
        yield
        return
    with contextlib.ExitStack() as stack:
        files = [
            stack.enter_context(open(Path(d) / OUTPUT_FILE, "a", encoding="utf-8"))
            for d in run_dirs
        ]
        tee = _Tee(files)
        stack.enter_context(contextlib.redirect_stdout(tee))
        stack.enter_context(contextlib.redirect_stderr(tee))
        yield


def _run_single(
    exp: LoadedExperiment, batch: Batch, on_row: Callable[[Path, int], None] | None
) -> list[RunResult]:
    results = []
    for task in batch.tasks:
        try:
            member = _Member(batch.spec, exp.protocol, task, batch.tensorboard)
        except Exception as e:
            results += _failed(batch.spec, [task], e)
            continue
        error: Exception | None = None
        try:
            with _output_to([task.run_dir], batch.capture_output):
                for row in exp.run(task.config, Path(task.run_dir)):
                    if member.add(row) and on_row is not None:
                        on_row(Path(task.run_dir), int(row["step"]))
        except Exception as e:
            error = e
        except BaseException:
            member.abandon()
            raise
        results.append(member.finish(error))
    return results


def _run_group(
    exp: LoadedExperiment, batch: Batch, on_row: Callable[[Path, int], None] | None
) -> list[RunResult]:
    assert exp.run_many is not None
    members: list[_Member] = []
    results: list[RunResult] = []
    for t in batch.tasks:  # a member that cannot start is left out; the others train together
        try:
            members.append(_Member(batch.spec, exp.protocol, t, batch.tensorboard))
        except Exception as e:
            results += _failed(batch.spec, [t], e)
    if not members:
        return results
    tasks = [m.task for m in members]
    error: Exception | None = None
    try:
        rows: Iterator[tuple[int, Mapping[str, Any]]] = exp.run_many(
            [t.config for t in tasks], [Path(t.run_dir) for t in tasks]
        )
        with _output_to([t.run_dir for t in tasks], batch.capture_output):
            for index, row in rows:
                if not 0 <= index < len(members):
                    raise ValueError(f"run_many yielded member index {index} of {len(members)}")
                if members[index].add(row) and on_row is not None:
                    on_row(Path(tasks[index].run_dir), int(row["step"]))
    except Exception as e:
        error = e
    except BaseException:
        for m in members:
            m.abandon()
        raise
    return results + [m.finish(error) for m in members]


def execute_batch(
    batch: Batch, on_row: Callable[[Path, int], None] | None = None
) -> list[RunResult]:
    """Run every task of ``batch`` (in this process) and return one result per task."""
    if batch.threads is not None:
        _set_threads(batch.threads)
        os.environ.setdefault("OMP_NUM_THREADS", str(batch.threads))
    try:
        exp = load_experiment(batch.spec)
        if batch.group and exp.run_many is None:
            raise ValueError(f"experiment {batch.spec.name!r} has no run_many; drop --group-seeds")
    except Exception as e:
        return _failed(batch.spec, batch.tasks, e)
    if batch.group:
        return _run_group(exp, batch, on_row)
    return _run_single(exp, batch, on_row)
