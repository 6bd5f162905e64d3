"""RL policy search over dynprune's channel sites (uses dynprune; dynprune never imports it).

Importing ``agents.env`` registers the gymnasium environment ``dynprune/ChannelPruning-v0``.
"""
