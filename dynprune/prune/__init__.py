"""Static pruning: masks (torch.nn.utils.prune), criteria, ratios, schedules, SFP, physical channel removal."""

from .method import StaticPruneMethod
from .pruners import PRUNERS, get_pruner

METHOD_NAMES = (*PRUNERS.names(), "sfp")

__all__ = ["METHOD_NAMES", "PRUNERS", "StaticPruneMethod", "get_pruner"]
