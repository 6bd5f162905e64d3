"""Comparison harness: plan validation, the --quick run end to end (resumable), report contents, sweeps."""

from __future__ import annotations

import csv
import itertools
import json
from pathlib import Path

import pytest
import yaml
from helpers import DATA_FLAGS, DATASET, REPO, run_module

from dynprune.catalog import parse_train_cli
from dynprune.checkpoints import CheckpointError
from dynprune.compare.config import CompareConfig
from dynprune.compare.methods import COMPARE_METHODS, straddling_widths, width_for_macs
from dynprune.compare.plan import build_plan
from dynprune.config import ConfigError, build, to_dict
from dynprune.cost import CostModel
from dynprune.gates.estimators import ESTIMATORS
from dynprune.models import create_model

# every cell class and report path once: registered methods but the estimators' start variants (topk-l1, ...:
# their estimator's cell with other option values, test_recipes checks those) and the pruners and estimators whose
# cells differ from a kept one's only by the name they pass on (every pruner: test_registries; every estimator:
# test_gates; every model: test_zoo_learns), which would add minutes of CI time and no code path
VARIANTS = {f"{name}-{v}" for name, est in ESTIMATORS.items() for v in est.variants}
SAME_CELL_AS_A_KEPT_ONE = {
    *("l2-filter", "fpgm-filter", "random-filter", "global-filter", "slim-filter", "sfp"),  # as l1-filter's
    *("l1-unstructured", "random-unstructured"),  # as global-unstructured's
    # as width's, a GatedCompare cell with cell values of its own (every estimator: test_gates, test_recipes)
    *("gumbel", "ste", "hardconcrete"),
    "topk",  # as topk-rl's without its search (a GatedCompare cell of topk gates)
    "mobilenetv2",  # as narrow's (another zoo model: test_zoo_learns)
    "random-search",  # as rl's with --algo random (test_every_registered_comparison_method_plans_a_valid_cell)
    # topk-rl runs the same search before its training; the fine-tune of a policy.json: test_agents
    "rl",
    "topk-scratch",  # topk's cell trained from scratch like narrow's (test_scratch_gates_get_the_whole_budget...)
    # as cascade-shallow's: the same big member and calibration, and its small member an l1-filter run as the
    # big one is (test_cascade_members_straddle_the_target_and_share_the_fine_tune_budget)
    "cascade",
}
assert set(COMPARE_METHODS.names()) >= SAME_CELL_AS_A_KEPT_ONE
QUICK_METHODS = set(COMPARE_METHODS.names()) - VARIANTS - SAME_CELL_AS_A_KEPT_ONE


def plan_config(tmp_path: Path, **kw) -> CompareConfig:
    values = {"out": str(tmp_path / "cmp"), "dataset": DATASET, "val_size": 500, "wandb": "disabled", "threads": 1}
    values.update(kw)
    return build(CompareConfig, values)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"methods": ["l1-filter", "magic"]}, "unknown method 'magic'; known: "),
        ({"methods": ["l1-filter"], "targets": [0.01]}, "l1-filter: target 0.01 cannot be reached"),
        ({"methods": ["gumbel"], "targets": [0.01]}, "gumbel: target 0.01 is below what gates can reach"),
        ({"methods": ["cascade"], "targets": [0.05]}, "cascade: target 0.05 cannot be reached: its smaller member"),
        ({"methods": ["cascade-shallow"], "model": "lenet5"}, "cascade-shallow: its first member is a resnet8 cut"),
        ({"methods": ["l1-filter"], "dense": "nowhere/checkpoint.pt"}, "no such checkpoint"),
        ({"methods": ["l1-filter"], "dense": "dense-run/checkpoint.pt"}, "its run has not finished"),
        ({"methods": ["rl"], "search_algo": "bogus"}, "refuses its settings: search_algo got 'bogus'; allowed: "),
        ({"methods": ["rl"], "search_criterion": "bogus"}, "refuses its settings: search_criterion got 'bogus'"),
        ({"methods": ["rl"], "search_actions": "wide"}, "refuses its settings: search_actions got 'wide'"),
    ],
)
def test_whole_plan_is_validated_before_anything_runs(tmp_path, overrides, message):
    unfinished = tmp_path / "dense-run"  # a dense run stopped before its result.json: the case below
    unfinished.mkdir()
    (unfinished / "checkpoint.pt").write_bytes(b"")
    overrides = {
        k: str(tmp_path / v) if k == "dense" and v.startswith("dense-run") else v for k, v in overrides.items()
    }
    with pytest.raises((ConfigError, CheckpointError), match=message):
        build_plan(plan_config(tmp_path, **overrides))
    assert not (tmp_path / "cmp").exists()


