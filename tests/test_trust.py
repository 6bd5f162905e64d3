"""Runs a user can trust: one run per folder, nothing rewritten by a refused or finished resume, clear lines."""

from __future__ import annotations

import dataclasses
import errno
import importlib
import json
import os
import re
import stat
import subprocess
import sys

import pytest
from helpers import DATA_FLAGS, run_module, tiny_config, train_main

from dynprune import checkpoints, engine
from dynprune.base import ConfigError
from dynprune.checkpoints import CheckpointError, save_checkpoint
from dynprune.engine import TrainingDiverged
from dynprune.runlock import LOCK, locked_run_folder
from dynprune.runner import run_training


def _hold(out, then: str) -> list[str]:
    """A command for another Python process that takes ``out``'s lock and then runs ``then``."""
    code = "import os, pathlib\nfrom dynprune.runlock import locked_run_folder\n"
    code += f"with locked_run_folder(pathlib.Path({str(out)!r})): {then}"
    return [sys.executable, "-c", code]


def test_a_second_run_in_a_held_folder_is_refused_and_a_dead_holders_lock_is_taken_over(tmp_path):
    out = tmp_path / "run"
    with locked_run_folder(out):
        holder = json.loads((out / LOCK).read_text())
        assert holder["pid"] == os.getpid()
        busy = rf"--out {out} is in use by another run \(pid {os.getpid()}"
        with pytest.raises(ConfigError, match=busy), locked_run_folder(out):  # flock: even from this process
            pass
        other = subprocess.run(_hold(out, "pass"), capture_output=True, text=True)  # a second train --out
        assert other.returncode != 0 and "is in use by another run" in other.stderr
    killed = subprocess.Popen(_hold(out, "os.kill(os.getpid(), 9)"))  # a holder killed with -9
    killed.wait()
    assert json.loads((out / LOCK).read_text())["pid"] == killed.pid  # its file stays, its flock died with it
    with locked_run_folder(out):
        assert json.loads((out / LOCK).read_text())["pid"] == os.getpid()
    assert not (out / LOCK).exists()  # released at the end


def test_a_refused_run_leaves_none_of_the_folders_it_created(tmp_path):
    out = tmp_path / "runs" / "gumbel"  # the default --out runs/<method>, in a fresh working folder
    with pytest.raises(ConfigError, match="refused"), locked_run_folder(out):
        assert (out / LOCK).is_file()
        raise ConfigError("refused before anything was written")
    assert list(tmp_path.iterdir()) == []  # neither runs/gumbel nor runs/
    (tmp_path / "runs" / "dense").mkdir(parents=True)  # runs/ was there before: it stays
    with pytest.raises(ConfigError), locked_run_folder(out):
        raise ConfigError("refused")
    assert [p.name for p in (tmp_path / "runs").iterdir()] == ["dense"]
    with locked_run_folder(out):  # a run that wrote something keeps its folder
        (out / "config.yaml").write_text("x: 1\n")
    assert sorted(p.name for p in out.iterdir()) == ["config.yaml"]


def test_finished_run_is_not_refinalized_by_resume(tmp_path):
    run_training(tiny_config(tmp_path / "run", epochs=1))
    before = (tmp_path / "run" / "result.json").read_bytes()
    again = run_training(tiny_config(tmp_path / "run", epochs=1, resume=True))
    assert (tmp_path / "run" / "result.json").read_bytes() == before
    assert again["top1"] == json.loads(before)["top1"]


def test_refused_resume_rewrites_nothing(tmp_path):
    run_training(tiny_config(tmp_path / "run", epochs=2))
    (tmp_path / "run" / "result.json").unlink()  # as if stopped before the end
    config = (tmp_path / "run" / "config.yaml").read_bytes()
    with pytest.raises(CheckpointError, match="a dense run cannot be resumed as ste"):
        run_training(tiny_config(tmp_path / "run", epochs=2, gate="ste", resume=True))
    assert (tmp_path / "run" / "config.yaml").read_bytes() == config


def test_divergence_in_the_first_epoch_says_no_checkpoint_exists(tmp_path):
    with pytest.raises(TrainingDiverged, match="no checkpoint was written yet"):
        run_training(tiny_config(tmp_path / "run", lr=1e6, label_smoothing=0.0))


