from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import REPO, run_module, tiny_config, train_main

from dynprune.catalog import option_groups, parse_train_cli, rebuild_from_checkpoint, train_config
from dynprune.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from dynprune.config import ConfigError, TrainConfig, load_yaml, to_dict
from dynprune.data import data_of_checkpoint
from dynprune.engine import FINAL_RESULT, Trainer, TrainingDiverged
from dynprune.runner import run_training


def tiny(tmp_path: Path, **kw) -> TrainConfig:
    out = kw.pop("out", tmp_path / "run")
    return tiny_config(out, **kw)


def cli(*args: str, timeout: int = 300, **popen) -> subprocess.CompletedProcess:
    return run_module("dynprune.train", *args, timeout=timeout, cwd=popen.get("cwd", REPO))


def test_smoke_cli_writes_run_folder(tmp_path, data_flags):
    out = tmp_path / "smoke"
    proc = cli(
        "--model",
        "resnet20",
        "--width",
        "0.5",
        "--epochs",
        "1",
        "--train-subset",
        "2048",
        "--val-size",
        "1000",
        "--batch-size",
        "64",
        "--threads",
        "1",  # one per test, as conftest sets (two threads beside the other xdist worker only contend)
        "--out",
        str(out),
        "--wandb",
        "disabled",
        *data_flags,
    )
    assert proc.returncode == 0, proc.stderr
    for name in ("config.yaml", "checkpoint.pt", "metrics.jsonl", "result.json"):
        assert (out / name).is_file(), name
    result = json.loads((out / "result.json").read_text())
    for key in (
        "method",
        "model",
        "dataset",
        "top1",
        "macs",
        "macs_dense",
        "macs_ratio",
        "params",
        "latency_ms",
        "seed",
        "epochs",
        "train_seconds",
    ):
        assert key in result, key
    assert result["dataset"] == data_flags[1] and result["method"] == "dense"
    assert 10.0 < result["top1"] <= 100.0  # one short epoch on real data beats chance
    assert result["macs"] == result["macs_dense"] and result["macs_ratio"] == 1.0
    assert result["latency_ms"]["b1"] > 0 and result["latency_ms"]["b64"] > 0  # no order: a busy machine may swap it
    assert "test top1" in proc.stdout


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--model", "resnet21"], "--model got 'resnet21'; known: lenet5"),
        (["--epochs", "-1"], "--epochs must be > 0"),
        (["--epochs", "two"], "--epochs expects int, got 'two'"),
        (["--schedule", "linear"], "allowed: onecycle, cosine"),
        (["--wandb", "maybe"], "allowed: offline, online, disabled"),
        (["--dataset", "imagenet"], "--dataset got 'imagenet'; known:"),
        (["--no-such-flag"], "unrecognized arguments: --no-such-flag"),
        (["--init", "/nonexistent.pt"], "--init /nonexistent.pt: no such checkpoint file"),
    ],
)
def test_bad_cli_values_give_one_line_and_exit_2(capsys, args, needle):
    code, stderr = train_main(args, capsys)  # in this process: the smoke test above runs the shell path
    assert code == 2
    assert needle in stderr
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1


def test_yaml_preset_then_flags_override(tmp_path, capsys):
    preset = tmp_path / "p.yaml"
    preset.write_text("model: vgg11\nepochs: 3\nlr: 0.01\n")

    cfg = parse_train_cli(["--config", str(preset), "--epochs", "7"], "t", "")
    assert (cfg.model, cfg.epochs, cfg.lr) == ("vgg11", 7, 0.01)
    preset.write_text("modle: vgg11\n")
    code, stderr = train_main(["--config", str(preset)], capsys)  # main() in this process, as below
    assert code == 2 and "unknown key 'modle'" in stderr, stderr


def test_the_cli_records_which_values_the_user_chose(tmp_path):
    assert parse_train_cli(["--gate", "gumbel"], "t", "").given == {"gate"}  # not the recipe's nor the defaults
    preset = tmp_path / "p.yaml"
    preset.write_text("dataset: fashion-mnist\nepochs: 3\n")
    cfg = parse_train_cli(["--config", str(preset), "--no-latency"], "t", "")
    assert cfg.given == {"dataset", "epochs", "latency"}
    assert train_config(to_dict(cfg)).given is None  # from values (config.yaml, a comparison's cell): all chosen
    assert "given" not in to_dict(cfg)  # never written to config.yaml


def test_shipped_presets_parse():

    presets = sorted((REPO / "configs" / "train").glob("*.yaml"))
    assert presets
    for path in presets:
        train_config(load_yaml(TrainConfig, path, option_groups()))


