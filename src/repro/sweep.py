"""Sweeps: plan the (config, seed) runs, skip finished ones, execute the rest on a backend.

Backends: ``local`` (a process pool with the spawn context; in this process when
``workers == 1``) and ``ray`` (each batch a Ray task; a single-node Ray started here, or an existing
cluster by address). Ray does the scheduling; there is no scheduler of our own here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TextIO

from repro.overrides import apply_overrides
from repro.pool import run_pool, stop_signals
from repro.registry import (
    config_to_json,
    get_spec,
    load_experiment,
    progress_total,
    validate_config,
)
from repro.runner import Batch, RunResult, RunTask, check_config, execute_batch, record_crash
from repro.storage import METRICS_FILE, CorruptFileError, run_dir_for, run_state

__all__ = [
    "SweepPlan",
    "SweepResult",
    "check_out_dir",
    "default_threads",
    "plan_sweep",
    "run_sweep",
    "start_local_ray",
]

Backend = Literal["local", "ray"]


@dataclass
class SweepPlan:
    experiment: str
    batches: list[Batch]
    skipped: list[RunResult] = field(default_factory=list)
    """Runs not started: finished before (``skipped``) or unreadable on disk (``failed``)."""
    units: dict[str, str] = field(default_factory=dict)
    """Each experiment's progress unit."""

    def merge(self, other: SweepPlan) -> None:
        self.batches += other.batches
        self.skipped += other.skipped
        self.units.update(other.units)

    @property
    def n_runs(self) -> int:
        return sum(len(b.tasks) for b in self.batches)


@dataclass
class SweepResult:
    results: list[RunResult]

    @property
    def failed(self) -> list[RunResult]:
        return [r for r in self.results if r.status == "failed"]

    def table(self) -> str:
        lines = [f"{'run':<48} {'status':<9} {'rows':>6} {'time':>8}"]
        for r in sorted(self.results, key=lambda r: (r.experiment, r.config_name, r.seed)):
            name = f"{r.experiment}/{r.config_name}/seed-{r.seed}"
            lines.append(f"{name:<48} {r.status:<9} {r.rows:>6} {r.wall_time_s:>7.1f}s")
            if r.error:
                lines.append(f"    {r.error.splitlines()[0][:300]}")
        counts = {
            s: sum(r.status == s for r in self.results) for s in ("finished", "skipped", "failed")
        }
        lines.append(", ".join(f"{n} {s}" for s, n in counts.items()))
        return "\n".join(lines)


def check_out_dir(out: Path) -> None:
    """``out`` must be a folder (or creatable in one) that this process can write; checked once,
    up front, so that a bad ``--out`` is one error line, not one per run."""
    out = Path(out)
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        what = "is not a folder" if probe == out else f"cannot be created: {probe} is not a folder"
        raise ValueError(f"--out {out} {what}")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as e:
        raise ValueError(f"--out {out}: cannot write in {probe} ({e.strerror or e})") from None


