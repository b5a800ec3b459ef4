"""The ``repro`` command line: ``list``, ``run``, ``report`` and ``quick``.

Commands are typed dataclasses parsed by tyro. Errors in what the user asked for (an unknown
experiment, config or key, a changed config for an existing run folder) print one
``repro: error: ...`` line that lists the valid choices, and exit with status 2; a sweep
with failed runs exits with status 1 after printing its summary.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

try:
    import tyro
except ImportError as e:  # pragma: no cover - depends on the installed extras
    raise ImportError(
        f'the repro command line needs the cli extra: pip install -e ".[cli]" ({e})'
    ) from e

from repro.overrides import config_keys, config_values, field_docs, parse_seeds
from repro.registry import EXPERIMENTS, ExperimentUnavailableError, load_experiment
from repro.sweep import SweepResult, plan_sweep, run_sweep

__all__ = ["ListCmd", "QuickCmd", "ReportCmd", "RunCmd", "main"]


@dataclass
class ListCmd:
    """List the registered experiments and their named configs (with EXPERIMENT: its config keys)."""

    experiment: Annotated[str | None, tyro.conf.Positional, tyro.conf.arg(metavar="EXPERIMENT")] = (
        None
    )
    """Show the config keys and the named configs' values of this experiment."""


@dataclass
class RunCmd:
    """Run every (config, seed) pair of an experiment; finished runs are skipped, others resumed."""

    experiment: Annotated[str, tyro.conf.Positional, tyro.conf.arg(metavar="EXPERIMENT")]
    """A registered experiment (see `repro list`)."""
    config: Annotated[tuple[str, ...], tyro.conf.UseAppendAction] = ()
    """Named configs to run (default: all of the experiment's configs)."""
    set: Annotated[tuple[str, ...], tyro.conf.UseAppendAction] = ()
    """Config overrides key=value, parsed by the field's type; `repro list EXPERIMENT` shows the keys.
    A tuple field takes a comma-separated list (categories=a,b) or a quoted space-separated
    one ('categories=a b'); an empty value gives an empty tuple."""
    seeds: str = "0"
    """Seeds: a range 0-9, a list 0,3,5, or both 0-2,7."""
    out: Path = Path("runs")
    """Runs go to OUT/experiment/config/seed-N/."""
    backend: Literal["local", "ray"] = "local"
    """local: a process pool on this machine; ray: Ray tasks (local Ray, or --ray-address)."""
    workers: int | None = None
    """Parallel runs (default: the number of CPU cores)."""
    threads: int | None = None
    """torch threads per run (default: max(1, cores // workers))."""
    ray_address: str | None = None
    """Address of an existing Ray cluster (default: start a single-node Ray on this machine)."""
    group_seeds: bool = False
    """Train all seeds of a config together in one process (the experiment's run_many)."""
    tensorboard: bool = True
    """Also write TensorBoard event files into each run folder (when tensorboard is installed)."""
    progress: bool = True
    """Show progress bars."""


@dataclass
class ReportCmd:
    """Aggregate a runs folder over seeds into a Markdown report with PNG plots."""

    runs_dir: Annotated[Path, tyro.conf.Positional, tyro.conf.arg(metavar="RUNS_DIR")]
    """The --out folder of `repro run`."""
    output: Annotated[Path, tyro.conf.arg(aliases=("-o",))] = Path("report")
    """Folder for report.md and the plots."""


@dataclass
class QuickCmd:
    """Small versions of both papers' headline experiments, then the report (see repro.quick)."""

    out: Path = Path("runs/quick")
    """Folder for the runs."""
    output: Annotated[Path, tyro.conf.arg(aliases=("-o",))] = Path("report")
    """Folder for report.md and the plots."""
    workers: int | None = None
    """Parallel runs (default: the number of CPU cores)."""
    dry_run: bool = False
    """Print the plan and exit."""


_COMMANDS: dict[str, Callable[..., Any]] = {
    "list": ListCmd,
    "run": RunCmd,
    "report": ReportCmd,
    "quick": QuickCmd,
}


