"""Confidence cascades: the exit rule and its calibration on constructed confidences, the module against a
per-input reference, and the CLI end to end on two tiny pruned runs (its figures are the saved cascade's)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from torch import nn

from dynprune.base import ConfigError
from dynprune.cascade import Cascade, load_cascade
from dynprune.cascade.__main__ import main
from dynprune.cascade.measure import run_cascade, top1
from dynprune.cascade.onnx import OrtCascade
from dynprune.cascade.rule import calibrate, exits, sample_macs
from dynprune.checkpoints import CheckpointError
from dynprune.config import build
from dynprune.data import data_of_checkpoint
from dynprune.export import ExportConfig, export
from dynprune.loader import BatchLoader
from dynprune.runner import run_training
from tests.helpers import tiny_config


def report_files(report: dict) -> list[Path]:
    return [Path(f) for f in report["onnx"]]


MACS = [0.1, 0.4]  # two members: the second costs 0.4 on top of the first's 0.1
CONF = torch.tensor([[0.9, 0.5, 0.8, 0.3], [0.6, 0.7, 0.95, 0.99]])  # [members, inputs]


def test_each_input_stops_at_the_first_member_confident_enough():
    assert exits(CONF, 0.6).tolist() == [0, 1, 0, 1]
    assert exits(CONF, 0.0).tolist() == [0, 0, 0, 0]
    assert exits(CONF, 2.0).tolist() == [1, 1, 1, 1]  # the last member answers whatever remains
    assert sample_macs(CONF, MACS, 0.6).tolist() == pytest.approx([0.1, 0.5, 0.1, 0.5])


@pytest.mark.parametrize(
    ("target", "threshold", "mean"),  # halfway between the confidence that decides and the next lower one
    [(0.2, 0.4, 0.2), (0.25, 0.4, 0.2), (0.3, 0.65, 0.3), (0.1, 0.15, 0.1), (0.45, 0.85, 0.4)],
)
def test_calibration_takes_the_costliest_threshold_inside_the_target(target, threshold, mean):
    t = calibrate(CONF, MACS, target)
    assert t == pytest.approx(threshold)
    assert sample_macs(CONF, MACS, t).mean().item() == pytest.approx(mean)


@pytest.mark.parametrize(
    ("target", "macs", "says"),
    [
        (0.05, MACS, "below the cheapest member alone"),
        (0.5, MACS, "lets every input run every member"),
        (0.3, [0.4, 0.1], "cheapest first"),
    ],
)
def test_calibration_refuses_what_it_cannot_or_should_not_meet(target, macs, says):
    with pytest.raises(ConfigError, match=says):
        calibrate(CONF, macs, target)


def test_the_cascade_gives_each_input_the_answer_of_the_member_it_stopped_at():
    torch.manual_seed(0)
    members = [nn.Sequential(nn.Flatten(), nn.Linear(12, 5)) for _ in range(3)]
    x = torch.randn(32, 3, 2, 2) * 3
    cascade = Cascade(members, threshold=0.6).eval()
    with torch.no_grad():
        logits, stopped = cascade.route(x)
        every = torch.stack([m(x) for m in members])
    conf = torch.softmax(every, dim=2).amax(dim=2)
    assert stopped.tolist() == exits(conf, 0.6).tolist()
    assert len(set(stopped.tolist())) == 3  # the case exercises every member
    torch.testing.assert_close(logits, every[stopped, torch.arange(32)])


@pytest.fixture(scope="module")
def members(tmp_path_factory):
    """Two tiny hard-pruned runs of one data set, at about 0.3 and 0.7 of the dense MACs, and a third run scored on
    another validation split."""
    root = tmp_path_factory.mktemp("members")
    paths = []
    for target, val_size in ((0.3, 500), (0.7, 500), (0.5, 400)):
        out = root / f"t{target}"
        run_training(tiny_config(out, epochs=1, prune="l1-filter", target_macs=target, hard=True, val_size=val_size))
        paths.append(out / "checkpoint.pt")
    return paths


def test_the_cli_calibrates_on_validation_and_its_figures_are_the_saved_cascades(members, tmp_path):
    out = tmp_path / "cascade"
    small, big = tmp_path / "small.pt", tmp_path / "big.pt"  # copies: this test changes one at its end
    shutil.copy(members[0], small)
    shutil.copy(members[1], big)
    assert main([str(big), str(small), "--target-macs", "0.45", "--out", str(out), "--threads", "1"]) == 0
    result = json.loads((out / "result.json").read_text())
    assert result["val_macs_ratio"] <= 0.45 + 1e-9  # met where it was decided
    assert result["member_macs"][0] < result["member_macs"][1]  # sorted cheapest first, whatever the order given
    assert sum(result["exit_shares"]) == pytest.approx(1.0) and 0 < result["exit_shares"][0] < 1
    assert result["routing_gain"] == pytest.approx(result["top1"] - result["random_exit_top1"])
    small_alone, large_alone = result["member_top1"]
    share = (result["macs_ratio"] - result["member_macs"][0]) / (result["member_macs"][1] - result["member_macs"][0])
    assert result["static_mix_top1"] == pytest.approx((1 - share) * small_alone + share * large_alone)
    assert (out / "cascade.png").stat().st_size > 0
    cascade, spec = load_cascade(out / "cascade.json")  # a rebuild gives result.json's test figures
    assert spec["threshold"] == result["threshold"] and cascade.threshold == result["threshold"]
    data = data_of_checkpoint(torch.load(small, weights_only=True))
    logits, stopped = run_cascade(cascade, data.test, data)
    assert top1(logits, torch.as_tensor(data.test.labels)) == pytest.approx(result["top1"])
    shares = torch.bincount(stopped, minlength=2).double() / len(stopped)
    assert shares.tolist() == pytest.approx(result["exit_shares"])
    # ONNX: one file per member, run with the same rule; checked on real test images by the export itself
    onnx = tmp_path / "cascade.onnx"
    assert export(build(ExportConfig, {"checkpoint": str(out / "cascade.json"), "onnx": str(onnx), "batch": 16})) == 0
    report = json.loads((tmp_path / "cascade.onnx.json").read_text())
    assert report["onnx"] == [str(onnx), str(tmp_path / "cascade.member1.onnx")]
    assert report["threshold"] == result["threshold"] and report["max_relative_error"] <= 1e-4
    x = next(iter(BatchLoader(data.test, data, 64, train=False)))[0]
    with torch.no_grad():
        assert (
            OrtCascade(report_files(report), cascade.threshold, 1).route(x)[1].tolist() == cascade.route(x)[1].tolist()
        )
    moved = tmp_path / "moved"  # cascade.json names its members relative to itself: a folder moved whole loads
    shutil.copytree(out, moved / "cascade")
    for member in (small, big):
        shutil.copy(member, moved / member.name)
    assert [m["checkpoint"] for m in json.loads((out / "cascade.json").read_text())["members"]] == [
        "../small.pt",
        "../big.pt",
    ]
    assert [Path(m["checkpoint"]) for m in load_cascade(moved / "cascade/cascade.json")[1]["members"]] == [
        moved / "small.pt",
        moved / "big.pt",
    ]
    small.write_bytes(small.read_bytes() + b"\0")  # a member changed since calibration
    with pytest.raises(CheckpointError, match="calibrate again"):
        load_cascade(out / "cascade.json")
    small.unlink()
    with pytest.raises(CheckpointError, match="small.pt is not there"):
        load_cascade(out / "cascade.json")
    with pytest.raises(CheckpointError, match="not a cascade.json"):
        load_cascade(out / "result.json")  # the other file of the folder, given by mistake


def test_members_of_other_data_are_refused_in_one_line(members, tmp_path, capsys):
    args = [str(members[0]), str(members[2]), "--target-macs", "0.45", "--out", str(tmp_path / "c")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert "was trained on other data" in err and "val_size" in err and len(err.splitlines()) == 1
    assert not (tmp_path / "c" / "cascade.json").exists()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["one.pt", "--target-macs", "0.5"], "2 or more member checkpoints"),
        (["a.pt", "b.pt"], "--target-macs is required"),
        (["a.pt", "b.pt", "--target-macs", "1.5"], "--target-macs must be in (0, 1]"),
        (["missing.pt", "other.pt", "--target-macs", "0.5"], "missing.pt: no such checkpoint"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args, says, tmp_path, capsys):
    try:  # a flag's mistake stops in the parser (SystemExit), a file's in the run (the return code)
        code = main([*args, "--out", str(tmp_path / "c")])
    except SystemExit as stop:
        code = stop.code
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert says in err and len(err.splitlines()) == 1


def test_members_of_different_models_count_their_macs_over_the_largest_dense_model(members, tmp_path):
    shallow = tmp_path / "shallow"  # another model of the same data: LeNet-5 at half width, dense
    run_training(tiny_config(shallow, epochs=1, width=0.5))
    out = tmp_path / "cascade"
    assert main([str(members[1]), str(shallow / "checkpoint.pt"), "--target-macs", "0.6", "--out", str(out)]) == 0
    result = json.loads((out / "result.json").read_text())
    big = json.loads((members[1].parent / "result.json").read_text())
    full, half = big["macs_dense"], json.loads((shallow / "result.json").read_text())["macs"]
    assert half < full  # the two runs' own counts: the half-width model's MACs, the full one's dense MACs
    assert result["member_macs"] == pytest.approx([half / full, big["macs_ratio"]])  # over the larger dense model
    assert result["macs_dense"] == full and result["val_macs_ratio"] <= 0.6 + 1e-9
    cascade, spec = load_cascade(out / "cascade.json")  # rebuilt with the MACs it was calibrated with
    assert [m["macs_ratio"] for m in spec["members"]] == result["member_macs"]
    assert len(cascade.members) == 2 and cascade.threshold == result["threshold"]
