"""The registered experiments, imported lazily by module path.

An experiment module follows the protocol of ``DESIGN.md``: a config dataclass with a
``seed: int`` field, ``CONFIGS: dict[str, Config]`` and ``run(config, run_dir) -> Iterator[dict]``;
optionally ``run_many(configs, run_dirs) -> Iterator[tuple[int, dict]]`` that trains several
configs (e.g. seeds) in one process.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "EXPERIMENTS",
    "ExperimentSpec",
    "ExperimentUnavailableError",
    "LoadedExperiment",
    "cartpole_params",
    "config_to_json",
    "count_params",
    "get_spec",
    "load_experiment",
    "register_experiment",
]


class ExperimentUnavailableError(RuntimeError):
    """A registered experiment whose module cannot be imported (not written yet, or an extra missing)."""


@dataclass(frozen=True)
class ExperimentSpec:
    """Where an experiment lives: ``module`` exposes ``config_class``, ``CONFIGS`` and ``run``."""

    name: str
    module: str
    config_class: str
    description: str = ""
    extras: str = ""
    """The optional extras it needs, as ``pip install -e ".[extras]"`` names them."""
    params: str = ""
    """Optional ``module:function`` giving the trainable parameter count of a config."""


@dataclass(frozen=True)
class LoadedExperiment:
    """An imported experiment module."""

    spec: ExperimentSpec
    config_class: type
    configs: Mapping[str, Any]
    run: Callable[[Any, Path], Iterator[Mapping[str, Any]]]
    run_many: Callable[[list[Any], list[Path]], Iterator[tuple[int, Mapping[str, Any]]]] | None


EXPERIMENTS: dict[str, ExperimentSpec] = {}


def register_experiment(spec: ExperimentSpec) -> None:
    """Add (or replace) an experiment in the registry; the module is not imported here."""
    if not isinstance(spec, ExperimentSpec):
        raise TypeError(f"spec must be an ExperimentSpec, got {type(spec).__name__}")
    if not spec.name or "/" in spec.name:
        raise ValueError(f"experiment name must be a non-empty folder name, got {spec.name!r}")
    EXPERIMENTS[spec.name] = spec


for _spec in (
    ExperimentSpec(
        "ntl-arith",
        "ntl.experiments.arith",
        "ArithConfig",
        "NTL: transformer on DeepMind mathematics arithmetic, CE vs CE+NTL-WAS vs CE+NTL-MSE",
        "transformers,data",
    ),
    ExperimentSpec(
        "ntl-regression",
        "ntl.experiments.regression",
        "RegressionConfig",
        "NTL: tabular regression rendered as text, CE vs CE+NTL vs a regression head",
        "transformers,data",
    ),
    ExperimentSpec(
        "qa2c-cartpole",
        "qa2c.experiments.cartpole",
        "CartPoleConfig",
        "QA2C: classical, quantum and hybrid actor-critic agents on CartPole-v1",
        "rl",
        "repro.registry:cartpole_params",
    ),
    ExperimentSpec(
        "qa2c-fair",
        "qa2c.experiments.fair",
        "FairConfig",
        "QA2C: improved quantum vs matched classical agent, greedy evaluations (issue 15)",
        "rl",
        "qa2c.experiments.fair:fair_params",
    ),
):
    register_experiment(_spec)


def cartpole_params(config: Any) -> int:
    """Trainable parameters of a ``qa2c-cartpole`` config's actor and critic together."""
    from qa2c.experiments.cartpole import make_agent

    return int(make_agent(config).num_parameters())


def count_params(spec: ExperimentSpec, config: Any) -> int | None:
    """The spec's parameter count of ``config``, or None when it has no ``params`` hook."""
    if not spec.params:
        return None
    module, _, func = spec.params.partition(":")
    fn: Callable[[Any], int] = getattr(importlib.import_module(module), func)
    return int(fn(config))


def get_spec(name: str) -> ExperimentSpec:
    if name not in EXPERIMENTS:
        valid = ", ".join(sorted(EXPERIMENTS))
        raise ValueError(f"unknown experiment {name!r}; valid experiments: {valid}")
    return EXPERIMENTS[name]


def load_experiment(name_or_spec: str | ExperimentSpec) -> LoadedExperiment:
    """Import an experiment's module and check that it follows the protocol."""
    spec = get_spec(name_or_spec) if isinstance(name_or_spec, str) else name_or_spec
    try:
        module = importlib.import_module(spec.module)
    except ImportError as e:
        hint = f'; it needs pip install -e ".[{spec.extras}]"' if spec.extras else ""
        raise ExperimentUnavailableError(
            f"experiment {spec.name!r} is not available: cannot import {spec.module} ({e}){hint}"
        ) from e
    missing = [a for a in (spec.config_class, "CONFIGS", "run") if not hasattr(module, a)]
    if missing:
        raise ExperimentUnavailableError(
            f"experiment {spec.name!r}: module {spec.module} lacks {', '.join(missing)}"
        )
    config_class: type = getattr(module, spec.config_class)
    configs = module.CONFIGS
    if not dataclasses.is_dataclass(config_class) or "seed" not in {
        f.name for f in dataclasses.fields(config_class)
    }:
        raise ExperimentUnavailableError(
            f"experiment {spec.name!r}: {spec.config_class} must be a dataclass with a 'seed' field"
        )
    if not isinstance(configs, Mapping) or not configs:
        raise ExperimentUnavailableError(
            f"experiment {spec.name!r}: CONFIGS must be a non-empty dict"
        )
    for cname, cfg in configs.items():
        if not isinstance(cfg, config_class):
            raise ExperimentUnavailableError(
                f"experiment {spec.name!r}: CONFIGS[{cname!r}] is not a {spec.config_class}"
            )
    return LoadedExperiment(
        spec, config_class, configs, module.run, getattr(module, "run_many", None)
    )


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _jsonable(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, enum.Enum):
        return _jsonable(value.value)
    if isinstance(value, Path):
        return str(value)
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(
        f"config value {value!r} of type {type(value).__name__} is not JSON-serialisable"
    )


def config_to_json(config: Any) -> dict[str, Any]:
    """A config dataclass as a plain JSON dict (tuples become lists, as after a JSON round trip)."""
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"config must be a dataclass instance, got {type(config).__name__}")
    out = _jsonable(config)
    return dict(json.loads(json.dumps(out)))