@pytest.mark.parametrize(("weight", "expected"), [(None, 20.0), (50.0, 50.0)])
def test_gate_budget_weight_is_the_recipes_unless_given(tmp_path, weight, expected):
    cells = build_plan(
        plan_config(tmp_path, methods=["dense", "ste", "topk"], targets=[0.5], gate_budget_weight=weight)
    )
    values = {cell.method: cell.values for cell in cells}
    assert values["ste"]["budget_weight"] == expected  # ste's recipe: 20 (gates/estimator.py HELD_PER_SITE)
    assert values["topk"]["budget_warmup_epochs"] == pytest.approx(9 / 4)  # its k slides over a quarter


def test_every_registered_comparison_method_plans_a_valid_cell(tmp_path):
    """The quick-tier check of every comparison method, a new one included: its cell's values build a valid
    training config (the plan checks each with ``train_config``) for one target and seed."""
    names = COMPARE_METHODS.names()
    cfg = plan_config(
        tmp_path,
        methods=names,
        targets=[0.5],
        search_episodes=12,
        search_criterion="slim-filter",
        search_actions="centred",
    )
    cells = build_plan(cfg)
    assert {c.method for c in cells} == set(names)
    for cell in cells:
        method = COMPARE_METHODS[cell.method]
        assert cell.values["seed"] == 0 and cell.values["out"].endswith("s0"), cell.label
        assert ("init" in cell.values) is method.from_dense, cell.label  # fine-tunes start from the dense model
    # rl and random-search side by side: the same evaluator, walls, criterion and number of strategies; only the
    # agent differs (random-search ignores search_algo); both prune as they scored
    args = {c.method: c.search_args for c in cells if c.method in ("rl", "random-search")}

    def value(method: str, flag: str) -> str:
        return args[method][args[method].index(flag) + 1]

    assert value("rl", "--algo") == "ddpg" and value("random-search", "--algo") == "random"
    assert value("rl", "--criterion") == "slim-filter" and value("rl", "--actions") == "centred"
    for flag in ("--episodes", "--val-subset", "--r-max", "--target-macs", "--init", "--criterion", "--actions"):
        assert value("rl", flag) == value("random-search", flag), flag
    assert {c.values["prune"] for c in cells if c.method in args} == {"slim-filter"}
    # width gates as measured best: a router with a BN per width, choices straddling the target's site density
    width = next(c.values for c in cells if c.method == "width")
    assert (width["width_scope"], width["width_switchable_bn"], width["width_gate_target"]) == ("network", True, 1.0)
    assert (width["width_gate_label"], width["width_narrowest_weight"]) == ("ranked", 1.0)
    assert width["width_choices"] == [0.25, 0.75, 1.0]  # around ResNet-20's uniform density at 0.5 of the MACs
    # a cascade: l1-filter members, calibrated to the MACs uniform l1-filter reaches at the target (just below it)
    cascade = next(c for c in cells if c.method == "cascade")
    assert (cascade.values["prune"], cascade.values["hard"], cascade.values["epochs"]) == (
        "l1-filter",
        True,
        cfg.epochs,
    )
    assert 0.48 < cascade.method_data["calibrate_to"] <= 0.5
    # the shallow cascade: a ResNet-8 cut out of the dense model (--init), within half the target, at the dense lr,
    # 3 epochs for each the small member would get; the big member as cascade's
    shallow_cell = next(c for c in cells if c.method == "cascade-shallow")
    (small_dir, small), (big_dir, big) = COMPARE_METHODS["cascade-shallow"].members(shallow_cell)
    (_, cascade_small), (cascade_big_dir, cascade_big) = COMPARE_METHODS["cascade"].members(cascade)
    assert small_dir.name == "shallow" and (small["model"], small["lr"], small["init"]) == (
        "resnet8",
        cfg.dense_lr,
        cascade.values["init"],
    )
    assert small["epochs"] == 3 * cascade_small["epochs"] and not {"prune", "hard", "target_macs"} & set(small)
    shallow_macs = CostModel.from_model(create_model("resnet8", 1, 10, 28, width=small["width"]), (1, 28, 28))
    dense_macs = CostModel.from_model(create_model("resnet20", 1, 10, 28), (1, 28, 28)).dense_macs
    assert 0.2 < shallow_macs.dense_macs / dense_macs <= 0.25  # half the target 0.5
    assert big_dir.name == cascade_big_dir.name and big["out"] == str(big_dir) and small["out"] == str(small_dir)
    assert {k: v for k, v in big.items() if k != "out"} == {k: v for k, v in cascade_big.items() if k != "out"}


