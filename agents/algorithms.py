"""Search algorithms (a registry, ``--algo NAME``): stable-baselines3 agents and the baselines they must beat.

Agents are SB3's own implementations; only their settings are chosen here (AMC's where it gives them: 300-unit
actor and critic, discount 1 because the only reward comes at the episode's end, warm-up episodes of uniformly
random actions, then exploration noise that decays per episode). The baselines run in the same loop, on the same
environment, budget walls and evaluation: ``uniform`` (the ratio that meets the target at every site, one
episode) and ``random`` (uniformly random actions, the strong baseline EagleEye found).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from stable_baselines3 import DDPG, PPO, SAC, TD3
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import VecEnv

from dynprune.cost import CostModel
from dynprune.prune.ratios import solve_uniform_for_macs
from dynprune.registry import Registry

from .actions import ACTIONS
from .noise import DecayingTruncatedNormal
from .replay import EpisodeCreditBuffer


class Settings(Protocol):
    episodes: int
    warmup_episodes: int
    noise_sigma: float
    noise_decay: float
    learning_rate: float
    seed: int
    credit: str


class EpisodeSink(Protocol):
    done: bool
    limit: int  # episodes wanted

    def record(self, info: dict[str, Any]) -> None: ...


@dataclass(frozen=True)
class SearchSpace:
    """What the main process knows about the environment (its workers may live in other processes)."""

    cost: CostModel
    n_sites: int
    target_macs: float
    r_min: float
    r_max: float
    actions: str = "ratio"

    def uniform_action(self, ratio: float) -> float:
        """The action that prunes every site at the uniform ``ratio``."""
        return ACTIONS[self.actions].uniform(ratio, self.r_min, self.r_max)


Run = Callable[[VecEnv, Settings, SearchSpace, EpisodeSink, list[BaseCallback]], None]


@dataclass(frozen=True)
class Algorithm:
    name: str
    run: Run
    description: str
    learns: bool  # an RL agent (True) or a baseline (False)
    warms_up: bool = False  # off-policy agents: --warmup-episodes of random actions fill the replay buffer first


ALGORITHMS: Registry[Algorithm] = Registry("search algorithm")


class SinkCallback(BaseCallback):
    """Hands every finished episode's info to the sink; stops training once the sink has all its episodes."""

    def __init__(self, sink: EpisodeSink) -> None:
        super().__init__()
        self.sink = sink

    def _on_step(self) -> bool:
        for done, info in zip(self.locals["dones"], self.locals["infos"], strict=True):
            if done and not self.sink.done:
                self.sink.record(info)
        return not self.sink.done


def _off_policy_kwargs(cfg: Settings, space: SearchSpace) -> dict[str, Any]:
    n = space.n_sites
    episode_credit = cfg.credit == "episode"  # transitions reach the buffer when their episode ends
    return {
        "learning_rate": cfg.learning_rate,
        "buffer_size": max(10_000, cfg.episodes * n),
        # SB3 counts env steps, not episodes; with episode credit the first update waits for one whole episode
        "learning_starts": max(cfg.warmup_episodes, 1 if episode_credit else 0) * n,
        **({"replay_buffer_class": EpisodeCreditBuffer} if episode_credit else {}),
        "batch_size": 64,
        "tau": 0.01,
        "gamma": 1.0,
        "seed": cfg.seed,
        "device": "cpu",
        "verbose": 0,
    }


def _noise(cfg: Settings) -> DecayingTruncatedNormal:
    return DecayingTruncatedNormal(cfg.noise_sigma, cfg.noise_decay, cfg.warmup_episodes, seed=cfg.seed)


def _sb3(factory: Callable[[VecEnv, Settings, SearchSpace], Any]) -> Run:
    def run(env: VecEnv, cfg: Settings, space: SearchSpace, sink: EpisodeSink, callbacks: list[BaseCallback]) -> None:
        model = factory(env, cfg, space)
        # Generous step allowance: the sink's callback stops training after exactly ``sink.limit`` episodes.
        steps = (sink.limit + env.num_envs) * space.n_sites
        model.learn(total_timesteps=steps, callback=[SinkCallback(sink), *callbacks])

    return run


def amc_net() -> dict[str, Any]:
    """AMC's actor/critic sizes, a fresh dict per agent: SB3 writes into policy_kwargs (SAC adds ``use_sde``), so a
    shared dict would leak one agent's settings into the next one built in the same process."""
    return {"net_arch": [300, 300]}


def _noisy(algo_class: type) -> Run:
    """An off-policy agent with AMC's exploration noise (DDPG, TD3)."""
    return _sb3(
        lambda env, cfg, space: algo_class(
            "MlpPolicy", env, action_noise=_noise(cfg), policy_kwargs=amc_net(), **_off_policy_kwargs(cfg, space)
        )
    )


for _name, _class, _description in (
    ("ddpg", DDPG, "DDPG (AMC's agent): random warm-up, then truncated-normal noise decaying per episode"),
    ("td3", TD3, "TD3: DDPG with twin critics and delayed actor updates, same exploration"),
):
    ALGORITHMS.add(Algorithm(_name, _noisy(_class), _description, True, warms_up=True))
ALGORITHMS.add(
    Algorithm(
        "sac",
        _sb3(lambda env, cfg, space: SAC("MlpPolicy", env, policy_kwargs=amc_net(), **_off_policy_kwargs(cfg, space))),
        "SAC: entropy-regularised stochastic policy (explores by itself after the warm-up)",
        True,
        warms_up=True,
    ),
)


def _ppo(env: VecEnv, cfg: Settings, space: SearchSpace) -> PPO:
    n = space.n_sites
    return PPO(
        "MlpPolicy",
        env,
        learning_rate=cfg.learning_rate * 0.3,
        n_steps=4 * n,  # 4 episodes per environment per update
        batch_size=n,
        n_epochs=10,
        gamma=1.0,
        gae_lambda=0.95,
        seed=cfg.seed,
        device="cpu",
        verbose=0,
    )


ALGORITHMS.add(Algorithm("ppo", _sb3(_ppo), "PPO: on-policy, 4 episodes per environment per update", True))


def _baseline_loop(env: VecEnv, sink: EpisodeSink, act: Callable[[np.ndarray], np.ndarray]) -> None:
    obs = env.reset()
    while not sink.done:
        obs, _, dones, infos = env.step(act(obs))
        for done, info in zip(dones, infos, strict=True):
            if done and not sink.done:
                sink.record(info)


def _uniform(env: VecEnv, cfg: Settings, space: SearchSpace, sink: EpisodeSink, callbacks: list[BaseCallback]) -> None:
    ratio = next(iter(solve_uniform_for_macs(space.cost, space.target_macs).values()))
    sink.limit = 1  # every episode would be the same strategy
    _baseline_loop(env, sink, lambda obs: np.full((len(obs), 1), space.uniform_action(ratio), dtype=np.float32))


def _random(env: VecEnv, cfg: Settings, space: SearchSpace, sink: EpisodeSink, callbacks: list[BaseCallback]) -> None:
    rng = np.random.default_rng(cfg.seed)
    _baseline_loop(env, sink, lambda obs: rng.uniform(-1.0, 1.0, (len(obs), 1)).astype(np.float32))


ALGORITHMS.add(Algorithm("uniform", _uniform, "the same ratio at every site (one episode)", False))
ALGORITHMS.add(Algorithm("random", _random, "uniformly random ratios inside the budget walls", False))
