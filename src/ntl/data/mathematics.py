"""DeepMind mathematics_dataset questions, generated offline, deterministically, and cached.

The generator is the real `mathematics-dataset` package (PyPI 1.0.1). It draws from python's
`random` module and numpy's global RNG; :func:`generate` seeds both and restores the caller's RNG
states afterwards, so the result depends only on ``(category, n, seed, split)``.

Splits follow the package's own ``generate.py``:

- ``"train"``: ``<module>.train(entropy_fn)`` with the full entropy range (the unsplit train set);
- ``"train-easy"`` / ``"train-medium"`` / ``"train-hard"``: the package's difficulty levels
  (``generate.py --train_split``): the first / middle / last third of each module's training
  entropy range (e.g. arithmetic (3, 10) -> (3, 5.33) / (5.33, 7.67) / (7.67, 10));
- ``"interpolate"``: ``<module>.test()``;
- ``"extrapolate"``: ``<module>.test_extra()``, whose categories are the ``*_big`` / ``*_longer``
  twins (``arithmetic__add_or_sub_big``, ...). A training category name is accepted too and is
  mapped to its twin with :func:`extrapolation_twin`.

Questions longer than 160 characters or answers longer than 30 are redrawn, as the package does.
Results are cached as JSON under ``$NTL_CACHE_DIR`` (default ``~/.cache/ntl-qa2c``), in a file
whose name carries a format version and the package version; files are written atomically.
"""

from __future__ import annotations

import hashlib
import importlib
import itertools
import json
import os
import random
import subprocess
import sys
import tempfile
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from types import ModuleType
from typing import Any

__all__ = [
    "CACHE_ENV",
    "EXTRAPOLATE_CATEGORIES",
    "FORMAT_VERSION",
    "PAPER_EXTRAPOLATE_CATEGORIES",
    "PAPER_TRAIN_CATEGORIES",
    "SPLITS",
    "TRAIN_LEVELS",
    "cache_dir",
    "categories",
    "extrapolation_twin",
    "generate",
    "generate_many",
]

FORMAT_VERSION = 1
CACHE_ENV = "NTL_CACHE_DIR"
SPLITS = ("train", "train-easy", "train-medium", "train-hard", "interpolate", "extrapolate")
TRAIN_LEVELS = ("train", "train-easy", "train-medium", "train-hard")
"""The training splits: the unsplit one and the package's three difficulty levels."""
_TOP_MODULES = ("algebra", "arithmetic", "comparison", "numbers")

# The paper's 13 training categories (interpolation uses the same) and 7 extrapolation categories.
PAPER_TRAIN_CATEGORIES: tuple[str, ...] = (
    "algebra__linear_1d",
    "algebra__linear_1d_composed",
    "algebra__linear_2d",
    "algebra__linear_2d_composed",
    "algebra__sequence_next_term",
    "arithmetic__add_or_sub",
    "arithmetic__add_sub_multiple",
    "arithmetic__mul",
    "numbers__div_remainder",
    "numbers__div_remainder_composed",
    "numbers__place_value",
    "numbers__round_number",
    "numbers__round_number_composed",
)
PAPER_EXTRAPOLATE_CATEGORIES: tuple[str, ...] = (
    "arithmetic__add_or_sub_big",
    "arithmetic__add_sub_multiple_longer",
    "arithmetic__mixed_longer",
    "arithmetic__mul_big",
    "arithmetic__mul_div_multiple_longer",
    "numbers__place_value_big",
    "numbers__round_number_big",
)
EXTRAPOLATE_CATEGORIES: tuple[str, ...] = (
    *PAPER_EXTRAPOLATE_CATEGORIES,
    "arithmetic__div_big",
)


def _import_generator() -> dict[str, ModuleType]:
    """Import the generator's top-level modules, applying the sympy alias it needs."""
    try:
        diophantine = importlib.import_module("sympy.solvers.diophantine")
        if not hasattr(diophantine, "base_solution_linear"):
            inner = importlib.import_module("sympy.solvers.diophantine.diophantine")
            sys.modules["sympy.solvers.diophantine"].base_solution_linear = (  # type: ignore[attr-defined]
                inner.base_solution_linear
            )
        mods = {
            name: importlib.import_module(f"mathematics_dataset.modules.{name}")
            for name in _TOP_MODULES
        }
        composition = importlib.import_module("mathematics_dataset.util.composition")
        composition.Entity.__hash__ = _entity_hash
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError(
            "ntl.data.mathematics needs the 'data' extra: pip install 'ntl-qa2c[data]'"
        ) from exc
    return mods