def test_temp_files_of_a_killed_write_are_removed_by_the_next_holder(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".checkpoint.pt.abc123.tmp").write_bytes(b"half a checkpoint")  # what a kill -9 mid-write leaves
    (run / "notes.tmp").write_text("the user's")  # not one of ours: kept
    with locked_run_folder(run):
        assert sorted(p.name for p in run.iterdir()) == [LOCK, "notes.tmp"]


def test_a_non_finite_validation_loss_is_divergence(tmp_path, monkeypatch):
    """Weights blown up while the training loss is still finite (--lr 1e9 on a BN network) end the run."""
    real = engine.evaluate

    def blown_up(*args, **kwargs):
        return dataclasses.replace(real(*args, **kwargs), loss=float("inf"))

    monkeypatch.setattr(engine, "evaluate", blown_up)
    with pytest.raises(TrainingDiverged, match="validation loss became inf after epoch 1; no checkpoint was written"):
        run_training(tiny_config(tmp_path / "run"))
    assert not (tmp_path / "run" / "result.json").exists()


def test_checkpoints_are_as_readable_as_the_rest_of_the_run(tmp_path):
    run_training(tiny_config(tmp_path / "run", epochs=1))
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "run").iterdir() if p.is_file()}
    assert modes["checkpoint.pt"] == modes["result.json"] == modes["config.yaml"]


def test_full_disk_at_a_checkpoint_is_one_clear_error(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"model": {}, "epoch": 1})

    def full(*_args, **_kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(checkpoints, "atomic_write_bytes", full)
    with pytest.raises(CheckpointError, match=r"no space left on the device \(it needs .* MB\); the previous"):
        save_checkpoint(path, {"model": {}, "epoch": 2})


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("--lr", "nan"), "--lr must be a finite number, got 'nan'"),
        (("--out", "/proc/no/such/run"), "--out /proc/no/such/run: cannot write there"),
    ],
)
def test_bad_values_and_paths_are_one_line(capsys, args, needle):
    # train's main() in this process, as in the tests of one-line errors below (a subprocess per case only adds
    # interpreter start-up); test_every_cli_says_one_line_for_a_bad_path runs each CLI through ``python -m``
    code, stderr = train_main(["--dataset", "synthetic", *args], capsys)
    assert code == 2 and needle in stderr and "Traceback" not in stderr, stderr


