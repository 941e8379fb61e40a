"""One module per method; :data:`AGENTS` maps a config's ``method`` to its agent class."""

from diffrl.agents.base import Agent, DatasetInfo, Policy
from diffrl.agents.bc import BCAgent
from diffrl.agents.diffuser import DiffuserAgent

AGENTS = {"diffuser": DiffuserAgent, "bc": BCAgent}

__all__ = ["AGENTS", "Agent", "BCAgent", "DatasetInfo", "DiffuserAgent", "Policy"]