def test_resume_ends_with_same_weights(tmp_path, monkeypatch):
    straight = run_training(tiny(tmp_path / "a"))
    full = load_checkpoint(tmp_path / "a" / "run" / "checkpoint.pt")

    original_save = Trainer.save

    def save_then_interrupt(self, sync: bool = True):
        original_save(self, sync)
        raise KeyboardInterrupt

    monkeypatch.setattr(Trainer, "save", save_then_interrupt)
    with pytest.raises(KeyboardInterrupt):
        run_training(tiny(tmp_path / "b"))
    monkeypatch.setattr(Trainer, "save", original_save)
    assert load_checkpoint(tmp_path / "b" / "run" / "checkpoint.pt")["epoch"] == 1
    resumed = run_training(tiny(tmp_path / "b", resume=True))
    again = load_checkpoint(tmp_path / "b" / "run" / "checkpoint.pt")
    assert again["epoch"] == 2
    rows = (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in rows] == [1, 2]  # one row per epoch across the interruption
    for key, value in full["model"].items():
        assert torch.equal(value, again["model"][key]), key
    assert resumed["top1"] == straight["top1"]


def test_existing_run_is_not_overwritten(tmp_path):
    run_training(tiny(tmp_path, epochs=1))
    with pytest.raises(ConfigError, match="already holds a run; pass --resume"):
        run_training(tiny(tmp_path, epochs=1))


def test_nan_loss_stops_with_clear_error(tmp_path):
    with pytest.raises(TrainingDiverged, match="loss became nan"):
        run_training(tiny(tmp_path, lr=1e6, epochs=2, label_smoothing=0.0))


def test_checkpoint_of_another_model_is_refused(tmp_path, capsys):
    run_training(tiny(tmp_path, epochs=1))
    ckpt = str(tmp_path / "run" / "checkpoint.pt")
    with pytest.raises(CheckpointError, match="made for .*lenet5.*but this run is .*resnet20"):
        run_training(tiny(tmp_path, model="resnet20", init=ckpt, out=str(tmp_path / "other")))
    args = ["--model", "resnet20", "--dataset", "synthetic", "--init", ckpt, "--out", str(tmp_path / "x")]
    code, stderr = train_main(args, capsys)  # the CLI's main() in this process (the smoke run is its shell path)
    assert code == 2 and "made for" in stderr and "Traceback" not in stderr, stderr


def test_pickled_code_in_a_checkpoint_is_not_executed(tmp_path):
    evil = tmp_path / "evil.pt"
    torch.save({"model": {}, "payload": os.system}, evil)  # a function reference is code, not data
    with pytest.raises(CheckpointError, match="not a loadable dynprune checkpoint"):
        load_checkpoint(evil)


def test_ctrl_c_leaves_loadable_checkpoint(tmp_path):
    out = tmp_path / "sigint"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dynprune.train",
            "--model",
            "lenet5",
            "--dataset",
            "synthetic",
            "--epochs",
            "500",
            "--out",
            str(out),
            "--wandb",
            "disabled",
            "--latency",
            "--threads",
            "1",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists() and time.time() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "continue with --resume" in err
    ckpt = load_checkpoint(out / "checkpoint.pt")
    assert ckpt["epoch"] >= 1 and ckpt["arch"]["model"] == "lenet5"


def test_wandb_offline_writes_run_folder(tmp_path):
    pytest.importorskip("wandb")
    run_training(tiny(tmp_path, epochs=1, wandb="offline"))
    runs = list((tmp_path / "run" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert any(p.suffix == ".wandb" for p in runs[0].iterdir())


@pytest.mark.parametrize("preset", sorted((REPO / "configs/train").glob("*.yaml")), ids=lambda p: p.name)
def test_every_training_preset_parses_through_the_cli(preset):
    cfg = parse_train_cli(["--config", str(preset)], "preset", "")
    assert cfg.model and to_dict(cfg)["target_macs"] > 0


# ------------------------------------------------------------------ the README's main command on a fresh machine
MAIN = ("--gate", "gumbel")  # the README's main command: python -m dynprune.train --gate gumbel
SHORT = ("--epochs", "1", "--train-subset", "512", "--val-size", "1000", "--no-latency", "--wandb", "disabled")
SHORT += ("--threads", "1", "--no-measure-dynamism")  # its three extra passes are test_dynamism's; here seconds


@pytest.fixture
def offline(tmp_path):
    """Run ``python -m dynprune.train ARGS`` as a new user would on a fresh clone without network: in an empty
    folder (no ./data), no $DYNPRUNE_DATA, this checkout importable, and every download refused at once: the
    proxy is a local port this test holds bound but never listening (no timeout, no real network involved)."""
    work = tmp_path / "fresh"
    work.mkdir()
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        proxy = f"http://127.0.0.1:{closed.getsockname()[1]}"
        hidden = {"DYNPRUNE_DATA", "no_proxy", "NO_PROXY"}
        env = {k: v for k, v in os.environ.items() if k not in hidden}
        env.update(
            http_proxy=proxy,
            https_proxy=proxy,
            PYTHONUNBUFFERED="1",
            PYTHONPATH=os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p),
        )

        def run(*args: str, merged: bool = False) -> subprocess.CompletedProcess:
            """``merged``: stderr into stdout, in the order written (PYTHONUNBUFFERED)."""
            cmd = [sys.executable, "-m", "dynprune.train", *args]
            err = subprocess.STDOUT if merged else subprocess.PIPE
            return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=err, text=True, timeout=300, cwd=work, env=env)

        yield work, run


