"""Dynamic pruning: per-input channel gates, their estimators and the budgeted training method."""

from .estimators import ESTIMATORS, create_estimator
from .method import GatedMethod
from .module import ChannelGate, GateSet, attach_gates

__all__ = ["ESTIMATORS", "ChannelGate", "GateSet", "GatedMethod", "attach_gates", "create_estimator"]
