"""The one mapping between an agent's action in [-1, 1] and a site's pruning ratio in [r_min, r_max].

SB3's DDPG/TD3/SAC want a Box action in [-1, 1] (``check_env`` warns otherwise); the environment and the
baselines (which act in ratios) both go through these two functions.
"""

from __future__ import annotations

import numpy as np


def action_to_ratio(action: float, r_min: float, r_max: float) -> float:
    a = float(np.clip(action, -1.0, 1.0))
    return r_min + (a + 1.0) / 2.0 * (r_max - r_min)


def ratio_to_action(ratio: float, r_min: float, r_max: float) -> float:
    return float(np.clip(2.0 * (ratio - r_min) / (r_max - r_min) - 1.0, -1.0, 1.0))
