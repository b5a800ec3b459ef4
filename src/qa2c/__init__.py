"""Quantum Advantage Actor-Critic: a batched differentiable circuit simulator and A2C agents."""

__all__: list[str] = []