# ``composition.expand_entities`` puts entities in a ``set`` and shuffles ``list(set)``; with the
# default identity hash that order follows memory addresses, so composed questions differ from
# process to process. We hash an entity by a counter taken at its first hashing: equality stays
# identity, only the (arbitrary) set order becomes reproducible. Reset for every generate call.
_ENTITY_COUNTER: list[itertools.count[int]] = [itertools.count()]


def _entity_hash(entity: object) -> int:
    key = entity.__dict__.get("_ntl_hash")
    if key is None:
        key = next(_ENTITY_COUNTER[0])
        entity.__dict__["_ntl_hash"] = key
    return int(key)


def _entropy_level(level: int, num_levels: int) -> Callable[[tuple[float, float]], Any]:
    """The ``level``-th of ``num_levels`` equal parts of an entropy range (the package's rule)."""
    lower, upper = level / num_levels, (level + 1) / num_levels

    def restrict(range_: tuple[float, float]) -> tuple[float, float]:
        start, length = range_[0], range_[1] - range_[0]
        return (start + lower * length, start + upper * length)

    return restrict


@lru_cache(maxsize=1)
def _module_table() -> dict[str, dict[str, Callable[[], Any]]]:
    """``{split: {"top__name": problem_fn}}`` for every split."""
    mods = _import_generator()
    table: dict[str, dict[str, Callable[[], Any]]] = {s: {} for s in SPLITS}
    for top, mod in mods.items():
        per_split = {
            "train": mod.train(_entropy_level(0, 1)),
            "train-easy": mod.train(_entropy_level(0, 3)),
            "train-medium": mod.train(_entropy_level(1, 3)),
            "train-hard": mod.train(_entropy_level(2, 3)),
            "interpolate": mod.test(),
            "extrapolate": mod.test_extra(),
        }
        for split, fns in per_split.items():
            for name, fn in fns.items():
                if not isinstance(fn, dict):
                    table[split][f"{top}__{name}"] = fn
    return table


def categories(split: str = "train") -> list[str]:
    """All category names the generator offers for ``split`` (sorted)."""
    _check_split(split)
    return sorted(_module_table()[split])


def extrapolation_twin(category: str) -> str:
    """The extrapolation category of a training category, e.g. ``mul`` -> ``mul_big``.

    An extrapolation category maps to itself.
    """
    extra = _module_table()["extrapolate"]
    if category in extra:
        return category
    twins = [c for c in (f"{category}_big", f"{category}_longer") if c in extra]
    if not twins:
        raise ValueError(f"category {category!r} has no extrapolation twin")
    return twins[0]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


