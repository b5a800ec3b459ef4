"""Quantum Advantage Actor-Critic: a batched differentiable circuit simulator and A2C agents."""

from qa2c.a2c import A2C, A2CConfig
from qa2c.agents import AGENT_NAMES, Agent, AgentConfig, build_agent
from qa2c.train import train, train_population
from qa2c.vqc import VQC

__all__: list[str] = [
    "A2C",
    "AGENT_NAMES",
    "VQC",
    "A2CConfig",
    "Agent",
    "AgentConfig",
    "build_agent",
    "train",
    "train_population",
]
