"""Static pruning: masks (torch.nn.utils.prune), criteria, ratios, schedules, SFP, physical channel removal."""

from .method import STATIC, PruneOptions, StaticPruneMethod
from .pruners import PRUNERS, get_pruner

__all__ = ["PRUNERS", "STATIC", "PruneOptions", "StaticPruneMethod", "get_pruner"]
