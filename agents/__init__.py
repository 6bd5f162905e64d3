"""RL policy search over dynprune's channel sites (uses dynprune; dynprune never imports it).

Importing ``agents`` registers the gymnasium environment ``dynprune/ChannelPruning-v0`` (``ENV_ID``); the
environment's module (torch, the model, the data) loads only when ``gymnasium.make`` builds one. Without any
import, ``gymnasium.make("agents:dynprune/ChannelPruning-v0", ...)`` imports the package itself.
"""

import gymnasium as gym

ENV_ID = "dynprune/ChannelPruning-v0"


def register() -> None:
    """Register the environment with gymnasium (idempotent); its module loads only on ``gymnasium.make``."""
    if ENV_ID not in gym.registry:
        gym.register(id=ENV_ID, entry_point="agents.env:ChannelPruningEnv")


register()
