"""python -m dynprune.cascade SMALL.pt BIG.pt --target-macs 0.25 --out DIR: a confidence cascade of pruned runs.

The members (dense or statically pruned runs of one data set, any number from 2) run cheapest first; an input
stops at the first member whose largest softmax probability reaches one threshold, calibrated on the validation
split so that the mean MACs meet the target. Writes DIR/cascade.json (the members, their file hashes and the
threshold: ``dynprune.cascade.load_cascade`` rebuilds it), DIR/result.json (test and validation figures, each
member alone and the random-exit baseline at the same exit shares) and DIR/cascade.png (the accuracy-MACs curve).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..base import ConfigError, check_target_macs, option
from ..checkpoints import file_hash, write_json
from ..cli import run_command
from ..config import TrainConfig, parse_cli
from ..data import data_of_checkpoint
from ..outputs import prepare_folder
from .measure import curve, member_logits, plot_curve, run_cascade, split_figures
from .model import Cascade, Member, load_member, save_spec
from .rule import calibrate, confidence

PROG = "python -m dynprune.cascade"
#: the data settings that must agree for members to be scored on one split
SAME_DATA = ("dataset", "val_size", "image_size", "test_subset")


@dataclass
class CascadeConfig:
    """python -m dynprune.cascade CHECKPOINT CHECKPOINT [...] --target-macs T --out DIR."""

    members: list[str] = option([], "checkpoint.pt of each member run (2 or more; any order)", positional=True)
    target_macs: float | None = option(
        None,
        "the mean MACs over the validation split, as a fraction of the dense model's (an input pays for every "
        "member it ran); required",
    )
    out: str = option("runs/cascade", "folder for cascade.json, result.json and cascade.png")
    data_dir: str | None = option(None, "where the runs' data set is, if not where they were trained")
    threads: int = option(2, "torch threads")

    def validate(self) -> None:
        if len(self.members) < 2:
            raise ConfigError(f"a cascade needs 2 or more member checkpoints, got {len(self.members)}")
        if self.target_macs is None:
            raise ConfigError("--target-macs is required: the mean MACs to calibrate for (e.g. --target-macs 0.25)")
        check_target_macs(self.target_macs)
        if self.threads < 1:
            raise ConfigError(f"--threads must be >= 1, got {self.threads}")


def _load(paths: Sequence[str]) -> tuple[list[nn.Module], list[Member], dict[str, Any]]:
    """(models, members, the first checkpoint) sorted cheapest first; members of other data are refused."""
    loaded = [(p, *load_member(p)) for p in paths]
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}  # a run older than a setting lacks it

    def data_of(ckpt: dict) -> list:
        return [ckpt["config"].get(k, defaults[k]) for k in SAME_DATA]

    for path, _, _, ckpt in loaded[1:]:
        if ckpt["arch"] != loaded[0][3]["arch"]:  # each member's MACs ratio is against its own dense model
            raise ConfigError(f"{path} prunes another model than {paths[0]}: a cascade's members share one dense model")
        differs = [k for k, a, b in zip(SAME_DATA, data_of(ckpt), data_of(loaded[0][3]), strict=True) if a != b]
        if differs:
            raise ConfigError(f"{path} was trained on other data than {paths[0]} ({', '.join(differs)} differ)")
    loaded.sort(key=lambda row: row[2])
    ratios = [row[2] for row in loaded]
    if len(set(ratios)) < len(ratios):
        raise ConfigError(f"two members cost the same MACs ({ratios}): a cascade needs members of different sizes")
    members = [Member(str(Path(p).resolve()), file_hash(p), r) for p, _, r, _ in loaded]
    return [row[1] for row in loaded], members, loaded[0][3]


def run(args: CascadeConfig) -> int:
    out = Path(args.out)
    models, members, ckpt = _load(args.members)
    prepare_folder(out)  # after the members are accepted: a refused run leaves no folder
    macs = [m.macs_ratio for m in members]
    print(f"members, cheapest first: {', '.join(f'{m.checkpoint} ({m.macs_ratio:.3f}x)' for m in members)}")
    data = data_of_checkpoint(ckpt, args.data_dir)
    if len(data.val) == 0:
        raise ConfigError(
            "the members were trained without a validation split (--val-size 0): a cascade is calibrated on it"
        )
    val_every, val_labels = member_logits(models, data.val, data)
    threshold = calibrate(confidence(val_every), macs, args.target_macs)
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
    save_spec(out, members, threshold, args.target_macs)
    test = figures["test"]
    result = {"method": "cascade", "target_macs": args.target_macs, "threshold": threshold, **test}
    result.update(val_top1=figures["val"]["top1"], val_macs_ratio=figures["val"]["macs_ratio"], val=figures["val"])
    result.update(test_images=len(data.test), members=[m.checkpoint for m in members], member_macs=macs)
    result["curve"] = [{"threshold": t, "macs_ratio": m, "top1": a} for t, m, a in rows]
    write_json(out / "result.json", result)
    shares = ", ".join(f"{s:.2f}" for s in test["exit_shares"])
    print(
        f"threshold {threshold:.4f}: test top1 {test['top1']:.2f}% at {test['macs_ratio']:.3f}x dense MACs "
        f"(validation {figures['val']['top1']:.2f}% at {figures['val']['macs_ratio']:.3f}x); exit shares {shares}; "
        f"random exits at those shares {test['random_exit_top1']:.2f}%, a static mix of the members at those MACs "
        f"{test['static_mix_top1']:.2f}% -> {out}/result.json"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_cli(CascadeConfig, argv, PROG, __doc__.split("\n\n")[0])
    torch.set_num_threads(args.threads)
    return run_command(PROG, lambda: run(args), "run it again: a cascade is calibrated in minutes")


if __name__ == "__main__":
    sys.exit(main())
