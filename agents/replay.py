"""AMC's credit assignment for the off-policy agents (``--credit episode``): the environment rewards only an
episode's last step, so each transition is stored, once its episode has ended, with that episode's final reward,
and every sampled batch's rewards are taken relative to a moving average of the batch means (AMC's baseline,
``lib/agent.py``: alpha 0.5, "based on batch, so small"; ``amc_search.py`` observes every transition of an
episode with ``final_reward``). With ``--credit last`` (SB3 as is) a transition before the last sees reward 0 and
learns only through the critic's bootstrap."""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from stable_baselines3.common.vec_env import VecNormalize


class EpisodeCreditBuffer(ReplayBuffer):
    baseline_alpha = 0.5

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self.n_envs != 1:
            raise ValueError("--credit episode stores whole episodes of one environment: use --n-envs 1")
        self._episode: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]] = []
        self.baseline: float | None = None

    def add(
        self,
        obs: np.ndarray,
        next_obs: np.ndarray,
        action: np.ndarray,
        reward: np.ndarray,
        done: np.ndarray,
        infos: list[dict[str, Any]],
    ) -> None:
        self._episode.append((np.array(obs), np.array(next_obs), np.array(action), np.array(done), infos))
        if not done[0]:
            return
        final = np.array(reward, dtype=np.float32)  # the episode's only reward: every step of it earned it
        for step_obs, step_next, step_action, step_done, step_infos in self._episode:
            super().add(step_obs, step_next, step_action, final, step_done, step_infos)
        self._episode = []

    def sample(self, batch_size: int, env: VecNormalize | None = None) -> ReplayBufferSamples:
        samples = super().sample(batch_size, env)
        mean = float(samples.rewards.mean())
        self.baseline = mean if self.baseline is None else self.baseline + self.baseline_alpha * (mean - self.baseline)
        return samples._replace(rewards=samples.rewards - self.baseline)
