"""How an agent's action in [-1, 1] becomes a site's pruning ratio (a registry, chosen with ``--actions``).

SB3's DDPG/TD3/SAC want a Box action in [-1, 1] (``check_env`` warns otherwise); the environment and the
baselines (which act in ratios) both go through these mappings.

- ``ratio`` (AMC's): the action spans [r_min, r_max] at every site. Decided in order inside the budget walls,
  random actions leave early sites lightly pruned and push the last sites (few MACs, most of the parameters) to
  r_max: every random strategy at a low target is the same corner of the space (BENCHMARKS, "Does the reward rank
  strategies right?").
- ``centred``: action 0 is the uniform ratio that meets the target over this site and the ones after it (the
  "track", given the sites decided so far); the action scales the kept fraction by ``2 ** -action`` (+1 keeps
  half the track's channels, -1 twice as many), inside [r_min, r_max]. Random actions are perturbations of uniform
  pruning, symmetric on a log scale (a linear map to the walls is not: at a low target the track sits near r_max,
  so almost every random action under-prunes and the last sites are pinned to r_max again).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from dynprune.registry import Registry


def action_to_ratio(action: float, r_min: float, r_max: float) -> float:
    a = float(np.clip(action, -1.0, 1.0))
    return r_min + (a + 1.0) / 2.0 * (r_max - r_min)


def ratio_to_action(ratio: float, r_min: float, r_max: float) -> float:
    return float(np.clip(2.0 * (ratio - r_min) / (r_max - r_min) - 1.0, -1.0, 1.0))


def centred_ratio(action: float, r_min: float, r_max: float, track: float) -> float:
    """0 -> track; the kept fraction (1 - ratio) scaled by 2 ** -action; inside [r_min, r_max]."""
    a = float(np.clip(action, -1.0, 1.0))
    return float(np.clip(1.0 - (1.0 - track) * 2.0**-a, r_min, r_max))


class ToRatio(Protocol):
    def __call__(self, action: float, r_min: float, r_max: float, track: float) -> float: ...


@dataclass(frozen=True)
class ActionMapping:
    name: str
    to_ratio: ToRatio  # (action, r_min, r_max, track) -> ratio; track: the uniform ratio that meets the target
    on_track: bool  # True: actions are relative to the track (which the env then computes), 0 = uniform pruning
    description: str

    def uniform(self, ratio: float, r_min: float, r_max: float) -> float:
        """The action that prunes every site at the uniform ``ratio`` (the uniform baseline's action)."""
        return 0.0 if self.on_track else ratio_to_action(ratio, r_min, r_max)


ACTIONS: Registry[ActionMapping] = Registry("action mapping")
ACTIONS.add(
    ActionMapping(
        "ratio", lambda a, lo, hi, track: action_to_ratio(a, lo, hi), False, "[-1, 1] spans [r_min, r_max] (AMC)"
    )
)
ACTIONS.add(
    ActionMapping(
        "centred",
        centred_ratio,
        True,
        "0 = the uniform ratio that meets the target; +-1 = half / twice its kept channels",
    )
)
