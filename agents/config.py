"""The search's configuration: dataclass defaults < YAML preset (``--config``) < flags (dynprune's CLI builder)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Literal

from dynprune.base import DEFAULT_R_MAX, ConfigError, check_non_negative, check_target_macs, check_threads, option


def _algorithm_names() -> list[str]:
    from .algorithms import ALGORITHMS  # imported on use: it pulls in stable-baselines3

    return ALGORITHMS.names()


def _reward_names() -> list[str]:
    from .rewards import REWARDS

    return REWARDS.names()


def _action_names() -> list[str]:
    from .actions import ACTIONS

    return ACTIONS.names()


def _criterion_names() -> list[str]:
    from dynprune.prune.criteria import CRITERIA  # imported on use: it pulls in torch

    return CRITERIA.names()


@dataclasses.dataclass
class ScoringOptions:
    """How a strategy is scored: the options agents.search, agents.rank_check and agents.bench share."""

    val_subset: int = option(2000, "validation images scored per strategy (from the training data's val split)")
    calib_batches: int = option(8, "training batches (of 128) that re-estimate BN statistics per strategy")
    finetune_steps: int = option(
        0, "SGD steps (batches of 128, lr 0.01) per new strategy before it is scored: a reward at low targets"
    )
    criterion: str = option(
        "l1-filter",
        "which channels a strategy's ratio removes at each site (a --prune criterion; fine-tune with the same)",
        choices=lambda: _criterion_names(),
    )

    def validate_scoring(self) -> None:
        if self.criterion not in _criterion_names():
            raise ConfigError(f"--criterion got {self.criterion!r}; allowed: {', '.join(_criterion_names())}")
        if self.val_subset < 1 or self.calib_batches < 1:
            raise ConfigError("--val-subset and --calib-batches must be >= 1")
        check_non_negative(self, "finetune_steps")


@dataclasses.dataclass
class ActionOptions:
    """How an action becomes a site's ratio: the options agents.search and agents.rank_check share."""

    actions: str = option(
        "ratio",
        "how an action in [-1, 1] becomes a site's ratio: ratio (AMC: it spans [--r-min, --r-max]) or centred "
        "(0 = the uniform ratio that meets the target over the sites left; random actions perturb uniform pruning)",
        choices=lambda: _action_names(),
    )

    def validate_actions(self) -> None:
        if self.actions not in _action_names():
            raise ConfigError(f"--actions got {self.actions!r}; allowed: {', '.join(_action_names())}")


@dataclasses.dataclass
class SearchConfig(ScoringOptions, ActionOptions):
    """One policy search: an algorithm, a dense checkpoint, a MAC target."""

    algo: str = option(
        "ddpg", "the search algorithm (stable-baselines3 agents and baselines)", choices=lambda: _algorithm_names()
    )
    init: str | None = option(None, "dense checkpoint to prune (e.g. runs/dense/checkpoint.pt); required")
    model: str | None = option(None, "optional check: the model the checkpoint must hold (e.g. resnet20)")
    target_macs: float = option(0.5, "MACs of every strategy / dense MACs (met by construction)")
    episodes: int = option(200, "episodes (strategies tried) of the algorithm")
    warmup_episodes: int | None = option(
        None,
        "off-policy agents: episodes of uniformly random actions before learning (default: min(50, episodes / 4))",
    )
    r_min: float = option(0.0, "smallest pruning ratio of a site")
    r_max: float = option(DEFAULT_R_MAX, "largest pruning ratio of a site")
    reward: str = option("accuracy", "what a strategy scores (agents.rewards)", choices=lambda: _reward_names())
    baselines: str = option(
        "uniform", "comma-separated baselines run after the agent (any --algo that does not learn), or none"
    )
    noise_sigma: float = option(0.5, "agents with action noise: initial exploration noise (action units, [-1, 1])")
    noise_decay: float = option(0.95, "agents with action noise: noise multiplier per episode after the warm-up")
    learning_rate: float = option(1e-3, "agent learning rate (ppo uses 0.3x)")
    credit: Literal["last", "episode"] = option(
        "last",
        "off-policy agents: last (the reward on an episode's last step only, SB3 as is) | episode (AMC's: every "
        "step stored with the episode's final reward, minus a moving-average baseline)",
    )
    n_envs: int = option(1, "parallel environments (SubprocVecEnv when > 1), each scoring strategies")
    seed: int = option(0, "seed of the agent, its exploration and the random baseline")
    threads: int = option(0, "torch CPU threads in total (0 = torch's default); split across --n-envs")
    data_dir: str | None = option(None, "folder holding the data sets (else the checkpoint's, $DYNPRUNE_DATA)")
    out: str | None = option(None, "search folder (default runs/search-<algo>): policy.json, plots, cache")
    resume: bool = option(False, "continue the search in --out: it replays from its seed, cached strategies are free")
    wandb: Literal["offline", "online", "disabled"] = option("offline", "wandb mode; offline needs no account")
    wandb_project: str = option("dynprune", "wandb project name")
    progress: bool = option(True, "progress bar (shown only when stderr is a terminal)")
    dry_run: bool = option(False, "check the settings, say what would run, and exit (reads no checkpoint or data)")

    @property
    def run_dir(self) -> Path:
        return Path(self.out or f"runs/search-{self.algo}")

    @property
    def baseline_names(self) -> list[str]:
        names = [b.strip() for b in self.baselines.split(",") if b.strip() and b.strip() != "none"]
        return [b for b in names if b != self.algo]

    def validate(self) -> None:
        from .algorithms import ALGORITHMS
        from .rewards import REWARDS

        if self.algo not in ALGORITHMS:
            raise ConfigError(f"--algo got {self.algo!r}; allowed: {', '.join(ALGORITHMS.names())}")
        if self.reward not in REWARDS:
            raise ConfigError(f"--reward got {self.reward!r}; allowed: {', '.join(REWARDS.names())}")
        baselines = [name for name, algorithm in ALGORITHMS.items() if not algorithm.learns]
        for b in self.baseline_names:
            if b not in baselines:
                raise ConfigError(f"--baselines got {b!r}; allowed: {', '.join(baselines)}, none")
        if self.init is None:
            raise ConfigError("--init is required: the dense checkpoint to prune (e.g. runs/dense/checkpoint.pt)")
        check_target_macs(self.target_macs)
        check_threads(self.threads)
        if not 0 <= self.r_min < self.r_max < 1:
            raise ConfigError(f"need 0 <= --r-min < --r-max < 1, got {self.r_min} and {self.r_max}")
        if self.episodes < 1:
            raise ConfigError(f"--episodes must be >= 1, got {self.episodes}")
        if self.warmup_episodes is None:  # scales with a short search; an explicit value is checked as given
            self.warmup_episodes = min(50, self.episodes // 4)
        if not 0 <= self.warmup_episodes < self.episodes and ALGORITHMS[self.algo].warms_up:
            raise ConfigError(
                f"--warmup-episodes must be in [0, --episodes={self.episodes}), got {self.warmup_episodes}"
            )
        if self.n_envs < 1:
            raise ConfigError(f"--n-envs must be >= 1, got {self.n_envs}")
        if self.credit == "episode" and not ALGORITHMS[self.algo].warms_up:
            off_policy = ", ".join(n for n, a in ALGORITHMS.items() if a.warms_up)
            raise ConfigError(f"--credit episode is for the off-policy agents ({off_policy}), not --algo {self.algo}")
        if self.credit == "episode" and self.n_envs > 1:
            raise ConfigError("--credit episode stores whole episodes of one environment: --n-envs must be 1")
        self.validate_scoring()
        self.validate_actions()