def test_cascade_members_straddle_the_target_and_share_the_fine_tune_budget():
    cascade = COMPARE_METHODS["cascade"]
    assert cascade.member_targets(0.25) == (0.125, 0.5)
    assert cascade.member_targets(0.5) == (0.25, 0.75)  # the big member at most halfway to 1
    assert cascade.member_epochs(6) == (3, 3) and cascade.member_epochs(9) == (5, 4)  # the small one the odd epoch
    assert cascade.member_epochs(1) == (1, 1)  # each trains at least one epoch


def test_width_choices_straddle_the_site_density():
    assert straddling_widths(0.25) == straddling_widths(0.24) == [0.125, 0.5, 1.0]
    assert straddling_widths(0.09) == [0.0625, 0.1875, 1.0]  # never below one sixteenth
    assert straddling_widths(0.75) == [0.375, 0.875, 1.0]  # the wide choice at most halfway to 1
    assert straddling_widths(0.95) == [0.5, 1.0]


def test_narrow_width_matches_the_mac_target():
    dense = CostModel.from_model(create_model("resnet20", 1, 10, 28), (1, 28, 28)).dense_macs
    width = width_for_macs("resnet20", 0.5 * dense, 1, 10, 28)
    narrow = CostModel.from_model(create_model("resnet20", 1, 10, 28, width=width), (1, 28, 28)).dense_macs
    assert 0.45 * dense < narrow <= 0.5 * dense


