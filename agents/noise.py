"""AMC's exploration: a truncated normal around the policy's action whose width decays once per episode."""

from __future__ import annotations

import numpy as np
from stable_baselines3.common.noise import ActionNoise


class DecayingTruncatedNormal(ActionNoise):
    """Noise ~ N(0, sigma) truncated to [-2 sigma, 2 sigma]; sigma is ``sigma0`` for the warm-up episodes, then
    ``sigma0 * decay ** (episodes after warm-up)``. SB3 calls ``reset()`` at the end of every episode."""

    def __init__(self, sigma0: float, decay: float, warmup_episodes: int, size: int = 1, seed: int = 0) -> None:
        super().__init__()
        self.sigma0, self.decay, self.warmup_episodes, self.size = sigma0, decay, warmup_episodes, size
        self.episode = 0
        self.rng = np.random.default_rng(seed)

    @property
    def sigma(self) -> float:
        return self.sigma0 * self.decay ** max(0, self.episode - self.warmup_episodes)

    def __call__(self) -> np.ndarray:
        z = self.rng.standard_normal(self.size)
        while np.any(bad := np.abs(z) > 2):  # resample the tails: a truncated, not a clipped, normal
            z[bad] = self.rng.standard_normal(int(bad.sum()))
        return (self.sigma * z).astype(np.float32)

    def reset(self) -> None:
        self.episode += 1

    def __repr__(self) -> str:
        return f"DecayingTruncatedNormal(sigma0={self.sigma0}, decay={self.decay}, episode={self.episode})"