def plan_sweep(
    experiment: str,
    config_names: Sequence[str] | None,
    overrides: Sequence[str],
    seeds: Sequence[int],
    out: Path,
    *,
    group_seeds: bool = False,
    threads: int | None = None,
    tensorboard: bool = True,
) -> SweepPlan:
    """Resolve configs and seeds into batches; finished runs become ``skipped`` results.

    Raises (before touching any file) on an unknown config or key, a config the experiment
    rejects, a bad ``out``, or when an existing run folder holds a different config. A run
    folder whose files cannot be read (a corrupt ``config.json`` / ``summary.json``) becomes a
    ``failed`` result naming the file; the other runs go on. ``threads`` (torch threads per
    run) left None is chosen by :func:`run_sweep` from its workers (:func:`default_threads`),
    the same default as the CLI's.
    """
    if threads is not None and (
        isinstance(threads, bool) or not isinstance(threads, int) or threads < 1
    ):
        raise ValueError(f"threads must be an int >= 1, got {threads!r}")
    spec = get_spec(experiment)
    exp = load_experiment(spec)
    names = list(config_names) if config_names else list(exp.configs)
    unknown = [n for n in names if n not in exp.configs]
    if unknown:
        raise ValueError(
            f"unknown config {unknown[0]!r} for {experiment}; valid configs: {', '.join(exp.configs)}"
        )
    if not seeds:
        raise ValueError("no seeds given")
    if group_seeds and exp.run_many is None:
        raise ValueError(f"experiment {experiment!r} has no run_many; drop --group-seeds")
    bases = {}
    for name in dict.fromkeys(names):  # the whole config is checked before any folder exists
        bases[name] = apply_overrides(exp.configs[name], overrides)
        try:
            validate_config(experiment, exp.protocol, bases[name])
        except (ValueError, TypeError) as e:
            raise type(e)(f"config {name!r}: {e}") from None
    check_out_dir(out)
    plan = SweepPlan(experiment, [], units={experiment: exp.protocol.progress_unit})
    for name, base in bases.items():
        todo: list[RunTask] = []
        total = progress_total(exp.protocol, base)
        for seed in dict.fromkeys(seeds):
            config = dataclasses.replace(base, seed=seed)
            run_dir = run_dir_for(out, experiment, name, seed)
            try:
                check_config(run_dir, config_to_json(config), exp.protocol)
                status = run_state(run_dir).status
            except CorruptFileError as e:
                message = f"not started: {e}"
                plan.skipped.append(
                    RunResult(experiment, name, seed, str(run_dir), "failed", error=message)
                )
                continue
            if status == "finished":
                plan.skipped.append(RunResult(experiment, name, seed, str(run_dir), "skipped"))
            else:
                todo.append(RunTask(name, config, run_dir, total))
        groups = [todo] if group_seeds and todo else [[t] for t in todo]
        for tasks in groups:
            plan.batches.append(Batch(spec, tuple(tasks), group_seeds, threads, tensorboard))
    return plan


class Eta:
    """Remaining time from the rate since the first progress seen (not since the bar appeared:
    an experiment whose runs wait behind another's must not look slow)."""

    def __init__(self, total: float) -> None:
        self.total = total
        self._first: tuple[float, float] | None = None
        self._last: tuple[float, float] | None = None

    def update(self, done: float, now: float) -> None:
        if self._first is None:
            self._first = (done, now)
        self._last = (done, now)

    def remaining_s(self) -> float | None:
        if self._first is None or self._last is None:
            return None
        (d0, t0), (d1, t1) = self._first, self._last
        if d1 <= d0 or t1 <= t0:
            return None
        return max(0.0, self.total - d1) * (t1 - t0) / (d1 - d0)


