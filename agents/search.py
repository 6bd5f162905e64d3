"""python -m agents.search: find a pruning ratio per channel site with an RL agent (or a baseline).

    python -m agents.search --algo ddpg --init runs/dense/checkpoint.pt --target-macs 0.5 --episodes 200 \\
        --out runs/search-ddpg

writes ``policy.json`` (what ``python -m dynprune.train --prune l1-filter --ratios policy.json`` consumes),
``policy-<baseline>.json``, ``ratios.png``, ``best_reward.png``, ``episodes-<algo>.jsonl``, ``summary.json`` and
the evaluation cache ``cache.jsonl`` (which makes ``--resume`` and repeated strategies free).
"""

from __future__ import annotations

import functools
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv

from dynprune.checkpoints import write_json
from dynprune.cli import run_command
from dynprune.config import ConfigError, parse_cli, save_yaml, to_dict
from dynprune.outputs import check_folder, prepare_folder
from dynprune.runlock import locked_run_folder
from dynprune.track import Tracker

from .algorithms import ALGORITHMS, SearchSpace
from .cache import EvaluationCache
from .config import SearchConfig
from .env import ChannelPruningEnv
from .evaluate import EvalSettings, SearchError, StrategyEvaluator
from .plots import plot_best_reward, plot_ratios
from .record import EpisodeRecorder
from .rewards import LatencyTable

PROG = "python -m agents.search"
POLICY = "policy.json"
CACHE = "cache.jsonl"


def _worker_env(threads: int, **kwargs: Any) -> ChannelPruningEnv:
    """Runs in a SubprocVecEnv worker: its own evaluator (data, model) and its share of the CPU threads."""
    torch.set_num_threads(threads)
    return ChannelPruningEnv(**kwargs)