def test_a_batch_larger_than_the_training_set_is_one_line_and_leaves_no_folder(tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--dataset", "synthetic", "--train-subset", "100", "--batch-size", "128"]
    code, stderr = train_main([*args, "--out", str(out)], capsys)  # main() in this process, as above
    assert code == 2 and "Traceback" not in stderr, stderr[-500:]
    assert "--batch-size 128 is more than the 100 training images" in stderr
    assert not out.exists()  # refused before anything was written: no empty run folder either


def test_out_naming_a_file_is_one_line(tmp_path, capsys):
    target = tmp_path / "a-file"
    target.write_text("not a folder")
    code, stderr = train_main(["--dataset", "synthetic", "--out", str(target)], capsys)  # in this process
    assert code == 2 and f"--out {target} is a file" in stderr and "Traceback" not in stderr, stderr


#: the module whose main() each ``python -m`` name runs, where they differ
MAINS = {
    "dynprune.compare": "dynprune.compare.__main__",
    "dynprune.prune": "dynprune.prune.__main__",
    "dynprune.bench": "dynprune.bench.__main__",
}


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("tiny") / "run"
    run_training(tiny_config(out, epochs=1))
    return str(out / "checkpoint.pt")


@pytest.mark.parametrize(
    "command",
    [
        ("dynprune.compare", *DATA_FLAGS, "--dry-run", "--out", "{file}/sub"),
        ("dynprune.prune", "sensitivity", "--init", "{ckpt}", "--wandb", "disabled", "--out", "{file}/sub"),
        ("agents.search", "--init", "{ckpt}", "--wandb", "disabled", "--out", "{file}"),
        ("dynprune.bench", "dynamic", "--models", "", "--checkpoint", "{ckpt}", "--json", "{file}/rows.json"),
        ("dynprune.bench", "pruned", "{ckpt}", "--json", "{file}/rows.json"),
        ("dynprune.bench", "ddp", "--json", "{file}/rows.json"),
        ("dynprune.export", "{ckpt}", "--onnx", "{file}/model.onnx"),
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_every_cli_refuses_an_output_path_through_a_file_before_its_work(tmp_path, capsys, tiny_checkpoint, command):
    # each CLI's main() in this process (its refusal is all in it; a subprocess per case only adds interpreter
    # start-up): test_every_cli_says_one_line_for_a_bad_path below runs each of them through ``python -m``
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    module, *argv = (a.format(file=blocker, ckpt=tiny_checkpoint) for a in command)
    try:
        code = importlib.import_module(MAINS.get(module, module)).main(argv)
    except SystemExit as exc:
        code = exc.code
    stderr = capsys.readouterr().err
    assert code == 2 and str(blocker) in stderr, stderr[-500:]
    assert "Traceback" not in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert blocker.read_text() == "not a folder"


def test_search_warmup_default_scales_with_a_short_search():
    from agents.config import SearchConfig
    from dynprune.config import build

    assert build(SearchConfig, {"init": "x.pt", "episodes": 4}).warmup_episodes == 1
    assert build(SearchConfig, {"init": "x.pt", "episodes": 400}).warmup_episodes == 50
    with pytest.raises(ConfigError, match="--warmup-episodes must be in"):
        build(SearchConfig, {"init": "x.pt", "episodes": 4, "warmup_episodes": 10})


@pytest.mark.parametrize(
    "command",
    [
        ("dynprune.train", "--wandb", "disabled", "--init"),
        ("dynprune.prune", "sensitivity", "--wandb", "disabled", "--init"),
        ("dynprune.compare", *DATA_FLAGS, "--wandb", "disabled", "--methods", "dense,l1-filter", "--dense"),
        ("dynprune.bench", "dynamic", "--models", "", "--checkpoint"),
        ("dynprune.bench", "pruned"),
        ("dynprune.export", "--onnx", "model.onnx"),
        ("agents.search", "--wandb", "disabled", "--init"),
    ],
    ids=lambda c: " ".join(c[:2]),
)
def test_every_cli_says_one_line_for_a_bad_path(tmp_path, command):
    missing = str(tmp_path / "missing.pt")
    proc = run_module(*command, missing, timeout=120)
    assert proc.returncode == 2, proc.stderr[-500:]
    assert missing in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_progress_lines_when_the_output_is_not_a_terminal(tmp_path):
    proc = run_module(
        "dynprune.train",
        *("--model", "lenet5", "--dataset", "synthetic", "--train-subset", "640", "--batch-size", "64"),
        *("--epochs", "2", "--val-size", "500", "--no-latency", "--wandb", "disabled", "--out", str(tmp_path / "r")),
        *("--threads", "1"),  # one per test, as conftest sets (two beside the other xdist worker only contend)
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-1000:]
    lines = [line for line in proc.stdout.splitlines() if "ETA" in line]
    assert len(lines) == 18  # every tenth of each of the 2 epochs of 10 steps
    assert lines[0].startswith("epoch 1/2   10% of 10 steps") and "img/s" in lines[0]
    assert lines[-1].startswith("epoch 2/2   90% of 10 steps")


def test_wandb_summary_holds_latency_calibration_and_the_calibrated_open_rates():
    from dynprune.runner import summary_values

    result = {
        "top1": 90.0,
        "latency_ms": {"b1": 2.5, "b64": 40.0, "device": "cpu"},
        "budget_calibration": {"logit_shift": -0.3, "val_macs_ratio_after": 0.5},
        "site_open_rates": {"layer1.0.conv1": 0.4},
        "hard": True,
    }
    assert summary_values(result) == {
        "final/top1": 90.0,
        "final/latency_ms/b1": 2.5,
        "final/latency_ms/b64": 40.0,
        "final/budget_calibration/logit_shift": -0.3,
        "final/budget_calibration/val_macs_ratio_after": 0.5,
        "final/open/layer1.0.conv1": 0.4,
    }


def test_resume_reads_the_runs_own_config_and_refuses_a_contradicting_flag(tmp_path):
    out = str(tmp_path / "run")
    common = ("--model", "lenet5", "--dataset", "synthetic", "--train-subset", "640", "--val-size", "500")
    first = run_module(
        "dynprune.train",
        *common,
        "--epochs",
        "2",
        "--lr",
        "0.05",
        "--wandb",
        "disabled",
        "--no-latency",
        "--threads",
        "1",  # one per test, as conftest sets (two beside the other xdist worker only contend)
        "--out",
        out,
        timeout=120,
    )
    assert first.returncode == 0, first.stderr[-500:]
    (tmp_path / "run" / "result.json").unlink()  # as if it had stopped before the end
    contradicting = run_module("dynprune.train", "--resume", "--out", out, "--lr", "0.1", timeout=120)
    assert contradicting.returncode == 2 and "--lr 0.1 contradicts the run's" in contradicting.stderr
    resumed = run_module("dynprune.train", "--resume", "--out", out, "--threads", "1", timeout=120)
    assert resumed.returncode == 0, resumed.stderr[-500:]
    assert json.loads((tmp_path / "run" / "result.json").read_text())["model"] == "lenet5"  # not the default


@pytest.mark.parametrize(
    ("yaml_text", "message"),
    [
        ("epochs: 2\nlr: 0.1\nepochs: 3\n", "key 'epochs' given twice"),  # the last would silently win
        ("width: true\n", "--width expects float, got True"),  # not the number 1.0
        ("threads: 1000\n", r"--threads must be in \[0, "),  # more threads than cores only thrash
    ],
)
def test_preset_values_that_would_mislead_are_one_line(tmp_path, capsys, yaml_text, message):
    preset = tmp_path / "p.yaml"
    preset.write_text(yaml_text)
    code, stderr = train_main(["--config", str(preset)], capsys)
    assert code == 2 and stderr.count("\n") == 1, stderr
    assert re.search(message, stderr), stderr


@pytest.mark.parametrize("field", ["methods", "targets", "seeds"])
def test_a_comparison_refuses_a_repeated_cell(tmp_path, field):
    from dynprune.compare.config import CompareConfig
    from dynprune.config import build

    values = {"methods": ["dense", "l1-filter", "dense"], "targets": [0.5, 0.5], "seeds": [0, 1, 0]}
    with pytest.raises(ConfigError, match=f"{field}: .* given more than once"):
        build(CompareConfig, {"out": str(tmp_path / "c"), field: values[field]})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--device", "cuda:-1"], "--device got 'cuda:-1'"),
        (["--gate", "ste", "--gate-bias-init=-1e300"], r"--gate-bias-init must be in \[-100, 100\]"),
    ],
)
def test_absurd_settings_are_one_line(capsys, args, message):
    code, stderr = train_main(args, capsys)
    assert code == 2 and stderr.count("\n") == 1 and re.search(message, stderr), stderr


def test_a_binary_config_file_is_one_line(tmp_path, capsys):
    preset = tmp_path / "p.yaml"
    preset.write_bytes(b"\x80\x81\x00\xff")
    code, stderr = train_main(["--config", str(preset)], capsys)
    assert code == 2 and "not a text file" in stderr and stderr.count("\n") == 1, stderr


def _bare_state_dict(tiny_checkpoint: str, tmp_path) -> str:
    import torch

    bare = tmp_path / "bare.pt"
    torch.save({"model": torch.load(tiny_checkpoint, weights_only=True)["model"]}, bare)
    return str(bare)


@pytest.mark.parametrize(
    ("module", "args"),
    [
        ("dynprune.export", ("{bare}", "--onnx", "{out}/m.onnx")),
        ("dynprune.bench.__main__", ("dynamic", "--checkpoint", "{bare}")),
        ("dynprune.bench.__main__", ("pruned", "{bare}")),
        (
            "dynprune.train",
            (
                "--model",
                "lenet5",
                "--dataset",
                "synthetic",
                "--distill",
                "{bare}",
                "--out",
                "{out}/r",
                "--wandb",
                "disabled",
            ),
        ),
        ("dynprune.prune.__main__", ("sensitivity", "--init", "{bare}", "--out", "{out}/s", "--wandb", "disabled")),
        ("agents.search", ("--init", "{bare}", "--out", "{out}/a", "--wandb", "disabled")),
    ],
    ids=lambda c: c if isinstance(c, str) else c[0],
)
def test_a_checkpoint_without_arch_is_one_line_in_every_tool(tmp_path, capsys, tiny_checkpoint, module, args):
    """A user's own ``{"model": state_dict}`` says what it lacks, in each tool that rebuilds a run's model
    (before: KeyError 'arch' tracebacks; bench dynamic timed the zoo for minutes first)."""
    import importlib

    bare = _bare_state_dict(tiny_checkpoint, tmp_path)
    argv = [a.format(bare=bare, out=tmp_path) for a in args]
    try:
        code = importlib.import_module(module).main(argv)
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1, err
    assert "no 'arch' entry" in err[0] and bare in err[0]


def test_a_checkpoint_with_a_mistyped_arch_is_one_line(tmp_path, tiny_checkpoint):
    import torch

    ckpt = torch.load(tiny_checkpoint, weights_only=True)
    ckpt["arch"]["num_classes"] = "ten"
    path = tmp_path / "edited.pt"
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match="num_classes='ten'"):
        checkpoints.load_checkpoint(path)


