"""One candidate of the NTL recipe search (docs/ntl_recipe.md, "Recipe 2"): train CE with
``ntl.experiments.arith.run`` and append every row, with wall seconds, the process's CPU seconds
and the 1-minute load average, to ``OUT/NAME.jsonl``.

    python benchmarks/ntl_recipe_search.py X_causal_pv_rn_dr '{}' --out runs/ntl_recipe2
    python benchmarks/ntl_recipe_search.py Z_causal_pv_rn_dr_1500 '{"max_steps": 1500}' --out runs/ntl_recipe2
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from ntl.experiments import arith

# candidate X of recipe 2 (the laptop2-ce config); a candidate overrides some of these
BASE: dict[str, Any] = {
    "loss": "ce",
    "arch": "causal",
    "difficulty": "train-easy",
    "categories": ("numbers__place_value", "numbers__round_number", "numbers__div_remainder"),
    "eval_splits": ("heldout", "interpolate"),
    "curve_splits": 1,
    "train_size": 15000,
    "eval_size": 100,
    "d_model": 128,
    "d_ff": 512,
    "num_layers": 4,
    "num_heads": 4,
    "max_steps": 3000,
    "batch_size": 32,
    "lr": 2e-3,
    "warmup_steps": 100,
    "log_every": 50,
    "eval_every": 250,
    "checkpoint_every": 1000,
    "max_new_tokens": 16,
    "num_threads": 1,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("name", help="candidate name (its run folder and .jsonl file)")
    parser.add_argument(
        "overrides", help="JSON object of ArithConfig fields, e.g. '{\"lr\": 4e-3}'"
    )
    parser.add_argument("--out", type=Path, default=Path("runs/ntl_recipe2"))
    args = parser.parse_args()
    extra = {
        k: tuple(v) if isinstance(v, list) else v for k, v in json.loads(args.overrides).items()
    }
    config = arith.ArithConfig(**{**BASE, **extra})
    run_dir = args.out / args.name
    args.out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    with open(run_dir.with_suffix(".jsonl"), "a") as fh:
        for row in arith.run(config, run_dir):
            row |= {"wall_s": time.time() - start, "cpu_s": time.process_time()}
            row["load1"] = os.getloadavg()[0]
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            acc = {k[5:]: round(v, 3) for k, v in row.items() if k.endswith("/accuracy")}
            print(
                args.name, row["step"], round(row["wall_s"]), round(row["cpu_s"]), acc, flush=True
            )


if __name__ == "__main__":
    main()