def make_envs(cfg: SearchConfig, evaluator: StrategyEvaluator, cache: EvaluationCache, out: Path) -> VecEnv:
    common = {
        "target_macs": cfg.target_macs,
        "r_min": cfg.r_min,
        "r_max": cfg.r_max,
        "reward": cfg.reward,
        "actions": cfg.actions,
        "known_scores": dict(cache.scores),
    }
    if cfg.n_envs == 1:
        latency = LatencyTable(out / "latency.json")
        return DummyVecEnv([lambda: ChannelPruningEnv(evaluator=evaluator, latency=latency, **common)])
    threads = max(1, (cfg.threads or torch.get_num_threads()) // cfg.n_envs)
    factory: Callable[[], ChannelPruningEnv] = functools.partial(
        _worker_env,
        threads,
        checkpoint=cfg.init,
        data_dir=cfg.data_dir,
        settings=evaluator.settings,
        **common,
    )
    return SubprocVecEnv([factory] * cfg.n_envs)


def _policy(cfg: SearchConfig, name: str, recorder: EpisodeRecorder, evaluator: StrategyEvaluator, seconds: float):
    best = recorder.best
    return {
        "ratios": best["ratios"],
        "macs": best["macs"],
        "macs_ratio": best["macs_ratio"],
        "val_acc": best["val_acc"],
        "reward": best["reward"],
        "reward_kind": cfg.reward,
        "algorithm": name,
        "seed": cfg.seed,
        "episodes": len(recorder.history),
        "best_episode": best["episode"],
        # where the best strategy came from: an agent that learns finds it after its random warm-up
        "best_found_in": _found_in(name, best["episode"], cfg.warmup_episodes or 0),
        "new_evaluations": sum(not row["cached"] for row in recorder.history),
        "search_seconds": seconds,
        "target_macs": cfg.target_macs,
        "checkpoint": cfg.init,
        "checkpoint_hash": evaluator.checkpoint_hash,
        "model": evaluator.arch["model"],
        "dataset": evaluator.dataset,
        "val_subset": cfg.val_subset,
    }


def _found_in(name: str, episode: int, warmup_episodes: int) -> str:
    """'warm-up' (the agent's random actions), 'policy' (its own actions) or 'baseline' (no agent)."""
    algorithm = ALGORITHMS[name]
    if not algorithm.learns:
        return "baseline"
    return "warm-up" if algorithm.warms_up and episode <= warmup_episodes else "policy"


def run_search(cfg: SearchConfig) -> dict[str, dict[str, Any]]:
    """Run the algorithm then its baselines; write the folder; return {algorithm: policy summary}."""
    out = cfg.run_dir
    check_folder(out)  # a file in the way is one line now, not a traceback after loading the model and data
    with locked_run_folder(out):  # one search per folder: a second one (or a killed comparison's) is refused
        return _search(cfg, out)


def _search(cfg: SearchConfig, out: Path) -> dict[str, dict[str, Any]]:
    if (out / CACHE).exists() and not cfg.resume:
        raise ConfigError(f"--out {out} already holds a search; pass --resume to continue it or choose another --out")
    if cfg.resume and not (out / CACHE).exists():
        raise ConfigError(f"--resume: no {CACHE} in {out} to resume from")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    settings = EvalSettings.of(cfg)
    evaluator = StrategyEvaluator(cfg.init, cfg.data_dir, settings)
    if cfg.model and evaluator.arch["model"] != cfg.model:
        raise SearchError(f"--model {cfg.model}: the checkpoint {cfg.init} holds a {evaluator.arch['model']}")
    space = SearchSpace(evaluator.cost, len(evaluator.sites), cfg.target_macs, cfg.r_min, cfg.r_max, cfg.actions)
    prepare_folder(out)
    save_yaml(cfg, out / "search.yaml")
    cache = EvaluationCache(out / CACHE)
    if cfg.resume:
        print(f"resuming {out}: {len(cache)} cached strategies replay for free", flush=True)
    tracker = Tracker(cfg.wandb, cfg.wandb_project, out, to_dict(cfg))
    summaries: dict[str, dict[str, Any]] = {}
    histories: dict[str, list[dict[str, Any]]] = {}
    try:
        for name in [cfg.algo, *cfg.baseline_names]:
            algo = ALGORITHMS[name]
            env = make_envs(cfg, evaluator, cache, out)
            env.seed(cfg.seed)
            recorder = EpisodeRecorder(name, cfg.episodes, cache, tracker, out / f"episodes-{name}.jsonl", cfg.progress)
            callbacks = _wandb_callbacks(tracker) if algo.learns else []
            started = time.perf_counter()
            try:
                algo.run(env, cfg, space, recorder, callbacks)
            finally:
                env.close()
            summaries[name] = _policy(cfg, name, recorder, evaluator, time.perf_counter() - started)
            histories[name] = recorder.history
            write_json(out / (POLICY if name == cfg.algo else f"policy-{name}.json"), summaries[name])
        _report(cfg, out, summaries, histories, tracker)
    finally:
        tracker.finish()
    return summaries


def _wandb_callbacks(tracker: Tracker) -> list:
    if not tracker.enabled:
        return []
    from wandb.integration.sb3 import WandbCallback

    return [WandbCallback(verbose=0)]


def _report(cfg: SearchConfig, out: Path, summaries: dict, histories: dict, tracker: Tracker) -> None:
    title = f"{summaries[cfg.algo]['model']} @ {cfg.target_macs:.2f} MACs, reward {cfg.reward}"
    plot_ratios({n: s["ratios"] for n, s in summaries.items()}, out / "ratios.png", f"best strategies: {title}")
    plot_best_reward(histories, out / "best_reward.png", title)
    write_json(out / "summary.json", summaries)
    tracker.summary({f"{n}/best_{k}": s[k] for n, s in summaries.items() for k in ("reward", "val_acc", "macs_ratio")})
    if tracker.enabled:
        import wandb

        tracker.log({"plots/ratios": wandb.Image(str(out / "ratios.png"))})
        tracker.log({"plots/best_reward": wandb.Image(str(out / "best_reward.png"))})
        rows = [[site, *(s["ratios"][site] for s in summaries.values())] for site in summaries[cfg.algo]["ratios"]]
        tracker.table("best_ratios", ["site", *summaries], rows)


def format_summary(summaries: dict[str, dict[str, Any]]) -> str:
    head = (
        f"{'algorithm':<10}{'episodes':>9}{'new evals':>10}{'best val top1':>14}{'MACs':>7}{'reward':>9}{'time s':>8}"
        f"  best found at"
    )
    lines = [head, "-" * len(head)]
    for name, s in summaries.items():
        found = f"episode {s['best_episode']} ({s.get('best_found_in', '?')})"
        lines.append(
            f"{name:<10}{s['episodes']:>9}{s['new_evaluations']:>10}{s['val_acc']:>13.2f}%{s['macs_ratio']:>7.3f}"
            f"{s['reward']:>9.4f}{s['search_seconds']:>8.1f}  {found}"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_cli(SearchConfig, argv, PROG, "Search per-site pruning ratios with an RL agent or a baseline.")
    if cfg.dry_run:  # parse_cli has checked every setting
        runs = ", then ".join([cfg.algo, *cfg.baseline_names])
        print(f"settings valid: {runs}, {cfg.episodes} episodes each at {cfg.target_macs} of the dense MACs")
        print(f"-> {cfg.run_dir} (nothing read or written)")
        return 0

    def work() -> int:
        summaries = run_search(cfg)
        print(format_summary(summaries))
        policy = cfg.run_dir / POLICY
        print(f"-> {policy} (use: python -m dynprune.train --prune {cfg.criterion} --ratios {policy})")
        return 0

    interrupted = f"strategies scored so far are in {cfg.run_dir}/{CACHE} (continue with --resume)"
    return run_command(PROG, work, interrupted, user_errors=(SearchError,))


if __name__ == "__main__":
    sys.exit(main())
