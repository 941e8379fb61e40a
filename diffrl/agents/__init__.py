"""One module per method; :data:`AGENTS` maps a config's ``method`` to its agent class."""

from diffrl.agents.base import Agent, DatasetInfo, Policy
from diffrl.agents.bc import BCAgent
from diffrl.agents.diffuser import DiffuserAgent
from diffrl.agents.latent_skills import METHOD_STAGES, LatentSkillAgent
from diffrl.agents.ldcq import LDCQAgent

AGENTS = {"diffuser": DiffuserAgent, "bc": BCAgent, "ldcq": LDCQAgent, "ldgc": LatentSkillAgent,
          "ldcp": LatentSkillAgent}

__all__ = ["AGENTS", "METHOD_STAGES", "Agent", "BCAgent", "DatasetInfo", "DiffuserAgent", "LDCQAgent",
           "LatentSkillAgent", "Policy"]
