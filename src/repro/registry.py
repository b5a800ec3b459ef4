"""The registered experiments, imported lazily by module path.

An experiment module follows the protocol of ``DESIGN.md``: a config dataclass with a
``seed: int`` field, ``CONFIGS: dict[str, Config]`` and ``run(config, run_dir) -> Iterator[dict]``;
optionally ``run_many(configs, run_dirs) -> Iterator[tuple[int, dict]]`` that trains several
configs (e.g. seeds) in one process, and ``PROTOCOL``: a plain dict that declares what the runner
needs to know (convention 11; the experiment never imports ``repro``), read into a
:class:`Protocol` here. Its keys (all optional):

==================  ===========================================================================
``score``           metric key of the score (higher is better), e.g. ``"charts/episodic_return"``
``score_per``       ``"episode"`` (one row per episode: a run's score is the mean of its last
                    ``score_window`` values) or ``"run"`` (a run's score is the key's final value)
``score_window``    episodes averaged for a run's final score (default 100)
``solve_threshold`` solved when the ``solve_window``-episode moving average first reaches this
``solve_window``    (default 100)
``max_score``       the best possible score (the report counts runs that reach it)
``random_score``    the score of a random policy (a line in the plots)
``progress_unit``   what ``step`` counts, e.g. ``"env step"``, ``"optimiser step"``
``progress_total``  ``config -> int``: the step at which a run ends
``params``          ``config -> int``: trainable parameters
``validate``        ``config -> None``: raises ``ValueError`` naming a bad value
``checkpoint``      the checkpoint's file name in the run folder (a ``torch.save`` zip archive)
``upgrade_config``  ``dict -> dict``: a stored ``config.json`` of an older shape -> the current
                    shape (the same dict when current), so that old run folders resume; the
                    folder's file is never rewritten
==================  ===========================================================================
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import json
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "EXPERIMENTS",
    "ExperimentSpec",
    "ExperimentUnavailableError",
    "LoadedExperiment",
    "Protocol",
    "config_to_json",
    "count_params",
    "get_spec",
    "load_experiment",
    "progress_total",
    "register_experiment",
    "validate_config",
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


@dataclass(frozen=True)
class Protocol:
    """What an experiment declares for the runner (its module's ``PROTOCOL`` dict)."""

    score: str | None = None
    score_per: Literal["episode", "run"] = "run"
    score_window: int = 100
    solve_threshold: float | None = None
    solve_window: int = 100
    max_score: float | None = None
    random_score: float | None = None
    progress_unit: str = "step"
    progress_total: Callable[[Any], int] | None = None
    params: Callable[[Any], int] | None = None
    validate: Callable[[Any], None] | None = None
    checkpoint: str | tuple[str, ...] | None = None
    """File name(s) of a run's checkpoint in its folder (zip archives: torch.save or np.savez)."""
    upgrade_config: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    """A stored ``config.json`` of an older shape -> the current shape (compared, never written)."""

    @classmethod
    def from_dict(cls, name: str, raw: object) -> Protocol:
        """Read a module's ``PROTOCOL``; unknown keys or wrong types are errors naming them."""
        if raw is None:
            return cls()
        if not isinstance(raw, Mapping):
            raise ExperimentUnavailableError(
                f"experiment {name!r}: PROTOCOL must be a dict, got {type(raw).__name__}"
            )
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - set(fields))
        if unknown:
            raise ExperimentUnavailableError(
                f"experiment {name!r}: PROTOCOL has unknown key(s) {', '.join(map(repr, unknown))};"
                f" valid keys: {', '.join(fields)}"
            )
        out = cls(**raw)
        checks: dict[str, tuple[type, ...]] = {
            "score": (str,),
            "score_window": (int,),
            "solve_window": (int,),
            "solve_threshold": (int, float),
            "max_score": (int, float),
            "random_score": (int, float),
            "progress_unit": (str,),
            "checkpoint": (str, tuple),
        }
        for key, types in checks.items():
            value = getattr(out, key)
            if value is not None and (isinstance(value, bool) or not isinstance(value, types)):
                raise ExperimentUnavailableError(
                    f"experiment {name!r}: PROTOCOL[{key!r}] = {value!r} has the wrong type"
                )
        for key in ("progress_total", "params", "validate", "upgrade_config"):
            if getattr(out, key) is not None and not callable(getattr(out, key)):
                raise ExperimentUnavailableError(
                    f"experiment {name!r}: PROTOCOL[{key!r}] must be a function of the config"
                )
        if out.score_per not in ("episode", "run"):
            raise ExperimentUnavailableError(
                f"experiment {name!r}: PROTOCOL['score_per'] must be 'episode' or 'run', "
                f"got {out.score_per!r}"
            )
        if out.score_window < 1 or out.solve_window < 1:
            raise ExperimentUnavailableError(f"experiment {name!r}: PROTOCOL windows must be >= 1")
        return out


@dataclass(frozen=True)
class LoadedExperiment:
    """An imported experiment module."""

    spec: ExperimentSpec
    config_class: type
    configs: Mapping[str, Any]
    run: Callable[[Any, Path], Iterator[Mapping[str, Any]]]
    run_many: Callable[[list[Any], list[Path]], Iterator[tuple[int, Mapping[str, Any]]]] | None
    protocol: Protocol = Protocol()


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
        "rl,jax",
    ),
    ExperimentSpec(
        "qa2c-fair",
        "qa2c.experiments.fair",
        "FairConfig",
        "QA2C: improved quantum vs matched classical agent, greedy evaluations (issue 15)",
        "rl",
    ),
):
    register_experiment(_spec)


def count_params(protocol: Protocol, config: Any) -> int | None:
    """The declared parameter count of ``config``, or None when the experiment declares none."""
    if protocol.params is None:
        return None
    return int(protocol.params(config))


def progress_total(protocol: Protocol, config: Any) -> int | None:
    """The declared step at which a run of ``config`` ends (None: not declared)."""
    if protocol.progress_total is None:
        return None
    return int(protocol.progress_total(config))


def validate_config(name: str, protocol: Protocol, config: Any) -> None:
    """The experiment's own checks, and a positive ``progress_total``; ValueError names the value."""
    if protocol.validate is not None:
        protocol.validate(config)
    total = progress_total(protocol, config)
    if total is not None and total < 1:
        raise ValueError(
            f"{name}: the run length must be >= 1 {protocol.progress_unit}, got {total}"
        )


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
    protocol = Protocol.from_dict(spec.name, getattr(module, "PROTOCOL", None))
    return LoadedExperiment(
        spec, config_class, configs, module.run, getattr(module, "run_many", None), protocol
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
