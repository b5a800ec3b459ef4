"""The NTL paper's experiments at laptop scale (``transformers`` extra needed).

- :mod:`ntl.experiments.arith`: DeepMind mathematics arithmetic, CE vs CE + NTL-WAS / NTL-MSE;
- :mod:`ntl.experiments.regression`: text -> number regression, CE vs NTL vs a regression head.

Each module exposes a config dataclass, ``CONFIGS`` and ``run(config, run_dir)`` yielding rows.
"""
