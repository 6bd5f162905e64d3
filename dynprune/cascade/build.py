"""Calibrate a cascade of finished runs to a MAC target and measure it: what ``python -m dynprune.cascade`` and the
comparison's ``cascade`` cells both run. Writes cascade.json (``load_cascade`` rebuilds it), result.json and
cascade.png into one folder."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from torch import nn

from ..base import ConfigError
from ..checkpoints import file_hash, write_json
from ..config import TrainConfig
from ..cost import CostModel
from ..data import data_of_checkpoint
from ..fold import fold_bn
from ..models import input_shape, model_for_arch
from ..outputs import prepare_folder
from .measure import curve, member_logits, plot_curve, run_cascade, split_figures
from .model import Cascade, Member, load_member, save_spec
from .rule import calibrate, confidence

#: the data settings that must agree for members to be scored on one split
SAME_DATA = ("dataset", "val_size", "image_size", "test_subset")


def dense_macs_of(ckpt: dict[str, Any]) -> int:
    """The MACs of the dense model a run's checkpoint was pruned from (or is)."""
    arch = ckpt["arch"]
    return CostModel.from_model(model_for_arch(arch), input_shape(arch)).dense_macs


def load_members(paths: Sequence[str]) -> tuple[list[nn.Module], list[Member], dict[str, Any], int]:
    """(models with BN folded, members, the reference checkpoint, the members' parameters as every run counts them:
    BN unfolded) sorted cheapest first; members of other data are refused. Members may be different models (a
    shallow network in front of a pruned deep one): every member's MACs are counted over the largest dense model
    among theirs, the reference, whose checkpoint is returned."""
    loaded = [(p, *load_member(p, folded=False)) for p in paths]  # folded below, once its parameters are counted
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}  # a run older than a setting lacks it

    def data_of(ckpt: dict) -> list:
        return [ckpt["config"].get(k, defaults[k]) for k in SAME_DATA]

    for path, _, _, ckpt in loaded[1:]:
        differs = [k for k, a, b in zip(SAME_DATA, data_of(ckpt), data_of(loaded[0][3]), strict=True) if a != b]
        if differs:
            raise ConfigError(f"{path} was trained on other data than {paths[0]} ({', '.join(differs)} differ)")
    dense = [dense_macs_of(ckpt) for _, _, _, ckpt in loaded]
    reference = max(range(len(loaded)), key=dense.__getitem__)
    ratios = [ratio * (d / dense[reference]) for (_, _, ratio, _), d in zip(loaded, dense, strict=True)]  # 1.0: as is
    order = sorted(range(len(loaded)), key=ratios.__getitem__)
    if len(set(ratios)) < len(ratios):
        raise ConfigError(
            f"two members cost the same MACs ({sorted(ratios)}): a cascade needs members of different sizes"
        )
    members = [Member(str(Path(loaded[i][0]).resolve()), file_hash(loaded[i][0]), ratios[i]) for i in order]
    params = sum(p.numel() for row in loaded for p in row[1].parameters())
    return [fold_bn(loaded[i][1]) for i in order], members, loaded[reference][3], params


def build_cascade(paths: Sequence[str], target: float, out: Path, data_dir: str | None = None) -> dict[str, Any]:
    """Calibrate the members at ``paths`` to ``target`` (mean MACs on the validation split over the reference
    dense model's: ``load_members``), measure the cascade on validation and test, write its files into ``out``;
    returns result.json's contents (latency_ms None: the comparison times its cells afterwards, one at a
    time)."""
    models, members, ckpt, params = load_members(paths)
    prepare_folder(out)  # after the members are accepted: a refused run leaves no folder
    macs = [m.macs_ratio for m in members]
    print(f"members, cheapest first: {', '.join(f'{m.checkpoint} ({m.macs_ratio:.3f}x)' for m in members)}")
    data = data_of_checkpoint(ckpt, data_dir)
    if len(data.val) == 0:
        raise ConfigError(
            "the members were trained without a validation split (--val-size 0): a cascade is calibrated on it"
        )
    val_every, val_labels = member_logits(models, data.val, data)
    threshold = calibrate(confidence(val_every), macs, target)
    cascade = Cascade(models, threshold).eval()
    test_every, test_labels = member_logits(models, data.test, data)
    figures = {}
    for split, arrays, every, labels in (
        ("val", data.val, val_every, val_labels),
        ("test", data.test, test_every, test_labels),
    ):
        logits, stopped = run_cascade(cascade, arrays, data)
        figures[split] = split_figures(logits, stopped, labels, every, macs)
    rows = curve(test_every, test_labels, macs)
    plot_curve(rows, macs, figures["test"]["member_top1"], figures["test"], out / "cascade.png")
    save_spec(out, members, threshold, target)
    test = figures["test"]
    dense_macs = dense_macs_of(ckpt)  # the reference's: every member's MACs are over it
    result = {"method": "cascade", "target_macs": target, "threshold": threshold, **test}
    result.update(val_top1=figures["val"]["top1"], val_macs_ratio=figures["val"]["macs_ratio"], val=figures["val"])
    result.update(
        test_images=len(data.test),
        members=[m.checkpoint for m in members],
        member_macs=macs,
        # the fields every run's result.json has (the comparison's report reads them): MACs per sample, mean and
        # p99, and the parameters of every member together (BN unfolded, counted as every run counts them)
        macs=test["macs_ratio"] * dense_macs,
        macs_dense=dense_macs,
        macs_p99=test["macs_ratio_p10_p50_p90_p99"][3] * dense_macs,
        params=params,
        # the gates' name for what the per-input choice is worth over an input-blind use of the same compute
        dynamic_gain=test["gain_over_static_mix"],
        latency_ms=None,
    )
    result["curve"] = [{"threshold": t, "macs_ratio": m, "top1": a} for t, m, a in rows]
    write_json(out / "result.json", result)
    return result
