"""Every zoo model learns with its own default recipe: one short epoch on real Fashion-MNIST images (4,800 images
at batch 64, 75 steps; the shipped sample holds 5,000 training images after its validation split) ends well above
chance (10%). The recipe comes in through the real CLI parser (no lr, schedule or weight decay given).

A quarter width keeps the deep models affordable on a CPU (ResNet-110: ~20 s, MobileNetV2: ~20-30 s on 2 cores);
the recipe is the model's whatever its width. Measured values per model and seed: BENCHMARKS.md, "Default recipe
per zoo model: one short epoch each"."""

from __future__ import annotations

import pytest
from helpers import DATASET

from dynprune.catalog import parse_train_cli
from dynprune.models import list_models, model_recipe
from dynprune.runner import run_training

#: narrow enough for a CPU test; LeNet-5 is cheap at full width
WIDTH = {"lenet5": 1.0}
#: a few seconds each: in the quick tier; the rest are trainings of 5-30 s
QUICK = ("lenet5", "resnet18", "vgg11")


#: ResNet-20's recipe and blocks, two more per stage (BENCHMARKS: 66.9 +- 0.5 after the short epoch) or two fewer;
#: CI time is spent on the models whose recipe is their own
SAME_RECIPE_AND_BLOCKS = {"resnet32": "resnet20", "resnet8": "resnet20"}


@pytest.mark.parametrize(
    "model",
    [
        m if m in QUICK else pytest.param(m, marks=pytest.mark.slow)
        for m in list_models()
        if m not in SAME_RECIPE_AND_BLOCKS
    ],
)
def test_zoo_model_learns_in_one_short_epoch_with_its_recipe(tmp_path, model):
    args = ["--model", model, "--width", str(WIDTH.get(model, 0.25)), "--dataset", DATASET, "--epochs", "1"]
    args += ["--train-subset", "4800", "--batch-size", "64", "--val-size", "1000", "--no-latency"]
    args += ["--test-subset", "1000"]  # the full test set's 10,000 images cost as much as the training
    args += ["--wandb", "disabled", "--threads", "1", "--no-progress", "--out", str(tmp_path / model)]
    cfg = parse_train_cli(args, "t", "")
    recipe = model_recipe(model)
    assert recipe, f"{model} has no recipe of its own"
    assert (cfg.lr, cfg.schedule, cfg.weight_decay) == tuple(recipe[k] for k in ("lr", "schedule", "weight_decay"))
    result = run_training(cfg)
    assert result["val_top1"] >= 30.0, (model, result["val_top1"])  # 3x chance after 75 steps


def test_a_model_left_out_shares_its_stand_ins_recipe():
    for model, stand_in in SAME_RECIPE_AND_BLOCKS.items():
        assert dict(model_recipe(model)) == dict(model_recipe(stand_in)), model