@pytest.mark.slow
def test_quick_comparison_end_to_end_then_resumes(tmp_path):
    out = tmp_path / "quick"
    # the synthetic data set: no files to read and a small test split, so every registered method fits in CI
    # two workers of one thread: on 2 cores the small cells run faster side by side than with 2 threads each
    args = ("--quick", "--dataset", "synthetic", "--out", str(out), "--wandb", "disabled", "--threads", "1")
    args += ("--workers", "2", "--methods", ",".join(sorted(QUICK_METHODS)))
    proc = run_module("dynprune.compare", *args, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with (out / "results.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    assert {r["method"] for r in rows} == QUICK_METHODS
    for row in rows:
        if row["method"] != "dense":  # matched budget; gates: their mean, within the +-0.03 they promise
            slack = 0.03 if COMPARE_METHODS[row["method"]].per_sample_cost else 0.01
            assert float(row["macs_ratio"]) <= 0.5 + slack, row["method"]
        assert float(row["latency_b64_ms"]) > 0
    # the cascade cell: a ResNet-8 cut out of the dense model (3 epochs per small-member epoch) and l1-filter at
    # twice the target, then the calibration into the cell's folder
    cell = out / "cascade-shallow/t0.5/s0"
    folders = [cell / "members" / name for name in ("shallow", "t0.75")]
    members = [json.loads((folder / "result.json").read_text()) for folder in folders]
    assert [m["model"] for m in members] == ["resnet8", "resnet20"] and [m["epochs"] for m in members] == [3, 1]
    cascade = json.loads((cell / "result.json").read_text())
    assert cascade["members"] == [str((folder / "checkpoint.pt").resolve()) for folder in folders]
    assert cascade["member_macs"][0] <= 0.25 < cascade["member_macs"][1] and round(cascade["member_macs"][1], 1) == 0.7
    assert cascade["val_macs_ratio"] <= cascade["target_macs"] + 1e-9 and 0.48 < cascade["target_macs"] <= 0.5
    assert cascade["latency_ms"]["pass"] == "serial" and cascade["params"] == sum(m["params"] for m in members)
    report = (out / "report.md").read_text()
    assert "## 50% of dense MACs" in report and report.count("**") >= 2  # the best method in bold
    for name in ("pareto.png", "latency.png", "results.json"):
        assert (out / name).stat().st_size > 0
    again = run_module("dynprune.compare", *args, timeout=300)
    n = len(QUICK_METHODS)
    assert again.returncode == 0 and f"{n} cells, {n} done" in again.stdout


def _results(out: Path) -> dict[str, tuple[str, str]]:
    with (out / "results.csv").open() as fh:
        return {r["method"]: (r["top1"], r["macs_ratio"]) for r in csv.DictReader(fh)}


@pytest.mark.slow
def test_parallel_workers_give_the_serial_results(tmp_path):
    common = ("--methods", "dense,l1-filter", "--targets", "0.5", "--train-subset", "256", "--val-size", "300")
    common += ("--dataset", "synthetic")  # a small test split: the latency pass and evaluations stay cheap
    common += ("--epochs", "1", "--dense-epochs", "1", "--wandb", "disabled", "--threads", "1")
    serial = run_module("dynprune.compare", *common, "--no-latency", "--out", str(tmp_path / "serial"), timeout=600)
    assert serial.returncode == 0, serial.stderr[-2000:]
    parallel = run_module(
        "dynprune.compare", *common, "--workers", "2", "--out", str(tmp_path / "parallel"), timeout=600
    )
    assert parallel.returncode == 0, parallel.stderr[-2000:]
    assert "in 2 worker processes" in parallel.stdout
    assert (tmp_path / "parallel/l1-filter/t0.5/s0/train.log").stat().st_size > 0  # each worker's own log
    results = _results(tmp_path / "serial")
    assert set(results) == {"dense", "l1-filter"}
    assert _results(tmp_path / "parallel") == results  # same seeds, same thread count: bit-identical cells
    # parallel cells are timed afterwards, one at a time (a serial run times each cell as it finishes)
    assert "latency pass: timing 2 cells one at a time" in parallel.stdout
    for method in ("dense/s0", "l1-filter/t0.5/s0"):
        latency = json.loads((tmp_path / "parallel" / method / "result.json").read_text())["latency_ms"]
        assert latency["pass"] == "serial" and latency["b1"] > 0 and latency["b64"] > 0
    assert json.loads((tmp_path / "serial/l1-filter/t0.5/s0/result.json").read_text())["latency_ms"] is None


@pytest.mark.slow
def test_dry_run_prints_the_plan_and_trains_nothing(tmp_path):
    out = tmp_path / "dry"
    proc = run_module(
        "dynprune.compare",
        "--config",
        str(REPO / "configs/compare/fmnist_resnet20.yaml"),
        "--methods",
        "dense,l1-filter,rl,narrow",  # every family but one compact architecture: each is timed for the estimate
        "--dry-run",
        *DATA_FLAGS,
        "--out",
        str(out),
        "--wandb",
        "disabled",
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "rl @ 0.30 seed 0" in proc.stdout and "estimated" in proc.stdout
    assert not any(out.rglob("checkpoint.pt"))


def _sweep_args(parameters: dict) -> list[list[str]]:
    """The --name=value argument lists wandb would generate (every extreme of every parameter)."""
    choices = []
    for name, spec in parameters.items():
        values = spec.get("values") or [spec["min"], spec["max"]]
        choices.append([f"--{name}={v}" for v in values])
    return [list(combo) for combo in itertools.product(*choices)]


@pytest.mark.parametrize("sweep", sorted((REPO / "configs/sweeps").glob("*.yaml")), ids=lambda p: p.name)
def test_sweep_arguments_parse_through_the_real_cli(sweep):
    spec = yaml.safe_load(sweep.read_text())
    command = spec["command"]
    assert command[:4] == ["${env}", "${interpreter}", "-m", "dynprune.train"] and command[-1] == "${args}"
    fixed = [c.replace("configs/", str(REPO / "configs") + "/") for c in command[4:-1]]
    for args in _sweep_args(spec["parameters"]):
        cfg = parse_train_cli([*fixed, *args], "sweep", "")
        for arg in args:
            name, value = arg[2:].split("=")
            assert to_dict(cfg)[name.replace("-", "_")] == yaml.safe_load(value)


@pytest.mark.parametrize(
    ("text", "done"), [('{"top1": 88.1, "macs_ratio": 0.5}', True), ('{"top1": 8', False), ("", False)]
)
def test_a_cell_with_a_cut_result_is_not_done(tmp_path, text, done):
    from dynprune.compare.cell import Cell

    cell = Cell("l1-filter", 0.5, 0, tmp_path, {})
    (tmp_path / "result.json").write_text(text)  # a stop or a full disk can leave it cut or empty
    assert cell.done is done


def test_scratch_gates_get_the_whole_budget_of_a_fine_tuned_row_and_no_dense_start(tmp_path):
    cfg = plan_config(
        tmp_path, methods=["dense", "topk", "topk-scratch"], targets=[0.25], dense_epochs=9, epochs=6, lr=0.05
    )
    cells = {c.method: c.values for c in build_plan(cfg)}
    scratch, tuned = cells["topk-scratch"], cells["topk"]
    assert (scratch["epochs"], scratch["lr"], scratch["budget_warmup_epochs"]) == (15, cfg.dense_lr, 15 / 4)
    assert (scratch["gate_usage_weight"], scratch["gate_usage_floor"]) == (0.05, 0.02)  # the gentle usage floor
    assert "gate_usage_weight" not in tuned  # the fine-tune recipe keeps it off (it cost 0.4-0.9 there)
    assert "init" not in scratch and tuned["init"].endswith("checkpoint.pt")  # topk fine-tunes the dense model
    own = {"epochs", "lr", "budget_warmup_epochs", "out", "gate_usage_weight", "gate_usage_floor"}
    assert {k: v for k, v in scratch.items() if k not in own} == {
        k: v for k, v in tuned.items() if k not in own | {"init"}
    }  # otherwise topk's own cell: its recipe, target and data


def test_distill_gives_every_cell_but_dense_its_seeds_dense_teacher_from_scratch_cells_too(tmp_path):
    cfg = plan_config(
        tmp_path, methods=["dense", "l1-filter", "topk-scratch"], targets=[0.25], seeds=[0, 1], distill=True
    )
    cells = build_plan(cfg)
    for cell in cells:
        if cell.method == "dense":
            assert "distill" not in cell.values and not cell.needs_dense
            continue
        teacher = tmp_path / "cmp" / "dense" / f"s{cell.seed}" / "checkpoint.pt"
        assert cell.values["distill"] == str(teacher) and cell.needs_dense, cell.label
    scratch = [c for c in cells if c.method == "topk-scratch"]
    assert len(scratch) == 2 and all("init" not in c.values for c in scratch)  # still no dense start


@pytest.mark.parametrize(
    ("methods", "distill", "named"),
    [(["l1-filter", "narrow"], False, "l1-filter start from"), (["topk-scratch"], True, "topk-scratch start from or")],
)
def test_a_plan_whose_cells_need_a_dense_model_nobody_provides_is_refused(tmp_path, methods, distill, named):
    """Neither dense among the methods, nor --dense, nor a finished dense folder: one line before anything trains
    (before, each cell failed on its own at run time). With the seed's checkpoint in place the plan is accepted."""
    cfg = plan_config(tmp_path, methods=methods, targets=[0.25], distill=distill)
    with pytest.raises(ConfigError, match=f"{named}.*'dense' is not among --methods.*s0/checkpoint.pt"):
        build_plan(cfg)
    if distill:  # a dense model trained earlier into the comparison's folder is a source too
        checkpoint = tmp_path / "cmp" / "dense" / "s0" / "checkpoint.pt"
        checkpoint.parent.mkdir(parents=True)
        checkpoint.write_bytes(b"")
        assert [c.values["distill"] for c in build_plan(cfg)] == [str(checkpoint)]


@pytest.mark.parametrize("preset", sorted((REPO / "configs/compare").glob("*.yaml")), ids=lambda p: p.name)
def test_every_comparison_preset_names_known_methods_and_valid_options(tmp_path, preset):
    """Each preset's fields check out and each of its methods is registered (the plan itself, which times a
    training step per method, is built by the slow end-to-end tests)."""
    values = {**yaml.safe_load(preset.read_text()), "out": str(tmp_path / "cmp"), "wandb": "disabled"}
    cfg = build(CompareConfig, values)
    assert cfg.methods and set(cfg.methods) <= set(COMPARE_METHODS.names())
    assert cfg.methods[0] == "dense" and all(0 < t < 1 for t in cfg.targets)