@pytest.mark.slow  # two trainings in a row (the run, then its resume)
def test_main_command_without_data_or_network_trains_on_the_shipped_sample(offline):
    work, run = offline
    proc = run(*MAIN, *SHORT, merged=True)
    assert proc.returncode == 0, proc.stdout
    notes = [line for line in proc.stdout.splitlines() if "note:" in line]
    assert len(notes) == 1, proc.stdout  # said once, in one line, before training
    assert notes[0].startswith("note: no fashion-mnist files in data/fashion-mnist and ")
    assert "download failed" in notes[0] and "this run trains on fashion-mnist-sample" in notes[0]
    assert "put its files in data/fashion-mnist" in notes[0]  # how to get the full data set
    assert proc.stdout.index(notes[0]) < proc.stdout.index("epoch   1/1")
    run_dir = work / "runs" / "gumbel"
    result = json.loads((run_dir / "result.json").read_text())
    assert (result["dataset"], result["method"], result["epochs"]) == ("fashion-mnist-sample", "gumbel", 1)
    saved = load_yaml(TrainConfig, run_dir / "config.yaml", option_groups())
    assert saved["dataset"] == "fashion-mnist-sample" and saved["gate"] == "gumbel"
    assert sorted(p.name for p in work.iterdir()) == ["runs"]  # the failed download left no data/ folder
    # The run's checkpoint rebuilds on the data it recorded, the sample, with no lookup of the full files.
    _, method, ckpt = rebuild_from_checkpoint(run_dir / "checkpoint.pt")
    assert method.name == "gumbel" and ckpt["config"]["dataset"] == "fashion-mnist-sample"
    assert data_of_checkpoint(ckpt).name == "fashion-mnist-sample"
    # --resume as the interrupt message says (flags repeated, no --out): it continues on the recorded sample
    # without trying the full files again (with --out, config.yaml is the preset: test_trust's resume test)
    _as_if_stopped_in_its_end(run_dir)
    proc = run(*MAIN, *SHORT, "--resume")
    assert proc.returncode == 0, proc.stderr
    assert "note:" not in proc.stderr and "resumed runs/gumbel after epoch 1/1" in proc.stdout
    assert json.loads((run_dir / "result.json").read_text())["dataset"] == "fashion-mnist-sample"


def _as_if_stopped_in_its_end(run_dir: Path) -> None:
    """The run folder of a run stopped in its end phase: the last epoch's checkpoint, no result yet."""
    ckpt = load_checkpoint(run_dir / "checkpoint.pt")
    ckpt.pop(FINAL_RESULT)
    save_checkpoint(run_dir / "checkpoint.pt", ckpt)
    (run_dir / "result.json").unlink()


@pytest.mark.parametrize("how", ["flag", "preset"])
def test_an_explicit_fashion_mnist_without_its_files_is_one_line_and_leaves_nothing(offline, how):
    work, run = offline
    args = ["--dataset", "fashion-mnist"]
    if how == "preset":
        (work.parent / "preset.yaml").write_text("dataset: fashion-mnist\n")
        args = ["--config", str(work.parent / "preset.yaml")]
    for out in ((), ("--out", "mine/run")):  # the default runs/gumbel, and a folder of the user's
        proc = run(*MAIN, *args, *SHORT, *out)
        assert proc.returncode == 2, proc.stderr
        assert proc.stderr.startswith("python -m dynprune.train: error: data set files not found in data/fashion")
        assert "download failed" in proc.stderr and "note:" not in proc.stderr  # no fallback not asked for
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
        assert list(work.iterdir()) == []  # neither runs/ nor mine/ nor data/
