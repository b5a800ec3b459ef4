"""``--set key=value`` overrides, each value parsed by tyro with the config field's type."""

from __future__ import annotations

import ast
import contextlib
import dataclasses
import inspect
import io
import itertools
import shlex
import textwrap
import types
import typing
from collections import abc
from collections.abc import Sequence
from typing import Any

import tyro

__all__ = [
    "MAX_SEEDS",
    "apply_overrides",
    "config_keys",
    "config_values",
    "field_docs",
    "parse_seeds",
]

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def config_keys(config_class: type, prefix: str = "") -> dict[str, Any]:
    """Every settable key of a config dataclass (nested ones dotted) -> its type."""
    hints = typing.get_type_hints(config_class)
    keys: dict[str, Any] = {}
    for f in dataclasses.fields(config_class):
        tp = hints[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            keys.update(config_keys(tp, f"{prefix}{f.name}."))
        else:
            keys[f"{prefix}{f.name}"] = tp
    return keys


def field_docs(config_class: type, prefix: str = "") -> dict[str, str]:
    """The docstring under each field of a dataclass (``name: type = default`` then
    ``\"\"\"doc\"\"\"``); a nested dataclass's under dotted keys (``"a2c.n_envs"``)."""
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(config_class)))
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for node, nxt in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(nxt, ast.Expr)
            and isinstance(nxt.value, ast.Constant)
            and isinstance(nxt.value.value, str)
        ):
            docs[f"{prefix}{node.target.id}"] = " ".join(nxt.value.value.split())
    hints = typing.get_type_hints(config_class)
    for f in dataclasses.fields(config_class):
        tp = hints[f.name]
        if isinstance(tp, type) and dataclasses.is_dataclass(tp):
            docs.update(field_docs(tp, f"{prefix}{f.name}."))
    return docs


def config_values(config: Any, prefix: str = "") -> dict[str, Any]:
    """A config dataclass instance's values by key (nested ones dotted), as ``config_keys``."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value) and not isinstance(value, type):
            out.update(config_values(value, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = value
    return out


def _unknown_key(key: str, config: Any, keys: Sequence[str]) -> ValueError:
    """The error for an unknown key; it names the keys of a group (``agent`` -> ``agent.*``) or
    the dotted keys that end in ``key`` (``n_envs`` -> ``a2c.n_envs``), else lists every key."""
    group = [k for k in keys if k.startswith(f"{key}.")]
    ends = [k for k in keys if k.endswith(f".{key}")]
    if group:
        listing = "it is a group of keys: " + ", ".join(group)
    elif ends:
        listing = f"did you mean {' or '.join(ends)}?"
    else:
        listing = "valid keys: " + ", ".join(sorted(keys))
    return ValueError(f"unknown config key {key!r} for {type(config).__name__}; {listing}")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _sequence_tokens(key: str, value: str) -> list[str]:
    """The elements of a sequence value: ``a,b`` (commas) or ``"a b"`` (spaces, shell quoting);
    an empty element (``a,,b``, a trailing comma) is an error naming the value."""
    if "," not in value:
        return shlex.split(value)
    parts = [p.strip() for p in value.split(",")]
    if not all(parts):
        raise ValueError(
            f"--set {key}={value!r}: an empty element in a comma-separated list "
            "(write a,b or 'a b')"
        )
    return parts


def _parse_one(config: Any, key: str, value: str, tp: Any) -> Any:
    union = typing.get_origin(tp) in (typing.Union, types.UnionType)
    options = typing.get_args(tp) if union else (tp,)  # `tuple[float, ...] | None` is a sequence
    is_sequence = any(
        typing.get_origin(t) in (tuple, list, set, frozenset, abc.Sequence) for t in options
    )
    tokens = _sequence_tokens(key, value) if is_sequence else [value]
    if tp is bool:
        low = value.strip().lower()
        if low not in _TRUE | _FALSE:
            raise ValueError(f"--set {key}={value!r}: expected a bool (true/false)")
        tokens = ["True" if low in _TRUE else "False"]
    sink = io.StringIO()
    try:
        with contextlib.redirect_stderr(sink), contextlib.redirect_stdout(sink):
            return tyro.cli(
                type(config),
                default=config,
                args=[f"--{key}", *tokens],
                config=(tyro.conf.FlagConversionOff,),
                console_outputs=False,
                add_help=False,
            )
    except SystemExit:
        choices = typing.get_args(tp) if typing.get_origin(tp) is typing.Literal else ()
        hint = f" (one of {', '.join(map(repr, choices))})" if choices else ""
        raise ValueError(f"--set {key}={value!r}: cannot parse as {_type_name(tp)}{hint}") from None


def apply_overrides(config: Any, overrides: Sequence[str]) -> Any:
    """A copy of ``config`` with ``key=value`` overrides applied (``config`` is not mutated).

    Unknown keys raise a ValueError that lists the valid keys; ``seed`` is set by ``--seeds``.
    """
    if not dataclasses.is_dataclass(config) or isinstance(config, type):
        raise TypeError(f"config must be a dataclass instance, got {type(config).__name__}")
    keys = config_keys(type(config))
    parsed: list[tuple[str, str]] = []
    for item in overrides:
        if not isinstance(item, str) or "=" not in item:
            raise ValueError(f"--set expects key=value, got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip().replace("-", "_")
        if key not in keys:
            raise _unknown_key(key, config, list(keys))
        if key == "seed":
            raise ValueError("--set seed=... is not allowed; choose seeds with --seeds")
        parsed.append((key, value))
    out = dataclasses.replace(config)  # a copy; tyro builds new objects below
    for key, value in parsed:
        out = _parse_one(out, key, value, keys[key])
    return out


MAX_SEEDS = 10_000
"""The most seeds one command may ask for (a typo like 0-100000000 fails at once)."""


def parse_seeds(text: str) -> list[int]:
    """``"0-9"``, ``"0,3,5"`` or ``"0-2,7"`` -> sorted distinct seeds (at most ``MAX_SEEDS``)."""
    seeds: set[int] = set()
    for part in text.split(","):
        part = part.strip()
        try:
            if "-" in part:
                lo, hi = (int(p) for p in part.split("-", 1))
                if lo > hi:
                    raise ValueError
                if hi - lo + 1 + len(seeds) > MAX_SEEDS:
                    raise OverflowError
                seeds.update(range(lo, hi + 1))
            else:
                seeds.add(int(part))
        except ValueError:
            raise ValueError(f"--seeds: cannot parse {text!r} (use e.g. 0-9 or 0,3,5)") from None
        except OverflowError:
            raise ValueError(
                f"--seeds {text!r} asks for more than {MAX_SEEDS:,} seeds in one command"
            ) from None
    if len(seeds) > MAX_SEEDS:
        raise ValueError(f"--seeds {text!r} asks for more than {MAX_SEEDS:,} seeds in one command")
    if any(s < 0 for s in seeds):
        raise ValueError(f"--seeds must be >= 0, got {text!r}")
    return sorted(seeds)
