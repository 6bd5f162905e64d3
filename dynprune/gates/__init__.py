"""Dynamic pruning: per-input channel gates, their estimators and the budgeted training method."""

from .estimators import ESTIMATORS, create_estimator
from .method import GATED, GatedMethod, GateOptions
from .module import ChannelGate, GateSet, attach_gates

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
