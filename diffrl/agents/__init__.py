"""One module per method; :data:`METHODS` maps a config's ``method`` to its class."""

from diffrl.agents.base import DatasetInfo, Method, Policy, Stage
from diffrl.agents.bc import BC
from diffrl.agents.diar import DIAR
from diffrl.agents.diffuser import Diffuser
from diffrl.agents.dql import DiffusionQL
from diffrl.agents.latent_diffuser import LatentDiffuser
from diffrl.agents.ldcp import LDCP
from diffrl.agents.ldcq import LDCQ
from diffrl.agents.ldgc import LDGC
from diffrl.agents.plandd import PlanDD, PlanQD
from diffrl.agents.plandq import PlanDQ
from diffrl.agents.plandq_gym import PlanDQGym
from diffrl.agents.planqq import PlanQQ
from diffrl.agents.train_state import EMA, TrainState, apply_loss

METHODS = {method.name: method for method in (Diffuser, BC, LDCQ, LDGC, LDCP, DIAR, DiffusionQL, PlanDQ, PlanQQ, PlanQD,
                                              PlanDD, PlanDQGym, LatentDiffuser)}


def method_class(name: str) -> type[Method]:
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


__all__ = ["BC", "DIAR", "DiffusionQL", "EMA", "LDCP", "LDCQ", "LDGC", "LatentDiffuser", "METHODS", "DatasetInfo",
           "Diffuser", "Method", "PlanDD", "PlanDQ", "PlanDQGym", "PlanQD", "PlanQQ", "Policy", "Stage", "TrainState",
           "apply_loss", "method_class"]
