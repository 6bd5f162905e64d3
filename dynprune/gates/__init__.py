"""Dynamic pruning: per-input channel gates, their estimators and the budgeted training method."""

from .estimators import ESTIMATORS, create_estimator
from .method import GATED, GatedMethod
from .module import ChannelGate, GateSet, attach_gates
from .options import GateOptions

__all__ = [
    "ESTIMATORS",
    "GATED",
    "ChannelGate",
    "GateOptions",
    "GateSet",
    "GatedMethod",
    "attach_gates",
    "create_estimator",
]
