"""Register the toy experiments of tests/repro/toy_experiments.py for every runner test."""

from tests.repro.toy_experiments import register

register()
