"""Confidence cascades of pruned models: per-input compute from static members (``python -m dynprune.cascade``)."""

from .model import Cascade, load_cascade

__all__ = ["Cascade", "load_cascade"]