def _split_multi(argv: list[str]) -> list[str]:
    """Accept ``--set a=1 b=2`` and ``--config A B`` as well as repeated flags."""
    out: list[str] = []
    flag: str | None = None
    for token in argv:
        if token.startswith("-"):
            flag = token if token in ("--set", "--config") else None
            out.append(token)
        elif flag is not None and out[-1] != flag:
            out += [flag, token]
        else:
            out.append(token)
    return out


def _defaults(config_class: type) -> dict[str, Any]:
    """The config class's default values by key (nested ones dotted); {} if it has none."""
    try:
        return config_values(config_class())
    except TypeError:  # a field without a default
        return {}


def _cmd_list(cmd: ListCmd) -> int:
    if cmd.experiment is not None:
        exp = load_experiment(cmd.experiment)
        print(f"{cmd.experiment}: {exp.spec.description}")
        print(f"config class {exp.spec.module}.{exp.spec.config_class}; keys (--set KEY=VALUE):")
        docs = field_docs(exp.config_class)
        defaults = _defaults(exp.config_class)
        groups: set[str] = set()
        for key, tp in config_keys(exp.config_class).items():
            group = key.rpartition(".")[0]
            if group and group not in groups:  # a nested config: its doc, then its keys
                groups.add(group)
                print(f"  {group}.*" + (f"  -- {docs[group]}" if group in docs else ""))
            default = f" = {defaults[key]!r}" if key in defaults else ""
            doc = f"  -- {docs[key]}" if key in docs else ""
            print(f"  {key}: {getattr(tp, '__name__', tp)}{default}{doc}")
        print("configs (the keys each sets; the others keep the defaults above):")
        for name, cfg in exp.configs.items():
            changed = [
                f"{k}={v!r}"
                for k, v in config_values(cfg).items()
                if k not in defaults or defaults[k] != v
            ]
            print(f"config {name}: {', '.join(changed) or '(the defaults)'}")
        return 0
    for name, spec in EXPERIMENTS.items():
        try:
            configs = ", ".join(load_experiment(spec).configs)
        except ExperimentUnavailableError as e:
            configs = f"(unavailable: {e})"
        print(f"{name:<18} {spec.description}\n{'':<18} configs: {configs}")
    return 0


def _print_result(result: SweepResult) -> int:
    print(result.table())
    return 1 if result.failed else 0


def _cmd_run(cmd: RunCmd) -> int:
    plan = plan_sweep(
        cmd.experiment,
        cmd.config or None,
        cmd.set,
        parse_seeds(cmd.seeds),
        cmd.out,
        group_seeds=cmd.group_seeds,
        threads=cmd.threads,  # None: run_sweep's default_threads(workers)
        tensorboard=cmd.tensorboard,
    )
    if plan.skipped:
        print(f"{len(plan.skipped)} finished run(s) skipped, {plan.n_runs} to run", file=sys.stderr)
    result = run_sweep(
        plan,
        backend=cmd.backend,
        workers=cmd.workers,
        ray_address=cmd.ray_address,
        progress=cmd.progress,
    )
    return _print_result(result)


def _cmd_report(cmd: ReportCmd) -> int:
    from repro.report import write_report

    path = write_report(cmd.runs_dir, cmd.output)
    print(f"report written to {path}")
    return 0


def _cmd_quick(cmd: QuickCmd) -> int:
    from repro.quick import run_quick

    return run_quick(cmd.out, cmd.output, workers=cmd.workers, dry_run=cmd.dry_run)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``repro`` console script; returns the exit status."""
    args = _split_multi(list(sys.argv[1:] if argv is None else argv))
    cmd = tyro.extras.subcommand_cli_from_dict(
        _COMMANDS,
        args=args,
        prog="repro",
        description="Run and report the NTL and QA2C experiments: list, run, report, quick.",
    )
    try:
        if isinstance(cmd, ListCmd):
            return _cmd_list(cmd)
        if isinstance(cmd, RunCmd):
            return _cmd_run(cmd)
        if isinstance(cmd, ReportCmd):
            return _cmd_report(cmd)
        assert isinstance(cmd, QuickCmd), dataclasses.asdict(cmd)
        return _cmd_quick(cmd)
    except (ValueError, TypeError, ExperimentUnavailableError, FileNotFoundError) as e:
        print(f"repro: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\nrepro: interrupted; run the same command again to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
