"""Mean ± std tables over seeds from ``ROOT/<config>/<seed>/metrics.jsonl`` (our minimal entries).

    python -m ntl.experiments.report /tmp/ntl_quick/arith eval/interpolate/accuracy eval/extrapolate/mae

Each run contributes its last row that has the metric; runs without it are left out (the
``n`` column says how many seeds were used). The standard deviation is the sample one (ddof=1).
"""

from __future__ import annotations

import json
import math
import statistics
import sys
from pathlib import Path

__all__ = ["final_values", "format_table"]


def final_values(root: Path, metric: str) -> dict[str, list[float]]:
    """``{config: [value of the metric in each seed's last row that has it]}``."""
    out: dict[str, list[float]] = {}
    for path in sorted(Path(root).glob("*/*/metrics.jsonl")):
        value = None
        for line in path.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                if metric in row:
                    value = float(row[metric])
        if value is not None:
            out.setdefault(path.parent.parent.name, []).append(value)
    return out


def _fmt(values: list[float]) -> str:
    mean = statistics.fmean(values)
    std = statistics.stdev(values) if len(values) > 1 else math.nan
    return f"{mean:.4g} ± {std:.2g}"


def format_table(root: Path, metrics: list[str]) -> str:
    """A markdown table: one row per config, one column per metric (mean ± std, n)."""
    per_metric = {m: final_values(root, m) for m in metrics}
    configs = sorted({c for values in per_metric.values() for c in values})
    lines = ["| config | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for config in configs:
        cells = []
        for m in metrics:
            values = per_metric[m].get(config, [])
            cells.append(f"{_fmt(values)} (n={len(values)})" if values else "—")
        lines.append(f"| {config} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(format_table(Path(sys.argv[1]), sys.argv[2:]))
