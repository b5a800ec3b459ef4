"""Quantum Advantage Actor-Critic: a batched differentiable circuit simulator and A2C agents."""

from qa2c.vqc import VQC

__all__: list[str] = ["VQC"]