def _clock(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


class _Progress:
    """One tqdm bar per experiment, in that experiment's declared unit (sum over its runs of the
    last step each logged) with an ETA from :class:`Eta`; in finished runs for an experiment that
    declares no run length. Pool workers are followed by reading the tails of their
    ``metrics.jsonl`` files. Python warnings go through ``tqdm.write`` while the bars are shown."""

    def __init__(
        self,
        batches: Sequence[Batch],
        units: dict[str, str],
        enabled: bool,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        from tqdm.auto import tqdm

        self._tqdm = tqdm
        self.clock = clock
        self.exp_of: dict[Path, str] = {}
        self.targets: dict[Path, int | None] = {}
        tasks_by_exp: dict[str, list[RunTask]] = {}
        for b in batches:
            for t in b.tasks:
                tasks_by_exp.setdefault(b.spec.name, []).append(t)
                self.exp_of[Path(t.run_dir)] = b.spec.name
                self.targets[Path(t.run_dir)] = t.total
        self.bars: dict[str, Any] = {}
        self.by_steps: dict[str, bool] = {}
        self.etas: dict[str, Eta] = {}
        self.n_runs = {e: len(ts) for e, ts in tasks_by_exp.items()}
        self.done_runs = dict.fromkeys(tasks_by_exp, 0)
        self.done_steps = dict.fromkeys(tasks_by_exp, 0)
        for pos, (exp, tasks) in enumerate(tasks_by_exp.items()):
            by_steps = all(t.total is not None for t in tasks)
            self.by_steps[exp] = by_steps
            total = sum(t.total or 0 for t in tasks) if by_steps else len(tasks)
            self.etas[exp] = Eta(total)
            unit = units.get(exp, "step") if by_steps else "run"
            self.bars[exp] = tqdm(
                total=total,
                desc=exp,
                unit=f" {unit}",
                unit_scale=by_steps,
                position=pos,
                disable=not enabled,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt}{unit} [{elapsed}{postfix}]",
            )
            self._postfix(exp)
        self.last: dict[Path, int] = {}
        self._offsets: dict[Path, int] = {}
        self._showwarning = warnings.showwarning
        warnings.showwarning = self._warn

    def _warn(
        self,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: TextIO | None = None,
        line: str | None = None,
    ) -> None:
        text = warnings.formatwarning(message, category, filename, lineno, line)
        self._tqdm.write(text.rstrip(), file=sys.stderr)

    def write(self, text: str) -> None:
        """Print ``text`` above the bars."""
        self._tqdm.write(text, file=sys.stderr)

    def _postfix(self, exp: str) -> None:
        eta = _clock(self.etas[exp].remaining_s())
        self.bars[exp].set_postfix_str(
            f"ETA {eta}, runs {self.done_runs[exp]}/{self.n_runs[exp]} done", refresh=False
        )

    def on_row(self, run_dir: Path, step: int) -> None:
        run_dir = Path(run_dir)
        exp = self.exp_of.get(run_dir)
        if exp is None or not self.by_steps[exp]:
            return
        cap = self.targets.get(run_dir) or step
        prev = self.last.get(run_dir, 0)
        self.last[run_dir] = step
        delta = min(step, cap) - min(prev, cap)
        self.done_steps[exp] += delta
        self.etas[exp].update(self.done_steps[exp], self.clock())
        self._postfix(exp)
        self.bars[exp].update(delta)

    def poll(self) -> None:
        """Read the last step appended to each run's ``metrics.jsonl`` since the last poll."""
        for run_dir in self.targets:
            path = run_dir / METRICS_FILE
            pos = self._offsets.get(path, 0)
            try:
                with open(path, "rb") as f:
                    f.seek(pos)
                    chunk = f.read()
            except OSError:
                continue
            end = chunk.rfind(b"\n")
            if end < 0:
                continue
            self._offsets[path] = pos + end + 1
            line = chunk[chunk.rfind(b"\n", 0, end) + 1 : end]
            try:
                step = int(json.loads(line)["step"])
            except (ValueError, KeyError, TypeError):
                continue
            self.on_row(run_dir, step)

    def done(self, results: Sequence[RunResult]) -> None:
        for r in results:
            exp = r.experiment
            if exp not in self.bars:
                continue
            self.done_runs[exp] += 1
            if not self.by_steps[exp]:
                self.bars[exp].update(1)
                self.etas[exp].update(self.done_runs[exp], self.clock())
            self._postfix(exp)
            self.bars[exp].refresh()
            if r.status != "finished":
                self._tqdm.write(
                    f"{r.status.upper()} {r.experiment}/{r.config_name}/seed-{r.seed}: "
                    f"{r.error[:300]}"
                )

    def close(self) -> None:
        warnings.showwarning = self._showwarning
        for bar in self.bars.values():
            bar.close()


def _run_local(batches: list[Batch], workers: int, progress: _Progress) -> list[RunResult]:
    if workers == 1 or len(batches) == 1:
        results: list[RunResult] = []
        for batch in batches:
            done = execute_batch(batch, on_row=progress.on_row)
            progress.done(done)
            results += done
        return results
    return run_pool(batches, workers, progress.done, progress.poll, progress.write)


_REAPER = """
import os, sys, time
import psutil
driver = int(sys.argv[1])
procs = []
for item in sys.argv[2:]:
    pid, created = item.split(":")
    try:
        p = psutil.Process(int(pid))
        if abs(p.create_time() - float(created)) < 1e-3:
            procs.append(p)
    except psutil.Error:
        pass
def alive(pid):
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False
while alive(driver) and any(p.is_running() for p in procs):
    time.sleep(0.5)
victims = []
for p in procs:
    try:
        victims += [p, *p.children(recursive=True)]
    except psutil.Error:
        pass
for p in victims:
    try:
        p.terminate()
    except psutil.Error:
        pass
_, left = psutil.wait_procs(victims, timeout=5)
for p in left:
    try:
        p.kill()
    except psutil.Error:
        pass
"""


def _children() -> dict[int, float]:
    """This process's descendants: pid -> creation time (empty without psutil)."""
    try:
        import psutil
    except ImportError:  # pragma: no cover - psutil comes with ray
        return {}
    out = {}
    for child in psutil.Process().children(recursive=True):
        with contextlib.suppress(psutil.Error):
            out[child.pid] = child.create_time()
    return out


def _reap_with_driver(started: dict[int, float]) -> subprocess.Popen[bytes] | None:
    """Start a reaper that ends the processes in ``started`` (a local Ray's GCS, raylet,
    agents, and their children) when this driver dies, even by SIGKILL, when ``ray.shutdown``
    cannot run. It lives in its own session, so a Ctrl-C of the terminal does not end it first;
    it exits by itself once those processes are gone."""
    if not started:
        return None
    return subprocess.Popen(
        [sys.executable, "-c", _REAPER, str(os.getpid())]
        + [f"{pid}:{created}" for pid, created in started.items()],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def start_local_ray(num_cpus: int) -> None:
    """Start a single-node Ray on this machine (no dashboard); its workers get this ``sys.path``.
    Its processes end with this process, also when it is killed (see ``_reap_with_driver``).

    (Ray itself resolves a loopback node address to the machine's address, so none is passed.)
    """
    import ray

    path = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
    before = _children()
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )
    after = _children()
    _reap_with_driver({pid: t for pid, t in after.items() if before.get(pid) != t})


def _run_ray(
    batches: list[Batch], workers: int, address: str | None, progress: _Progress
) -> list[RunResult]:
    try:
        import ray
    except ImportError as e:
        raise RuntimeError(f'--backend ray needs Ray: pip install -e ".[ray]" ({e})') from e
    started = False
    if not ray.is_initialized():
        if address:
            ray.init(address=address, log_to_driver=False)
        else:
            start_local_ray(workers)
        started = True
    results: list[RunResult] = []
    pending: list[Any] = []
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(execute_batch)
        refs = {remote.remote(b): b for b in batches}
        pending = list(refs)
        while pending:
            finished, pending = ray.wait(pending, num_returns=1, timeout=1.0)
            for ref in finished:
                try:
                    done = ray.get(ref)
                except Exception as e:  # the task's worker died
                    batch = refs[ref]
                    message = f"Ray task failed: {type(e).__name__}: {str(e)[:300]}"
                    done = [record_crash(batch.spec, t, message) for t in batch.tasks]
                progress.done(done)
                results += done
            progress.poll()
    finally:
        for ref in pending:  # interrupted: stop our tasks on a cluster we only joined
            with contextlib.suppress(Exception):
                ray.cancel(ref)
        if started:
            ray.shutdown()  # ends the local Ray (its raylet, GCS and workers) we started
    return results


def run_sweep(
    plan: SweepPlan,
    *,
    backend: Backend = "local",
    workers: int | None = None,
    ray_address: str | None = None,
    progress: bool = True,
) -> SweepResult:
    """Execute a plan; a failed run is recorded and the others go on."""
    if backend not in ("local", "ray"):
        raise ValueError(f"backend must be 'local' or 'ray', got {backend!r}")
    n_workers = workers if workers is not None else (os.cpu_count() or 1)
    if n_workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    threads = default_threads(n_workers)  # the one default of threads per run
    batches = [
        b if b.threads is not None else dataclasses.replace(b, threads=threads)
        for b in plan.batches
    ]
    bar = _Progress(batches, plan.units, progress)
    try:
        with stop_signals():  # SIGTERM cleans up like Ctrl-C
            if not batches:
                results: list[RunResult] = []
            elif backend == "local":
                results = _run_local(batches, n_workers, bar)
            else:
                results = _run_ray(batches, n_workers, ray_address, bar)
    finally:
        bar.close()
    return SweepResult(plan.skipped + results)


def default_threads(workers: int | None) -> int:
    """Torch threads per worker: ``max(1, cores // workers)`` (``workers`` None: the cores).
    The default of ``repro run`` and of :func:`run_sweep` for a plan made without ``threads``."""
    cores = os.cpu_count() or 1
    return max(1, cores // (workers or cores))
