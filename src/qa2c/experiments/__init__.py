"""Experiments of the QA2C paper (protocol: shared/DESIGN.md)."""
