"""python -m agents.rank_check --init runs/dense/checkpoint.pt: does the search's reward rank strategies the way
fine-tuning does?

Per MAC target: the uniform strategy and ``--strategies - 1`` random budget-meeting ones (the search's own walls,
drawn as its warm-up draws them) are scored by the reward, then each is fine-tuned (``python -m dynprune.train
--prune l1-filter --hard --ratios``, the comparison preset's fine-tune budget by default) and the Spearman rank
correlation of reward and post-fine-tune validation top-1 is reported (1: the reward orders the strategies
exactly as their fine-tuned accuracy; 0: no better than chance). Writes ``rank_check.json``, one scatter plot per
target (``rank-<target>.png``) and the fine-tunes' run folders; a rerun skips finished fine-tunes.

The fine-tuned accuracy is itself noisy (a fine-tune seed, 2,000 validation images), so the check also reports
the correlation with test top-1 (10,000 images here; a measurement, no decision is taken on it) and, with
``--finetune-seeds 2`` or more, with the mean over seeds and how well the seeds agree with each other: a reward
cannot be expected to rank strategies better than a second fine-tune of the same strategies does.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dynprune.base import (
    DEFAULT_R_MAX,
    ConfigError,
    check_positive,
    check_target_macs,
    check_threads,
    option,
)
from dynprune.checkpoints import load_checkpoint, read_result, write_json
from dynprune.cli import run_command
from dynprune.config import parse_cli
from dynprune.orphans import die_with_parent
from dynprune.plots import pyplot
from dynprune.prune.ratios import solve_uniform_for_macs
from dynprune.runlock import locked_run_folder

from .config import ActionOptions, ScoringOptions
from .env import ChannelPruningEnv
from .evaluate import EvalSettings, SearchError, StrategyEvaluator
from .rewards import REWARDS

PROG = "python -m agents.rank_check"
MAX_DRAWS = 20  # random draws per strategy asked for, before the check goes on with the distinct ones it has


@dataclass
class RankCheckConfig(ScoringOptions, ActionOptions):
    """python -m agents.rank_check: the dense checkpoint, the strategies and their fine-tune."""

    init: str | None = option(None, "dense checkpoint; required")
    out: str = option("runs/rank_check", "output folder")
    targets: list[float] = option([0.1, 0.25], "MAC targets (fraction of the dense model's MACs)")
    strategies: int = option(10, "strategies per target: the uniform one and random budget-meeting ones")
    reward: str = option("accuracy", "the reward under test (agents.rewards)", choices=lambda: REWARDS.names())
    r_max: float = option(DEFAULT_R_MAX, "largest pruning ratio of a site (as agents.search)")
    epochs: int = option(6, "fine-tune epochs per strategy")
    lr: float = option(0.05, "fine-tune peak learning rate")
    seed: int = option(0, "seed of the random strategies and of every strategy's first fine-tune")
    finetune_seeds: int = option(
        1, "fine-tunes per strategy (seeds --seed, --seed + 1, ...); >= 2 reports their agreement"
    )
    workers: int = option(2, "fine-tunes run side by side, one thread each")
    threads: int = option(1, "torch threads of the reward's evaluations")

    def validate(self) -> None:
        if self.init is None:
            raise ConfigError("--init is required: the dense checkpoint (e.g. runs/dense/checkpoint.pt)")
        for target in self.targets:
            check_target_macs(target)
        if self.strategies < 3:
            raise ConfigError(
                f"--strategies must be >= 3 (a rank correlation of fewer is noise), got {self.strategies}"
            )
        if REWARDS.get(self.reward) is not None and REWARDS[self.reward].needs_latency:
            raise ConfigError(f"--reward {self.reward} times every strategy; allowed here: accuracy, log-macs")
        check_positive(self, "epochs", "workers", "finetune_seeds")
        self.validate_scoring()
        self.validate_actions()
        check_threads(self.threads)


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (ties get their mean rank); nan where either side is constant."""
    rx, ry = _ranks(np.asarray(x, dtype=float)), _ranks(np.asarray(y, dtype=float))
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(values: np.ndarray) -> np.ndarray:
    order = values.argsort(kind="stable")
    ranks = np.empty(len(values))
    ranks[order] = np.arange(len(values), dtype=float)
    for value in np.unique(values):  # ties: each gets the mean of the ranks they share
        tied = values == value
        ranks[tied] = ranks[tied].mean()
    return ranks