def test_a_soft_masked_static_run_exports_with_its_zeros(tmp_path):
    """``torch.nn.utils.prune`` masks are baked into the weights before folding (before: a deepcopy traceback)."""
    from dynprune.export import exportable

    out = tmp_path / "soft"
    run_training(tiny_config(out, epochs=1, prune="l1-filter", target_macs=0.5))
    module, reference, _ = exportable(str(out / "checkpoint.pt"))
    import torch

    x = torch.randn(4, 1, 28, 28)
    zero_filters = sum(
        int((m.weight.flatten(1).abs().sum(1) == 0).sum()) for m in module.modules() if isinstance(m, torch.nn.Conv2d)
    )
    assert zero_filters > 0  # the masked filters are in the exported weights as zeros
    torch.testing.assert_close(module(x), reference(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(
    ("module", "args"),
    [
        ("dynprune.export", ("{ckpt}", "--onnx", "/proc/model.onnx")),
        ("dynprune.bench.__main__", ("pruned", "{ckpt}", "--json", "/proc/rows.json")),
        ("dynprune.bench.__main__", ("dynamic", "--models", "", "--checkpoint", "{ckpt}", "--json", "/proc/r.json")),
    ],
    ids=lambda c: c if isinstance(c, str) else c[0],
)
def test_an_output_file_in_a_read_only_folder_is_refused_before_the_work(capsys, tiny_checkpoint, module, args):
    """/proc: a folder no one (root included) can create files in; before, the file was opened after the
    timing or export, and the work was lost in a traceback."""
    import importlib

    try:
        code = importlib.import_module(module).main([a.format(ckpt=tiny_checkpoint) for a in args])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot write in /proc" in err[0], err


def test_a_search_from_a_gated_checkpoint_is_one_line(tmp_path, capsys):
    from agents.search import main as search_main

    out = tmp_path / "gated"
    run_training(tiny_config(out, epochs=1, gate="topk", target_macs=0.5))
    try:
        code = search_main(["--init", str(out / "checkpoint.pt"), "--out", str(tmp_path / "s"), "--wandb", "disabled"])
    except SystemExit as exc:
        code = exc.code
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "a gated run's checkpoint" in err[0], err


def test_a_folder_made_read_only_mid_run_is_one_line_saying_the_checkpoint_is_intact(tmp_path, capsys, monkeypatch):
    """The first epoch's checkpoint is written; then every write fails as in a folder made read-only."""
    real = checkpoints.atomic_write_bytes
    calls = []

    def read_only_after_the_first(path, payload):
        calls.append(path)
        if len(calls) > 1:
            raise PermissionError(errno.EACCES, "Permission denied")
        real(path, payload)

    monkeypatch.setattr(checkpoints, "atomic_write_bytes", read_only_after_the_first)
    out = tmp_path / "run"
    tiny = ("--model", "lenet5", "--dataset", "synthetic", "--train-subset", "256", "--val-size", "128")
    args = [*tiny, "--no-latency", "--threads", "1", "--no-progress", "--epochs", "2", "--out", str(out)]
    code, err = train_main(args, capsys)
    lines = err.strip().splitlines()
    assert code != 0 and "Traceback" not in err, err[-800:]
    assert "Permission denied; the previous checkpoint.pt is intact" in lines[-1], lines
    assert checkpoints.load_checkpoint(out / "checkpoint.pt")["epoch"] == 1
