"""Sweeps: plan the (config, seed) runs, skip finished ones, execute the rest on a backend.

Backends: ``local`` (a process pool with the spawn context; in this process when
``workers == 1``) and ``ray`` (each batch a Ray task; a single-node Ray started here, or an existing
cluster by address). Ray does the scheduling; there is no scheduler of our own here.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import json
import multiprocessing
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from repro.overrides import apply_overrides
from repro.registry import config_to_json, get_spec, load_experiment
from repro.runner import Batch, RunResult, RunTask, check_config, execute_batch
from repro.storage import run_dir_for, run_state

__all__ = [
    "SweepPlan",
    "SweepResult",
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
                lines.append(f"    {r.error.splitlines()[0][:200]}")
        counts = {
            s: sum(r.status == s for r in self.results) for s in ("finished", "skipped", "failed")
        }
        lines.append(", ".join(f"{n} {s}" for s, n in counts.items()))
        return "\n".join(lines)


def plan_sweep(
    experiment: str,
    config_names: Sequence[str] | None,
    overrides: Sequence[str],
    seeds: Sequence[int],
    out: Path,
    *,
    group_seeds: bool = False,
    threads: int = 1,
    tensorboard: bool = True,
) -> SweepPlan:
    """Resolve configs and seeds into batches; finished runs become ``skipped`` results.

    Raises (before touching any file) on an unknown config or key, or when an existing run
    folder holds a different config.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
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
    plan = SweepPlan(experiment, [])
    for name in dict.fromkeys(names):
        base = apply_overrides(exp.configs[name], overrides)
        todo: list[RunTask] = []
        for seed in dict.fromkeys(seeds):
            config = dataclasses.replace(base, seed=seed)
            run_dir = run_dir_for(out, experiment, name, seed)
            check_config(run_dir, config_to_json(config))
            if run_state(run_dir).status == "finished":
                plan.skipped.append(RunResult(experiment, name, seed, str(run_dir), "skipped"))
            else:
                todo.append(RunTask(name, config, run_dir))
        groups = [todo] if group_seeds and todo else [[t] for t in todo]
        for tasks in groups:
            plan.batches.append(Batch(spec, tuple(tasks), group_seeds, threads, tensorboard))
    return plan


def _target_steps(config: object) -> int | None:
    """The step a run ends at, when its config says (``total_steps`` or ``max_steps``)."""
    for name in ("total_steps", "max_steps"):
        value = getattr(config, name, None)
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return value
    return None


class _Progress:
    """One tqdm bar: in steps (sum over runs of their last logged step, with an ETA) when every
    config names its length, else in finished runs. Pool workers are followed by reading the
    tails of their ``metrics.jsonl`` files."""

    def __init__(self, batches: Sequence[Batch], desc: str, enabled: bool) -> None:
        from tqdm.auto import tqdm

        tasks = [t for b in batches for t in b.tasks]
        self.targets = {Path(t.run_dir): _target_steps(t.config) for t in tasks}
        self.n_runs, self.done_runs = len(tasks), 0
        self.by_steps = bool(tasks) and all(v is not None for v in self.targets.values())
        self.last: dict[Path, int] = {}
        self._offsets: dict[Path, int] = {}
        if self.by_steps:
            total = sum(v or 0 for v in self.targets.values())
            self.bar = tqdm(
                total=total, desc=desc, unit="step", unit_scale=True, disable=not enabled
            )
            self.poll()
        else:
            self.bar = tqdm(total=self.n_runs, desc=desc, unit="run", disable=not enabled)

    def on_row(self, run_dir: Path, step: int) -> None:
        run_dir = Path(run_dir)
        cap = self.targets.get(run_dir) or step
        prev = self.last.get(run_dir, 0)
        self.last[run_dir] = step
        if self.by_steps:
            self.bar.update(min(step, cap) - min(prev, cap))

    def poll(self) -> None:
        """Read the last step appended to each run's ``metrics.jsonl`` since the last poll."""
        for run_dir in self.targets:
            path = run_dir / "metrics.jsonl"
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
            self.done_runs += 1
            if not self.by_steps:
                self.bar.update(1)
            if r.status == "failed":
                self.bar.write(
                    f"FAILED {r.experiment}/{r.config_name}/seed-{r.seed}: {r.error[:200]}"
                )
        if self.by_steps:
            self.bar.set_postfix_str(f"runs {self.done_runs}/{self.n_runs} done")

    def close(self) -> None:
        self.bar.close()


def _crashed(batch: Batch, error: BaseException) -> list[RunResult]:
    msg = f"worker crashed: {type(error).__name__}: {error}"
    return [
        RunResult(batch.spec.name, t.config_name, t.seed, str(t.run_dir), "failed", error=msg)
        for t in batch.tasks
    ]


def _run_local(batches: list[Batch], workers: int, progress: _Progress) -> list[RunResult]:
    results: list[RunResult] = []
    if workers == 1 or len(batches) == 1:
        for batch in batches:
            done = execute_batch(batch, on_row=progress.on_row)
            progress.done(done)
            results += done
        return results
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
        futures = {pool.submit(execute_batch, b): b for b in batches}
        pending = set(futures)
        while pending:
            finished, pending = cf.wait(pending, timeout=2.0, return_when=cf.FIRST_COMPLETED)
            for fut in finished:
                try:
                    done = fut.result()
                except Exception as e:  # the worker process died
                    done = _crashed(futures[fut], e)
                progress.done(done)
                results += done
            progress.poll()
    return results


def start_local_ray(num_cpus: int) -> None:
    """Start a single-node Ray on this machine (no dashboard); its workers get this ``sys.path``.

    (Ray itself resolves a loopback node address to the machine's address, so none is passed.)
    """
    import ray

    path = os.pathsep.join(p for p in sys.path if p and os.path.isdir(p))
    ray.init(
        num_cpus=num_cpus,
        include_dashboard=False,
        log_to_driver=False,
        configure_logging=False,
        runtime_env={"env_vars": {"PYTHONPATH": path}},
    )


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
    try:
        remote = ray.remote(num_cpus=1, max_retries=0)(execute_batch)
        refs = {remote.remote(b): b for b in batches}
        pending = list(refs)
        while pending:
            finished, pending = ray.wait(pending, num_returns=1, timeout=2.0)
            for ref in finished:
                try:
                    done = ray.get(ref)
                except Exception as e:  # the task's worker died
                    done = _crashed(refs[ref], e)
                progress.done(done)
                results += done
            progress.poll()
    finally:
        if started:
            ray.shutdown()
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
    bar = _Progress(plan.batches, plan.experiment, progress)
    try:
        if not plan.batches:
            results: list[RunResult] = []
        elif backend == "local":
            results = _run_local(plan.batches, n_workers, bar)
        else:
            results = _run_ray(plan.batches, n_workers, ray_address, bar)
    finally:
        bar.close()
    return SweepResult(plan.skipped + results)


def default_threads(workers: int | None) -> int:
    """Torch threads per worker: ``max(1, cores // workers)``."""
    cores = os.cpu_count() or 1
    return max(1, cores // (workers or cores))