def cache_dir() -> Path:
    """The cache folder: ``$NTL_CACHE_DIR`` or ``~/.cache/ntl-qa2c``."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "ntl-qa2c"


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("mathematics-dataset")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"


def _cache_path(category: str, n: int, seed: int, split: str) -> Path:
    key = f"v{FORMAT_VERSION}-md{_package_version()}-{split}-{category}-n{n}-s{seed}"
    digest = hashlib.sha1(key.encode()).hexdigest()[:10]
    return cache_dir() / "mathematics" / f"{key}-{digest}.json"


def _sample(fn: Callable[[], Any], n: int) -> list[tuple[str, str]]:
    settings = importlib.import_module("mathematics_dataset.generate_settings")
    out: list[tuple[str, str]] = []
    while len(out) < n:
        problem = fn()
        question, answer = str(problem.question), str(problem.answer)
        if len(question) > settings.MAX_QUESTION_LENGTH:
            continue
        if len(answer) > settings.MAX_ANSWER_LENGTH:
            continue
        out.append((question, answer))
    return out


Request = tuple[str, int, int, str]  # (category, n, seed, split)


def _generate_uncached(requests: list[Request]) -> list[list[tuple[str, str]]]:
    """Generate in a process whose string hashing is fixed (``PYTHONHASHSEED=0``).

    Some generator modules (algebra, ``*_composed``) pick from sets of strings, so their output
    depends on python's hash seed; one child process with a fixed seed serves all ``requests``.
    """
    if os.environ.get("PYTHONHASHSEED") == "0" and not sys.flags.hash_randomization:
        return [_generate_here(*r) for r in requests]
    env = {**os.environ, "PYTHONHASHSEED": "0"}
    cmd = [sys.executable, "-m", "ntl.data.mathematics"]
    proc = subprocess.run(
        cmd, env=env, input=json.dumps(requests), capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"generator process failed: {proc.stderr[-2000:]}")
    return [[(str(q), str(a)) for q, a in pairs] for pairs in json.loads(proc.stdout)]


def _generate_here(category: str, n: int, seed: int, split: str) -> list[tuple[str, str]]:
    import numpy as np

    fn = _module_table()[split][category]
    py_state = random.getstate()
    np_state = np.random.get_state()
    try:
        # Distinct streams per (category, split) for the same seed.
        mix = int.from_bytes(hashlib.sha256(f"{seed}/{split}/{category}".encode()).digest()[:4])
        random.seed(mix)
        np.random.seed(mix)
        _ENTITY_COUNTER[0] = itertools.count()
        return _sample(fn, n)
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def _write_atomic(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name, suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as fh:
            json.dump(payload, fh)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def _check_request(category: object, n: object, seed: object, split: object) -> Request:
    if not isinstance(category, str):
        raise TypeError(f"category must be a str, got {type(category).__name__}")
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be an int >= 0, got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {seed!r}")
    if not isinstance(split, str):
        raise TypeError(f"split must be a str, got {type(split).__name__}")
    _check_split(split)
    table = _module_table()[split]
    if split == "extrapolate" and category not in table:
        category = extrapolation_twin(category)
    if category not in table:
        raise ValueError(
            f"category {category!r} is not a {split!r} category; known: {sorted(table)}"
        )
    return (category, n, seed, split)


def _read_cache(path: Path) -> list[tuple[str, str]] | None:
    if not path.exists():
        return None
    with path.open() as fh:
        payload = json.load(fh)
    if payload.get("format_version") != FORMAT_VERSION:
        return None
    return [(str(q), str(a)) for q, a in payload["pairs"]]


def generate_many(
    requests: list[tuple[str, int, int, str]], *, cache: bool = True
) -> list[list[tuple[str, str]]]:
    """:func:`generate` for several ``(category, n, seed, split)`` requests at once.

    Uncached requests are generated together (one generator process), so this is much faster
    than separate calls; each result equals ``generate(*request)``.
    """
    checked = [_check_request(*r) for r in requests]
    results: list[list[tuple[str, str]] | None] = [
        _read_cache(_cache_path(*r)) if cache else None for r in checked
    ]
    missing = [i for i, r in enumerate(results) if r is None]
    if missing:
        fresh = _generate_uncached([checked[i] for i in missing])
        for i, pairs in zip(missing, fresh):
            results[i] = pairs
            if cache:
                category, n, seed, split = checked[i]
                _write_atomic(
                    _cache_path(*checked[i]),
                    {
                        "format_version": FORMAT_VERSION,
                        "package_version": _package_version(),
                        "category": category,
                        "split": split,
                        "n": n,
                        "seed": seed,
                        "pairs": [list(p) for p in pairs],
                    },
                )
    return [r for r in results if r is not None]


def generate(
    category: str, n: int, seed: int, split: str = "train", *, cache: bool = True
) -> list[tuple[str, str]]:
    """Generate ``n`` (question, answer) pairs of ``category`` for ``split``.

    Args:
        category: e.g. ``"arithmetic__add_or_sub"``; for ``split="extrapolate"`` either the
            twin name (``"arithmetic__add_or_sub_big"``) or the training name.
        n: number of pairs (>= 0).
        seed: the seed; the same arguments always give the same list.
        split: ``"train"`` (all difficulties), ``"train-easy" | "train-medium" | "train-hard"``
            (the package's difficulty levels), ``"interpolate"`` or ``"extrapolate"``.
        cache: read/write the on-disk cache (see :func:`cache_dir`).
    """
    return generate_many([(category, n, seed, split)], cache=cache)[0]


if __name__ == "__main__":
    _requests = json.load(sys.stdin)
    json.dump([_generate_here(c, int(n), int(s), sp) for c, n, s, sp in _requests], sys.stdout)