def scored_strategies(env: ChannelPruningEnv, cfg: RankCheckConfig, target: float) -> list[dict[str, Any]]:
    """The uniform strategy, then distinct random ones as the search's warm-up draws them, each with its reward."""
    evaluator, reward = env.evaluator, REWARDS[cfg.reward]
    uniform = solve_uniform_for_macs(evaluator.cost, target)
    val_acc = evaluator.accuracy(uniform)
    macs = float(evaluator.cost.macs({s: 1.0 - r for s, r in uniform.items()}))
    rows = [{"kind": "uniform", "ratios": uniform, "val_acc": val_acc, "reward": reward(val_acc, macs)}]
    seen = {strategy_name(evaluator, uniform)}
    rng = np.random.default_rng(cfg.seed)
    for _ in range(MAX_DRAWS * cfg.strategies):
        if len(rows) == cfg.strategies:
            break
        env.reset()
        info: dict[str, Any] = {}
        for _ in env.order:
            _, _, _, _, info = env.step(np.array([rng.uniform(-1, 1)], dtype=np.float32))
        if strategy_name(evaluator, info["ratios"]) not in seen:  # at a low target the walls repeat strategies
            seen.add(strategy_name(evaluator, info["ratios"]))
            rows.append({"kind": "random", **{k: info[k] for k in ("ratios", "val_acc", "reward")}})
    if len(rows) < 3:
        raise SearchError(
            f"{target:g}: only {len(rows)} distinct strategies inside the walls; raise --r-max or the target"
        )
    if len(rows) < cfg.strategies:
        print(f"{target:g}: only {len(rows)} distinct strategies in {MAX_DRAWS * cfg.strategies} draws", flush=True)
    return rows


def strategy_name(evaluator: StrategyEvaluator, ratios: dict[str, float]) -> str:
    """A short name of the kept channel counts: one fine-tune folder per distinct strategy."""
    counts = evaluator.kept_channels(ratios)
    return hashlib.sha256(",".join(f"{s}={counts[s]}" for s in sorted(counts)).encode()).hexdigest()[:10]


def seed_folder(cfg: RankCheckConfig, folder: Path, seed: int) -> Path:
    """The strategy's folder holds its first fine-tune (as before ``--finetune-seeds``); further seeds in s<seed>/."""
    return folder if seed == cfg.seed else folder / f"s{seed}"


def fine_tune(
    cfg: RankCheckConfig, data: dict[str, Any], folder: Path, row: dict[str, Any], seed: int
) -> dict[str, Any]:
    """The strategy fine-tuned as ``rl``'s comparison cell does (l1-filter, hard) with ``seed``; its result.json."""
    where = seed_folder(cfg, folder, seed)
    done = read_result(where / "result.json")
    if done is not None:
        if (done.get("ratios"), done.get("seed")) != (row["ratios"], seed):  # another seed's or walls' folder
            raise SearchError(f"{where}: fine-tuned for another strategy or seed than this run's; use another --out")
        return done
    where.mkdir(parents=True, exist_ok=True)
    write_json(folder / "policy.json", {"ratios": row["ratios"]})
    args = [sys.executable, "-m", "dynprune.train", "--init", cfg.init, "--prune", cfg.criterion, "--hard"]
    args += ["--ratios", str(folder / "policy.json"), "--epochs", str(cfg.epochs), "--lr", str(cfg.lr)]
    args += ["--seed", str(seed), "--threads", "1", "--no-latency", "--no-progress", "--wandb", "disabled"]
    args += [*(f"--{k.replace('_', '-')}={v}" for k, v in data.items()), "--out", str(where / "run")]
    with (where / "train.log").open("w") as log:
        proc = subprocess.run(args, stdout=log, stderr=subprocess.STDOUT, preexec_fn=die_with_parent, check=False)
    result = read_result(where / "run" / "result.json")
    if proc.returncode != 0 or result is None:
        raise SearchError(f"the fine-tune of {where} failed (exit {proc.returncode}); see {where}/train.log")
    write_json(where / "result.json", result)
    return result


def add_outcomes(rows: list[dict[str, Any]], results: list[list[dict[str, Any]]]) -> None:
    """Each strategy's fine-tuned accuracies per seed and their means (what the correlations are taken with)."""
    for row, per_seed in zip(rows, results, strict=True):
        row["tuned_val_top1_per_seed"] = [r["val_top1"] for r in per_seed]
        row["tuned_top1_per_seed"] = [r["top1"] for r in per_seed]
        row["tuned_val_top1"] = float(np.mean(row["tuned_val_top1_per_seed"]))
        row["tuned_top1"] = float(np.mean(row["tuned_top1_per_seed"]))
        row["macs_ratio"] = per_seed[0]["macs_ratio"]
        row["params"] = per_seed[0].get("params")  # at one MAC budget, strategies differ in parameters kept


