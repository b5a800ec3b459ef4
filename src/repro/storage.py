"""Run folders: ``config.json``, the append-only ``metrics.jsonl`` and ``summary.json``.

A run folder is ``OUT/experiment/config/seed-N/``. Files that are written whole (config,
summary, report) are written atomically by :func:`atomic_write_text` (temp file in the same
folder, fsync, ``os.replace``); the metrics log is append-only, one JSON object per line, flushed
after every row. A run killed mid-write leaves at most one torn last line, which
:func:`repair_metrics` removes; a bad line anywhere else is corruption, reported by
:class:`CorruptFileError` with its line number, never skipped silently.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = [
    "CONFIG_FILE",
    "METRICS_FILE",
    "OUTPUT_FILE",
    "SUMMARY_FILE",
    "CorruptFileError",
    "MetricsWriter",
    "RunState",
    "atomic_write_json",
    "atomic_write_text",
    "check_row",
    "read_json",
    "read_metrics",
    "repair_metrics",
    "run_dir_for",
    "run_state",
]

CONFIG_FILE = "config.json"
METRICS_FILE = "metrics.jsonl"
SUMMARY_FILE = "summary.json"
OUTPUT_FILE = "output.log"

Scalar = int | float | str | bool


def run_dir_for(out: Path, experiment: str, config_name: str, seed: int) -> Path:
    """The folder of one run: ``out/experiment/config_name/seed-N``."""
    if seed < 0:
        raise ValueError(f"seed must be >= 0, got {seed}")
    for what, name in (("experiment", experiment), ("config_name", config_name)):
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"{what} must be a non-empty folder name, got {name!r}")
    return Path(out) / experiment / config_name / f"seed-{seed}"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def dotted_json(obj: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A JSON config with nested objects flattened to dotted keys (``{"a2c.n_envs": 16}``)."""
    out: dict[str, Any] = {}
    for k, v in obj.items():
        if isinstance(v, Mapping) and v:
            out.update(dotted_json(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            # mkstemp makes 0600; give the file the mode a plain open() would
            os.fchmod(f.fileno(), 0o666 & ~_umask())
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, obj: Any) -> None:
    """Atomically write ``obj`` as indented JSON (keys in insertion order)."""
    atomic_write_text(path, json.dumps(obj, indent=2) + "\n")


class CorruptFileError(ValueError):
    """A run file that cannot be read back (empty, truncated, not JSON); the message names the
    file, the line where it applies, and what to do."""


def read_json(path: Path, what_to_do: str = "") -> Any:
    """The JSON in ``path``; an empty or invalid file raises :class:`CorruptFileError`."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (ValueError, UnicodeDecodeError) as e:
        hint = f"; {what_to_do}" if what_to_do else ""
        raise CorruptFileError(f"{path} is empty or not valid JSON ({e}){hint}") from None


def check_row(row: object, previous_step: int | None) -> dict[str, Scalar]:
    """Validate one metric row of the experiment protocol and return a copy of it.

    A row is a flat dict of str -> int/float/str/bool with an int ``"step"`` larger than
    ``previous_step``.
    """
    if not isinstance(row, Mapping):
        raise TypeError(f"a metric row must be a dict, got {type(row).__name__}: {row!r}")
    out: dict[str, Scalar] = {}
    for key, value in row.items():
        if not isinstance(key, str):
            raise TypeError(f"metric row keys must be str, got {key!r} in {dict(row)!r}")
        if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
            value = value.item()
        if not isinstance(value, int | float | str | bool):
            raise TypeError(
                f"metric {key!r} must be an int/float/str/bool, got {type(value).__name__}: {value!r}"
            )
        out[key] = value
    step = out.get("step")
    if isinstance(step, bool) or not isinstance(step, int):
        raise ValueError(f"a metric row needs an int 'step', got {step!r} in {out!r}")
    if previous_step is not None and step <= previous_step:
        raise ValueError(f"'step' must strictly increase: {step} after {previous_step}")
    return out


def repair_metrics(path: Path) -> int:
    """Drop a torn (unterminated or unparsable) last line of ``path``; return the bytes removed."""
    path = Path(path)
    if not path.exists():
        return 0
    data = path.read_bytes()
    if not data:
        return 0
    keep = len(data)
    if not data.endswith(b"\n"):
        keep = data.rfind(b"\n") + 1  # 0 when there is no complete line at all
    else:
        last_start = data.rfind(b"\n", 0, len(data) - 1) + 1
        try:
            json.loads(data[last_start:])
        except ValueError:
            keep = last_start
    if keep == len(data):
        return 0
    with open(path, "r+b") as f:
        f.truncate(keep)
        f.flush()
        os.fsync(f.fileno())
    return len(data) - keep


def read_metrics(path: Path) -> Iterator[dict[str, Any]]:
    """The rows of a ``metrics.jsonl``. A torn last line is skipped (not repaired); a bad line
    before the last, or a row whose step does not increase (a duplicated row would count twice
    in every aggregate), raises :class:`CorruptFileError` naming its line number."""
    path = Path(path)
    if not path.exists():
        return
    with open(path, "rb") as f:
        pending: tuple[int, bytes] | None = None  # a bad line, fatal unless it is the last
        last: int | None = None
        for number, line in enumerate(f, 1):
            if pending is not None:
                raise _corrupt_line(path, *pending)
            row = _parse_row(line) if line.endswith(b"\n") else None
            if row is None:
                pending = (number, line)
                continue
            if last is not None and row["step"] <= last:
                raise CorruptFileError(
                    f"{path}: line {number} has step {row['step']} after step {last} (steps "
                    "must increase; a repeated row would be counted twice); remove this run "
                    "folder to train the run again (or restore the file)"
                )
            last = row["step"]
            yield row


def _parse_row(line: bytes) -> dict[str, Any] | None:
    try:
        row = json.loads(line)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(row, dict) or isinstance(row.get("step"), bool):
        return None
    return row if isinstance(row.get("step"), int) else None


def _corrupt_line(path: Path, number: int, line: bytes) -> CorruptFileError:
    shown = line[:60].decode("utf-8", "replace").rstrip("\n")
    return CorruptFileError(
        f"{path}: line {number} is not a metric row ({shown!r}) and more rows follow it: "
        "the log was changed after it was written; remove this run folder to train the run "
        "again (or restore the file)"
    )


class MetricsWriter:
    """Appends rows to ``metrics.jsonl``, one JSON line per row, flushed per row.

    On open it reads back the stored rows, so that ``last_step`` and ``final`` (the last value
    of each key) cover the whole run, then repairs a torn last line; a corrupt line before the
    last raises :class:`CorruptFileError` before anything is changed.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.last_step: int | None = None
        self.final: dict[str, Scalar] = {}
        self.rows = 0
        for row in read_metrics(self.path):
            self._account(row)
        self.resumed_from = self.last_step
        """Rows up to this step were stored before: a resumed run's replay of them is dropped."""
        self._stored_rows = self.rows
        repair_metrics(self.path)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close())

    def _account(self, row: Mapping[str, Any]) -> None:
        self.final.update(row)
        self.last_step = int(row["step"])
        self.rows += 1

    def append(self, row: Mapping[str, Any]) -> bool:
        """Append ``row``; return whether it was written. Before the first new row, a row whose
        step is <= the last step stored before this writer opened is a resumed run replaying
        its rows: dropped. Any other row whose step does not increase raises ValueError (an
        experiment that yields one step twice would otherwise lose a row silently)."""
        step = row.get("step") if isinstance(row, Mapping) else None
        if (
            isinstance(step, int)
            and not isinstance(step, bool)
            and self.resumed_from is not None
            and self.rows == self._stored_rows
            and step <= self.resumed_from
        ):
            return False
        clean = check_row(row, self.last_step)
        self._file.write(json.dumps(clean, allow_nan=True) + "\n")
        self._file.flush()
        self._account(clean)
        return True

    def close(self) -> None:
        if not self._file.closed:
            self._file.flush()
            os.fsync(self._file.fileno())
            self._file.close()

    def __enter__(self) -> MetricsWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class RunState:
    """What is on disk for one run folder."""

    status: Literal["new", "incomplete", "finished", "failed"]
    config: dict[str, Any] | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def run_state(run_dir: Path) -> RunState:
    """Read the state of ``run_dir`` (``new`` when it has no ``config.json``)."""
    run_dir = Path(run_dir)
    cfg_path = run_dir / CONFIG_FILE
    if not cfg_path.exists():
        return RunState("new")
    config = read_json(cfg_path, CONFIG_HINT)
    if not isinstance(config, dict):
        raise CorruptFileError(f"{cfg_path} does not hold a JSON object; {CONFIG_HINT}")
    summary_path = run_dir / SUMMARY_FILE
    if not summary_path.exists():
        return RunState("incomplete", config)
    summary = read_json(summary_path, SUMMARY_HINT)
    status = summary.get("status") if isinstance(summary, dict) else None
    if status not in ("finished", "failed"):
        raise CorruptFileError(f"{summary_path}: unknown status {status!r}; {SUMMARY_HINT}")
    return RunState(status, config, summary)


CONFIG_HINT = "restore it, or remove this run folder to train the run again"
SUMMARY_HINT = "delete it and run the same command again: the run resumes and rewrites it"


def has_results(run_dir: Path) -> bool:
    """Whether a run folder holds anything a run wrote (rows, a summary, other files)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return False
    ignore = {".lock", CONFIG_FILE}
    return any(p.name not in ignore for p in run_dir.iterdir())


def json_equal(a: Any, b: Any) -> bool:
    """Equality of two JSON values, treating NaN as equal to NaN."""
    if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
        return True
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(json_equal(x, y) for x, y in zip(a, b))
    return bool(a == b) and type(a) is type(b)
