"""A gymnasium environment over a model's channel sites: one step per site, the action is its pruning ratio.

Registered as ``dynprune/ChannelPruning-v0`` by ``import agents``::

    env = gymnasium.make("dynprune/ChannelPruning-v0", checkpoint="runs/dense/checkpoint.pt", target_macs=0.5)

The episode's only reward comes at its last step (the strategy's score); every finished episode meets the MAC
target through the budget walls (``agents.budget``). The score of a strategy is memoised by its kept channel
counts, and ``info["evaluation"]`` carries each new score so the search can persist it (``agents.cache``).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces
from torch import nn

from dynprune.base import DEFAULT_R_MAX

from .actions import ACTIONS
from .budget import BudgetWall
from .evaluate import EvalSettings, SearchError, StrategyEvaluator
from .rewards import REWARDS, LatencyTable

FEATURES = (
    "site index",
    "layer type",
    "in channels",
    "out channels",
    "kernel",
    "stride",
    "feature map",
    "site MACs",
    "MACs removed",
    "MACs remaining",
    "previous ratio",
)


def _layer_type(module: nn.Module) -> float:
    if isinstance(module, nn.Linear):
        return 1.0
    return 0.5 if module.groups > 1 else 0.0


def site_features(evaluator: StrategyEvaluator) -> np.ndarray:
    """The static part of each site's observation [n_sites, 8], every column scaled to about [0, 1]."""
    model, cost = evaluator.model, evaluator.cost
    layer_macs = {layer.name: layer.macs for layer in cost.layers}
    rows = []
    for i, site in enumerate(evaluator.sites):
        producer = model.get_submodule(site.producer)
        if isinstance(producer, nn.Conv2d):
            c_in, c_out = producer.in_channels, producer.out_channels
            k, stride = producer.kernel_size[0], producer.stride[0]
            per_pixel = c_out * c_in // producer.groups * k * k
            fmap = (layer_macs[site.producer] / per_pixel) ** 0.5
        else:
            c_in, c_out, k, stride, fmap = producer.in_features, producer.out_features, 1, 1, 1.0
        rows.append([i, _layer_type(producer), c_in, c_out, k, stride, fmap, cost.site_macs(site.name)])
    table = np.asarray(rows, dtype=np.float64)
    table[:, 0] /= max(len(rows) - 1, 1)
    for col in (2, 3, 4, 5, 6, 7):
        table[:, col] /= max(table[:, col].max(), 1e-12)
    return table


class ChannelPruningEnv(gym.Env):
    metadata = {"render_modes": []}  # noqa: RUF012 (gymnasium's own convention)

    def __init__(
        self,
        checkpoint: str | None = None,
        target_macs: float = 0.5,
        r_min: float = 0.0,
        r_max: float = DEFAULT_R_MAX,
        reward: str = "accuracy",
        evaluator: StrategyEvaluator | None = None,
        settings: EvalSettings | Mapping[str, Any] | None = None,
        data_dir: str | None = None,
        known_scores: Mapping[str, float] | None = None,
        latency: LatencyTable | None = None,
        actions: str = "ratio",
    ) -> None:
        super().__init__()
        if evaluator is None:
            if checkpoint is None:
                raise SearchError("the environment needs a dense checkpoint (checkpoint=...) or an evaluator")
            if isinstance(settings, Mapping):  # plain values, as gymnasium.make(..., settings={...}) passes them
                settings = EvalSettings(**settings)
            evaluator = StrategyEvaluator(checkpoint, data_dir, settings)
        self.evaluator = evaluator
        self.reward_fn = REWARDS.get(reward)
        self.actions = ACTIONS.get(actions)
        self.latency = latency if latency is not None else LatencyTable()
        self.order = [s.name for s in evaluator.sites]
        self.wall = BudgetWall(evaluator.cost, self.order, target_macs, r_min, r_max)
        self.r_min, self.r_max, self.target_macs = r_min, r_max, target_macs
        self.static = site_features(evaluator)
        self.site_share = self.static[:, 7] / max(self.static[:, 7].sum(), 1e-12)
        self.scores: dict[str, float] = dict(known_scores or {})
        self.observation_space = spaces.Box(0.0, 1.0, (len(FEATURES),), np.float32)
        self.action_space = spaces.Box(-1.0, 1.0, (1,), np.float32)
        self._reset_state()

    # -- mapping
    def action_to_ratio(self, action: float) -> float:
        """The ratio the action asks of the current site (before the walls)."""
        track = self.wall.track(self.keep, self.t) if self.actions.on_track else 0.0
        return self.actions.to_ratio(action, self.r_min, self.r_max, track)

    # -- gymnasium API
    def _reset_state(self) -> None:
        self.t = 0
        self.ratios: dict[str, float] = {}
        self.keep: dict[str, float] = {}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self._reset_state()
        return self._observation(), {}

    def step(self, action: np.ndarray):
        if self.t >= len(self.order):
            raise RuntimeError("step() after the episode ended; call reset()")
        name = self.order[self.t]
        ratio = self.wall.clip(self.keep, self.t, self.action_to_ratio(np.asarray(action).reshape(-1)[0]))
        self.ratios[name] = ratio
        self.keep[name] = 1.0 - ratio
        self.t += 1
        if self.t < len(self.order):
            return self._observation(), 0.0, False, False, {}
        info = self._finish()
        return self._observation(), info["reward"], True, False, info

    # -- internals
    def _observation(self) -> np.ndarray:
        t = min(self.t, len(self.order) - 1)
        dense = self.evaluator.cost.dense_macs
        decided = {**self.keep, **{s: 1.0 for s in self.order[len(self.keep) :]}}
        removed_share = 1.0 - float(self.evaluator.cost.macs(decided)) / dense
        remaining_share = float(self.site_share[t:].sum())
        previous = self.ratios[self.order[self.t - 1]] if self.t > 0 else 0.0
        dynamic = [removed_share, remaining_share, previous]
        return np.clip(np.concatenate([self.static[t], dynamic]), 0.0, 1.0).astype(np.float32)

    def strategy_key(self) -> str:
        counts = self.evaluator.kept_channels(self.ratios)
        return f"{self.evaluator.cache_prefix}|" + ",".join(str(counts[s]) for s in self.order)

    def _finish(self) -> dict[str, Any]:
        key = self.strategy_key()
        new = key not in self.scores
        if new:
            self.scores[key] = self.evaluator.accuracy(self.ratios)
        val_acc = self.scores[key]
        macs = float(self.evaluator.cost.macs({s: 1.0 - r for s, r in self.ratios.items()}))
        latency_ms = self.latency.model_ms(self.evaluator, self.ratios) if self.reward_fn.needs_latency else None
        reward = self.reward_fn(val_acc=val_acc, macs=macs, latency_ms=latency_ms)
        info = {
            "ratios": dict(self.ratios),
            "val_acc": val_acc,
            "macs": macs,
            "macs_ratio": macs / self.evaluator.cost.dense_macs,
            "reward": reward,
            "cached": not new,
        }
        if latency_ms is not None:
            info["latency_ms"] = latency_ms
        if new:
            info["evaluation"] = (key, val_acc)
        return info
