"""RL policy search: environment, budget walls, evaluation, agents, cache/resume, and the CLI end to end."""

from __future__ import annotations

import copy
import json
import math
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from helpers import TINY_RESNET, run_module, tiny_config
from stable_baselines3.common.env_checker import check_env

from agents import ENV_ID
from agents.actions import ACTIONS, centred_ratio
from agents.algorithms import ALGORITHMS
from agents.config import SearchConfig
from agents.env import ChannelPruningEnv
from agents.evaluate import EvalSettings, SearchError, StrategyEvaluator
from agents.noise import DecayingTruncatedNormal
from agents.rewards import REWARDS
from agents.search import run_search
from dynprune.config import ConfigError, build
from dynprune.prune import StaticPruneMethod
from dynprune.prune.criteria import CRITERIA
from dynprune.prune.ratios import solve_uniform_for_macs
from dynprune.runner import run_training

SMALL = EvalSettings(val_subset=300, calib_batches=2, calib_batch_size=64)
SEARCH = dict(episodes=6, warmup_episodes=3, val_subset=300, calib_batches=2, wandb="disabled", threads=1)


@pytest.fixture(scope="module")
def dense_ckpt(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("agents") / "dense"
    run_training(tiny_config(out, **TINY_RESNET, epochs=2, train_subset=1280))
    return out / "checkpoint.pt"


@pytest.fixture(scope="module")
def evaluator(dense_ckpt) -> StrategyEvaluator:
    return StrategyEvaluator(dense_ckpt, settings=SMALL)


def search_config(out: Path, init: Path, **kw) -> SearchConfig:
    return build(SearchConfig, {**SEARCH, "init": str(init), "out": str(out), **kw})


def test_registered_env_passes_sb3_env_checker(dense_ckpt):
    env = gym.make(ENV_ID, checkpoint=str(dense_ckpt), target_macs=0.5, settings=SMALL)
    check_env(env.unwrapped)
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == env.observation_space.shape
    assert env.observation_space.contains(obs)


@pytest.mark.parametrize(
    "make",
    [
        "import agents; env = gym.make(agents.ENV_ID, checkpoint=CKPT, target_macs=0.5, settings=S)",
        'env = gym.make("agents:dynprune/ChannelPruning-v0", checkpoint=CKPT, target_macs=0.5, settings=S)',
    ],
    ids=["import-agents", "module-prefix"],
)
def test_env_is_made_the_way_the_readme_says(dense_ckpt, make):
    # after `import agents`, or with no import at all: the "agents:" prefix makes gymnasium import the package
    small = "S = {'val_subset': 300, 'calib_batches': 2}"  # plain values, as a config file would give them
    code = f"import gymnasium as gym; CKPT = {str(dense_ckpt)!r}; {small}; {make}; obs, _ = env.reset(seed=0)"
    code += "; print(obs.shape)"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip() == "(11,)"


@pytest.mark.parametrize("actions", ACTIONS.names())
@pytest.mark.parametrize("target", [0.3, 0.5, 0.8])
def test_every_episode_meets_the_target_whatever_the_actions(evaluator, target, actions):
    env = ChannelPruningEnv(evaluator=evaluator, target_macs=target, r_max=0.9, actions=actions)
    rng = np.random.default_rng(0)
    step_size = max(evaluator.cost.site_macs(s.name) for s in evaluator.sites) / evaluator.cost.dense_macs
    for policy in ("random", "all-min", "all-max"):
        env.reset()
        done = False
        while not done:
            a = {"random": rng.uniform(-1, 1), "all-min": -1.0, "all-max": 1.0}[policy]
            _, reward, done, _, info = env.step(np.array([a], dtype=np.float32))
        assert info["macs_ratio"] <= target + 1e-9, policy
        # the lower wall: at most the last site's channel rounding under the target, never a wasted budget
        assert info["macs_ratio"] >= target - step_size / 4, policy
        assert reward == pytest.approx(info["val_acc"] / 100)


def test_centred_actions_scale_the_kept_share_of_the_uniform_track(evaluator):
    assert centred_ratio(0.0, 0.0, 0.9, track=0.6) == pytest.approx(0.6)
    assert centred_ratio(1.0, 0.0, 0.9, track=0.6) == pytest.approx(0.8)  # half the track's kept share (0.4)
    assert centred_ratio(-1.0, 0.0, 0.9, track=0.6) == pytest.approx(0.2)  # twice it
    assert centred_ratio(1.0, 0.0, 0.9, track=0.85) == pytest.approx(0.9)  # never past the wall's r_max
    assert centred_ratio(-1.0, 0.3, 0.9, track=0.6) == pytest.approx(0.3)  # nor under r_min
    ratio = next(iter(solve_uniform_for_macs(evaluator.cost, 0.4).values()))
    env = ChannelPruningEnv(evaluator=evaluator, target_macs=0.4, r_max=0.9, actions="centred")
    assert env.wall.track({}, 0) == pytest.approx(ratio, abs=0.02)  # nothing decided: the uniform ratio
    env.reset()
    for _ in env.order:  # action 0 at every site: uniform pruning, up to one channel of rounding per site
        _, _, done, _, info = env.step(np.zeros(1, dtype=np.float32))
    uniform = evaluator.kept_channels(dict.fromkeys(env.order, ratio))
    assert done and all(abs(n - uniform[s]) <= 1 for s, n in evaluator.kept_channels(info["ratios"]).items())
    assert ACTIONS["centred"].uniform(ratio, 0.0, 0.9) == 0.0  # the uniform baseline's action
    assert ACTIONS["ratio"].uniform(0.45, 0.0, 0.9) == pytest.approx(0.0)


def test_the_uniform_baseline_under_centred_actions_is_uniform_pruning(tmp_path, dense_ckpt, evaluator):
    cfg = search_config(tmp_path, dense_ckpt, algo="uniform", baselines="none", actions="centred")
    policy = run_search(cfg)["uniform"]
    uniform = evaluator.kept_channels(solve_uniform_for_macs(evaluator.cost, cfg.target_macs))
    assert all(abs(n - uniform[s]) <= 1 for s, n in evaluator.kept_channels(policy["ratios"]).items())
    assert policy["macs_ratio"] <= cfg.target_macs + 1e-9


def test_unreachable_target_is_refused_before_any_search(evaluator):
    with pytest.raises(SearchError, match="out of reach.*raise --target-macs"):
        ChannelPruningEnv(evaluator=evaluator, target_macs=0.02, r_max=0.5)


def test_evaluated_model_is_the_one_l1_filter_training_starts_from(evaluator):
    """The search scores exactly the channels that ``--prune l1-filter --ratios policy.json`` keeps."""
    ratios = {s.name: r for s, r in zip(evaluator.sites, np.linspace(0.1, 0.7, len(evaluator.sites)), strict=True)}
    sliced = evaluator.pruned_model(ratios).eval()
    masked = copy.deepcopy(evaluator.model)
    method = StaticPruneMethod("l1-filter", ratios=ratios)
    masked = method.prepare(masked, evaluator.input_shape).eval()
    x = evaluator.val[0][0][:16]
    with torch.no_grad():
        torch.testing.assert_close(sliced(x), masked(x), atol=1e-4, rtol=1e-4)
    assert sum(p.numel() for p in sliced.parameters()) < sum(p.numel() for p in evaluator.model.parameters())


def test_adaptive_bn_restores_a_pruned_model(evaluator):
    ratios = dict.fromkeys(evaluator.cost.site_widths, 0.5)
    model = evaluator.pruned_model(ratios)
    with torch.no_grad():
        stale = sum(int((model(x).argmax(1) == y).sum()) for x, y in evaluator.val) / SMALL.val_subset * 100
    assert evaluator.accuracy(ratios) > stale


def test_noise_is_truncated_and_decays_after_warmup():
    noise = DecayingTruncatedNormal(sigma0=0.5, decay=0.9, warmup_episodes=2, seed=0)
    samples = np.concatenate([noise() for _ in range(2000)])
    assert np.abs(samples).max() <= 1.0 + 1e-6 and samples.std() > 0.3
    for _ in range(2):
        noise.reset()
    assert noise.sigma == pytest.approx(0.5)
    for _ in range(3):
        noise.reset()
    assert noise.sigma == pytest.approx(0.5 * 0.9**3)


@pytest.mark.parametrize("algo", ["ddpg", "ppo"])
def test_seeded_search_is_reproducible_and_resumes_from_its_cache(tmp_path, dense_ckpt, algo):
    first = run_search(search_config(tmp_path / "a", dense_ckpt, algo=algo, baselines="none"))[algo]
    second = run_search(search_config(tmp_path / "b", dense_ckpt, algo=algo, baselines="none"))[algo]
    assert first["ratios"] == second["ratios"] and first["val_acc"] == second["val_acc"]
    assert first["new_evaluations"] >= 2
    again = run_search(search_config(tmp_path / "a", dense_ckpt, algo=algo, baselines="none", resume=True))[algo]
    assert again["new_evaluations"] == 0  # the replay is answered by the cache
    assert again["ratios"] == first["ratios"]
    cache_lines = (tmp_path / "a" / "cache.jsonl").read_text().splitlines()
    assert len(cache_lines) == first["new_evaluations"]


@pytest.mark.parametrize("algo", ALGORITHMS.names())
def test_every_search_algorithm_finds_a_policy_inside_the_budget(tmp_path, dense_ckpt, algo):
    episodes = 4 if algo == "ppo" else 3
    cfg = search_config(tmp_path, dense_ckpt, algo=algo, baselines="none", episodes=episodes, warmup_episodes=1)
    policy = run_search(cfg)[algo]
    assert 0.5 - 0.05 <= policy["macs_ratio"] <= 0.5 + 1e-9
    assert 0 < policy["val_acc"] <= 100 and policy["episodes"] >= 1
    assert set(policy["ratios"]) == {s.name for s in StrategyEvaluator(dense_ckpt, settings=SMALL).sites}


@pytest.mark.parametrize("reward", REWARDS.names())
def test_every_reward_scores_the_searched_strategies(tmp_path, dense_ckpt, reward):
    cfg = search_config(tmp_path, dense_ckpt, algo="random", baselines="none", episodes=2, reward=reward)
    policy = run_search(cfg)["random"]
    assert policy["reward_kind"] == reward and math.isfinite(policy["reward"])
    if reward == "accuracy":
        assert policy["reward"] == pytest.approx(policy["val_acc"] / 100)
    if reward == "log-macs":
        assert policy["reward"] == pytest.approx(-(1 - policy["val_acc"] / 100) * math.log(policy["macs"]))


@pytest.mark.slow
def test_search_cli_writes_policy_that_training_consumes(tmp_path, dense_ckpt):
    out = tmp_path / "search"
    proc = run_module(
        "agents.search",
        *("--algo", "td3", "--init", str(dense_ckpt), "--target-macs", "0.5", "--episodes", "5"),
        *("--warmup-episodes", "2", "--val-subset", "300", "--calib-batches", "2", "--n-envs", "2"),
        *("--baselines", "uniform,random", "--out", str(out), "--wandb", "disabled", "--threads", "2"),
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "td3" in proc.stdout and "random" in proc.stdout and "uniform" in proc.stdout
    policy = json.loads((out / "policy.json").read_text())
    assert policy["algorithm"] == "td3" and policy["episodes"] == 5 and policy["seed"] == 0
    assert policy["macs_ratio"] <= 0.5 + 1e-9
    # where the best came from: the two warm-up episodes are random actions, the agent's own start at episode 3
    assert policy["best_found_in"] == ("warm-up" if policy["best_episode"] <= 2 else "policy")
    assert f"episode {policy['best_episode']} ({policy['best_found_in']})" in proc.stdout
    assert json.loads((out / "policy-random.json").read_text())["best_found_in"] == "baseline"
    for name in ("ratios.png", "best_reward.png", "policy-uniform.json", "policy-random.json", "episodes-td3.jsonl"):
        assert (out / name).is_file(), name
    assert len((out / "episodes-td3.jsonl").read_text().splitlines()) == 5

    train_out = tmp_path / "finetune"
    overrides = {**TINY_RESNET, "epochs": 1, "prune": "l1-filter", "ratios": str(out / "policy.json")}
    result = run_training(tiny_config(train_out, **overrides, init=str(dense_ckpt)))
    assert result["macs_ratio"] == pytest.approx(policy["macs_ratio"], abs=1e-6)
    assert result["ratios"] == policy["ratios"]


def _search_main(argv: list[str], capsys) -> tuple[int, str]:
    """(exit status, stderr) of ``python -m agents.search argv`` run as its main() in this process (the parsing and
    the refusals are all in it; test_trust's bad-path test runs it through ``python -m``)."""
    from agents.search import main

    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def test_cli_errors_are_one_line(tmp_path, capsys, dense_ckpt):
    code, bad_algo = _search_main(["--algo", "no-such-algo", "--init", str(dense_ckpt)], capsys)
    allowed = ", ".join(ALGORITHMS.names())  # from the registry: a new algorithm changes no test
    assert code == 2 and f"--algo got 'no-such-algo'; allowed: {allowed}" in bad_algo, bad_algo
    code, no_init = _search_main(["--algo", "random"], capsys)
    assert code == 2 and "--init is required" in no_init, no_init
    args = ["--init", str(dense_ckpt), "--target-macs", "0.01", "--val-subset", "300", "--out", str(tmp_path / "x")]
    code, unreachable = _search_main([*args, "--wandb", "disabled"], capsys)
    assert code == 2 and "out of reach" in unreachable, unreachable
    assert "Traceback" not in bad_algo + no_init + unreachable
    with pytest.raises(ConfigError, match="--r-min < --r-max"):
        build(SearchConfig, {"init": "x", "r_min": 0.5, "r_max": 0.4})
    code, bad_actions = _search_main(["--init", str(dense_ckpt), "--actions", "wide"], capsys)
    assert code == 2 and "--actions" in bad_actions and "centred" in bad_actions, bad_actions


def test_bench_times_each_part_of_an_evaluation(dense_ckpt):
    proc = run_module(
        "agents.bench",
        *("--init", str(dense_ckpt), "--val-subset", "300", "--calib-batches", "2", "--strategies", "2"),
        *("--threads", "1"),  # one per test, as conftest sets (two beside the other xdist worker only contend)
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    seconds = {line.split()[0]: float(line.split()[-3]) for line in proc.stdout.splitlines() if "(median)" in line}
    assert set(seconds) == {"slice", "adaptive", "validation", "total"}
    assert 0 < seconds["validation"] < seconds["total"]


def test_a_second_search_on_one_folder_is_refused(tmp_path, dense_ckpt):
    from dynprune.runlock import locked_run_folder

    out = tmp_path / "search"
    with locked_run_folder(out), pytest.raises(ConfigError, match="is in use by another run"):
        run_search(search_config(out, dense_ckpt, algo="random"))  # the folder held by a first search
    assert not (out / "cache.jsonl").exists()  # nothing of the held folder was touched


def test_cache_lines_without_a_usable_score_are_skipped(tmp_path):
    """Before: a line without val_acc (or with a string there) was a KeyError traceback at --resume."""
    from agents.cache import EvaluationCache

    path = tmp_path / "cache.jsonl"
    lines = [
        {"key": "a", "val_acc": 71.5},
        {"key": "b"},
        {"key": "c", "val_acc": "high"},
        {"key": "d", "val_acc": True},
        ["e", 1.0],
        {"val_acc": 50.0},
        {"key": "f", "val_acc": 12},
    ]
    path.write_text("\n".join(json.dumps(row) for row in lines) + '\n{"key": "g", "val_a')
    cache = EvaluationCache(path)
    assert cache.scores == {"a": 71.5, "f": 12.0}


def test_spearman_on_constructed_rankings():
    from agents.rank_check import spearman

    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [9, 7, 5, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)  # 1 - 6 * 2 / (4 * 15)
    # ties share their mean rank: x ranks (0.5, 0.5, 2, 3) against y's (0, 1, 2, 3): Pearson of the ranks
    assert spearman([5, 5, 6, 7], [1, 2, 3, 4]) == pytest.approx(np.corrcoef([0.5, 0.5, 2, 3], [0, 1, 2, 3])[0, 1])
    assert math.isnan(spearman([1, 1, 1], [1, 2, 3]))


@pytest.mark.slow
def test_rank_check_fine_tunes_each_strategy_and_reports_the_correlation(dense_ckpt, tmp_path):
    from agents.rank_check import main

    args = ["--init", str(dense_ckpt), "--targets", "0.5", "--strategies", "3", "--epochs", "1"]
    args += ["--val-subset", "200", "--calib-batches", "1", "--out", str(tmp_path / "rc")]
    assert main(args) == 0
    check = json.loads((tmp_path / "rc" / "rank_check.json").read_text())["checks"][0]
    rows = check["strategies"]
    assert [r["kind"] for r in rows] == ["uniform", "random", "random"]
    assert len(set(rows[0]["ratios"].values())) == 1  # one ratio at every site
    assert len({json.dumps(r["ratios"], sort_keys=True) for r in rows}) == 3  # distinct strategies
    for row in rows:
        assert row["macs_ratio"] <= 0.5 + 1e-6 and 0 <= row["tuned_val_top1"] <= 100
        assert row["reward"] == pytest.approx(row["val_acc"] / 100)  # the default reward, before fine-tuning
    assert -1 <= check["spearman"] <= 1
    assert (tmp_path / "rc" / "rank-0.5.png").stat().st_size > 10_000
    logs = sorted((tmp_path / "rc" / "t0.5").glob("*/train.log"))
    stamps = [p.stat().st_mtime_ns for p in logs]
    assert main(args) == 0  # the rerun reuses the finished fine-tunes
    assert [p.stat().st_mtime_ns for p in logs] == stamps
    assert main([*args, "--seed", "1"]) == 2  # other random strategies: the folders' fine-tunes are not theirs
    assert [p.stat().st_mtime_ns for p in logs] == stamps


def test_rank_check_reports_how_well_fine_tune_seeds_agree(dense_ckpt, evaluator, tmp_path):
    """Two finished fine-tunes per strategy (result files written here, as a finished rank check leaves them): the
    check reuses them, averages the seeds and reports the seed-to-seed Spearman (the ceiling of any reward)."""
    from agents.rank_check import RankCheckConfig, main, scored_strategies, seed_folder, spearman, strategy_name

    out = tmp_path / "rc"
    cfg = build(RankCheckConfig, {"init": str(dense_ckpt), "strategies": 4, "finetune_seeds": 2, "out": str(out)})
    rows = scored_strategies(ChannelPruningEnv(evaluator=evaluator, target_macs=0.5), cfg, 0.5)
    per_seed_val = {0: [80.0, 81.0, 82.0, 83.0], 1: [80.0, 82.0, 81.0, 83.0]}  # Spearman 0.8 between the seeds
    for i, row in enumerate(rows):
        folder = out / "t0.5" / f"{row['kind']}-{strategy_name(evaluator, row['ratios'])}"
        for seed, vals in per_seed_val.items():
            result = {"ratios": row["ratios"], "seed": seed, "val_top1": vals[i], "top1": 70.0 + i, "macs_ratio": 0.5}
            seed_folder(cfg, folder, seed).mkdir(parents=True, exist_ok=True)
            (seed_folder(cfg, folder, seed) / "result.json").write_text(json.dumps(result))
    args = ["--init", str(dense_ckpt), "--targets", "0.5", "--strategies", "4", "--finetune-seeds", "2"]
    assert main([*args, "--val-subset", "300", "--calib-batches", "2", "--out", str(out)]) == 0
    check = json.loads((out / "rank_check.json").read_text())["checks"][0]
    assert check["finetune_seeds"] == 2 and not list(out.rglob("train.log"))  # nothing fine-tuned again
    assert check["seed_agreement"] == pytest.approx(0.8) and check["seed_agreement_test"] == pytest.approx(1.0)
    assert [r["tuned_val_top1"] for r in check["strategies"]] == [80.0, 81.5, 81.5, 83.0]
    assert check["val_test_agreement"] == pytest.approx(np.corrcoef([0, 1.5, 1.5, 3], [0, 1, 2, 3])[0, 1])
    assert check["spearman_test"] == pytest.approx(spearman([r["reward"] for r in check["strategies"]], [0, 1, 2, 3]))


def test_scores_of_different_criteria_never_share_a_cache_entry(dense_ckpt):
    """The cache key names the criterion (before: ``-l1`` for every criterion, so an L2 scorer read L1 scores);
    the L1 key is the one earlier caches were written with."""
    from dynprune.prune.criteria import L2Norm

    l1 = StrategyEvaluator(dense_ckpt, settings=SMALL)
    l2 = StrategyEvaluator(dense_ckpt, settings=SMALL, criterion=L2Norm())
    assert l1.cache_prefix.endswith(f"|{SMALL.key()}-l1") and l2.cache_prefix.endswith("-L2Norm")
    assert l1.cache_prefix != l2.cache_prefix


def test_a_short_fine_tune_reward_is_seeded_keyed_and_leaves_the_dense_model(dense_ckpt):
    from dataclasses import replace

    tuned = StrategyEvaluator(dense_ckpt, settings=replace(SMALL, finetune_steps=3))
    assert tuned.cache_prefix.endswith(f"{SMALL.key()}-ft3x0.01-l1")  # never shares a score with the plain reward
    before = {k: v.clone() for k, v in tuned.model.state_dict().items()}
    ratios = dict.fromkeys(tuned.cost.site_widths, 0.6)
    first, second = tuned.accuracy(ratios), tuned.accuracy(ratios)
    assert first == second  # the same batches, the same seed
    assert all(torch.equal(v, tuned.model.state_dict()[k]) for k, v in before.items())  # a copy was tuned
    assert first != StrategyEvaluator(dense_ckpt, settings=SMALL).accuracy(ratios)  # the steps changed the score


@pytest.mark.parametrize("name", CRITERIA.names())
def test_every_criterion_reaches_the_scorer_by_name(dense_ckpt, name):
    """``--criterion NAME`` (every registered criterion): the scorer removes the channels that criterion ranks
    lowest, and its cache key names it."""
    from dataclasses import replace

    from dynprune.prune.criteria import ChannelGroup, make_criterion

    scorer = StrategyEvaluator(dense_ckpt, settings=replace(SMALL, criterion=name))
    assert type(scorer.criterion) is type(make_criterion(name))
    site = scorer.sites[0]
    ratios = dict.fromkeys(scorer.cost.site_widths, 0.0) | {site.name: 0.5}
    pruned = scorer.pruned_model(ratios)
    scores = make_criterion(name)(ChannelGroup.of(scorer.model, site))
    kept = scores.argsort(descending=True, stable=True)[: pruned.get_submodule(site.producer).weight.shape[0]]
    kept_weights = scorer.model.get_submodule(site.producer).weight[kept.sort().values]
    assert torch.equal(pruned.get_submodule(site.producer).weight.contiguous(), kept_weights.contiguous())


def test_the_search_cli_takes_a_criterion_by_name_and_refuses_an_unknown_one(tmp_path, dense_ckpt):
    cfg = search_config(tmp_path / "s", dense_ckpt, criterion="slim-filter")
    assert EvalSettings.of(cfg).criterion == "slim-filter"
    with pytest.raises(ConfigError, match="criterion"):
        search_config(tmp_path / "t", dense_ckpt, criterion="l3-filter")


def test_episode_credit_stores_every_step_with_the_final_reward_and_samples_against_a_baseline():
    """AMC's credit on hand-made transitions: nothing is stored before the episode ends, then every step with the
    episode's final reward; a sampled batch's rewards are relative to the moving average of batch means."""
    from gymnasium import spaces

    from agents.replay import EpisodeCreditBuffer

    buffer = EpisodeCreditBuffer(50, spaces.Box(0, 1, (2,)), spaces.Box(-1, 1, (1,)), device="cpu", n_envs=1)
    for reward in (0.3, 0.9):  # two episodes of three steps, rewarded at their last step only
        for step in range(3):
            last = step == 2
            obs, action = np.full((1, 2), step, np.float32), np.zeros((1, 1), np.float32)
            info = [{"terminal_observation": obs[0]}] if last else [{}]
            buffer.add(obs, obs + 1, action, np.array([reward if last else 0.0]), np.array([last]), info)
            assert buffer.size() == (3 if reward == 0.9 else 0) + (3 if last else 0)
    assert np.allclose(buffer.rewards[:6, 0], [0.3, 0.3, 0.3, 0.9, 0.9, 0.9])
    assert buffer.dones[:6, 0].tolist() == [0, 0, 1, 0, 0, 1]
    first = buffer.sample(64)
    assert buffer.baseline == pytest.approx(float((first.rewards + buffer.baseline).mean()))
    assert float(first.rewards.mean()) == pytest.approx(0.0, abs=1e-6)  # the first batch is its own baseline


def test_a_search_with_episode_credit_runs_and_refuses_several_environments(tmp_path, dense_ckpt):
    cfg = search_config(tmp_path, dense_ckpt, algo="ddpg", baselines="none", episodes=4, warmup_episodes=1,
                        credit="episode")  # fmt: skip
    policy = run_search(cfg)["ddpg"]
    assert 0.5 - 0.05 <= policy["macs_ratio"] <= 0.5 + 1e-9 and policy["episodes"] == 4
    with pytest.raises(ConfigError, match="--n-envs must be 1"):
        search_config(tmp_path / "n", dense_ckpt, credit="episode", n_envs=2)