def correlations(rows: list[dict[str, Any]]) -> dict[str, float | None]:
    """The reward against the fine-tuned outcome (validation and test top-1, means over seeds); how well the
    validation and test outcomes agree; and, with two seeds or more, how well the seeds agree (the mean over seed
    pairs): a ceiling for any reward, since a reward cannot predict a fine-tune's seed."""
    reward = [r["reward"] for r in rows]
    val, test = [r["tuned_val_top1"] for r in rows], [r["tuned_top1"] for r in rows]
    seeds = len(rows[0]["tuned_val_top1_per_seed"])

    def agreement(field: str) -> float | None:
        if seeds < 2:
            return None
        pairs = [(a, b) for a in range(seeds) for b in range(a + 1, seeds)]
        return float(np.mean([spearman([r[field][a] for r in rows], [r[field][b] for r in rows]) for a, b in pairs]))

    return {
        "spearman": spearman(reward, val),
        "spearman_test": spearman(reward, test),
        "val_test_agreement": spearman(val, test),
        "seed_agreement": agreement("tuned_val_top1_per_seed"),
        "seed_agreement_test": agreement("tuned_top1_per_seed"),
    }


def check_target(env: ChannelPruningEnv, cfg: RankCheckConfig, target: float, out: Path) -> dict[str, Any]:
    rows = scored_strategies(env, cfg, target)
    dense = load_checkpoint(cfg.init).get("config") or {}
    same = ("model", "width", "dataset", "data_dir", "image_size", "train_subset", "val_size")  # as the reward's
    data = {k: dense[k] for k in same if dense.get(k) is not None}
    folders = [out / f"t{target:g}" / f"{row['kind']}-{strategy_name(env.evaluator, row['ratios'])}" for row in rows]
    seeds = range(cfg.seed, cfg.seed + cfg.finetune_seeds)
    jobs = [(folder, row, seed) for folder, row in zip(folders, rows, strict=True) for seed in seeds]
    with ThreadPoolExecutor(cfg.workers) as pool:
        results = list(pool.map(lambda job: fine_tune(cfg, data, *job), jobs))
    add_outcomes(rows, [results[i : i + len(seeds)] for i in range(0, len(results), len(seeds))])
    check = {"target": target, **correlations(rows)}
    _plot(rows, check["spearman"], target, out / f"rank-{target:g}.png", cfg.reward)
    return {**check, "finetune_seeds": len(seeds), "strategies": rows}


def _plot(rows: list[dict[str, Any]], rho: float, target: float, path: Path, reward: str) -> None:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4.5))
    for kind, marker in (("uniform", "*"), ("random", "o")):
        mine = [r for r in rows if r["kind"] == kind]
        ax.scatter([r["reward"] for r in mine], [r["tuned_val_top1"] for r in mine], marker=marker, s=60, label=kind)
    ax.set_xlabel(f"search reward ({reward}, before fine-tuning)")
    ax.set_ylabel("validation top-1 after fine-tuning (%)")
    ax.set_title(f"{target:g} of the dense MACs: Spearman {rho:.2f}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def format_table(checks: list[dict[str, Any]]) -> str:
    """Per target: the reward's Spearman with validation and test top-1 after fine-tuning, how well the seeds
    agree (with ``--finetune-seeds`` >= 2), and the best fine-tuned accuracies."""

    def cell(value: float | None) -> str:
        return "-" if value is None else f"{value:.2f}"

    head = ("target", "strategies", "Spearman val", "Spearman test", "seeds agree val/test", "uniform", "best random")
    lines = [" | ".join(head)]
    for c in checks:
        rows = c["strategies"]
        best = max(r["tuned_val_top1"] for r in rows if r["kind"] == "random")
        agree = f"{cell(c['seed_agreement'])} / {cell(c['seed_agreement_test'])}"
        cells = (f"{c['target']:g}", str(len(rows)), cell(c["spearman"]), cell(c["spearman_test"]), agree)
        lines.append(" | ".join([*cells, f"{rows[0]['tuned_val_top1']:.2f}", f"{best:.2f}"]))
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    cfg = parse_cli(RankCheckConfig, argv, PROG, __doc__)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)

    def work() -> int:
        with locked_run_folder(out):
            settings = EvalSettings.of(cfg)
            evaluator = StrategyEvaluator(cfg.init, settings=settings)
            checks = []
            for target in cfg.targets:
                env = ChannelPruningEnv(
                    evaluator=evaluator, target_macs=target, r_max=cfg.r_max, reward=cfg.reward, actions=cfg.actions
                )
                checks.append(check_target(env, cfg, target, out))
                rho, test, rows = (checks[-1][k] for k in ("spearman", "spearman_test", "strategies"))
                print(f"{target:g}: Spearman {rho:.2f} (test {test:.2f}) over {len(rows)} strategies", flush=True)
            scoring = {"init": cfg.init, "reward": cfg.reward, "settings": settings.key(), "criterion": cfg.criterion}
            scoring |= {"r_max": cfg.r_max, "actions": cfg.actions}
            write_json(out / "rank_check.json", {"config": scoring, "checks": checks})
        print(format_table(checks))
        print(f"-> {out}/rank_check.json, {out}/rank-<target>.png")
        return 0

    interrupted = f"finished fine-tunes are kept in {out} (a rerun skips them)"
    return run_command(PROG, work, interrupted, user_errors=(SearchError, OSError))


if __name__ == "__main__":
    sys.exit(main())
