"""torchrun: 2 gloo processes on the CPU train as one process would, keep identical weights, and resume."""

from __future__ import annotations

import fcntl
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import DATA_FLAGS, REPO, run_module

from dynprune.checkpoints import load_checkpoint

# LeNet-5 has no BatchNorm: 2 ranks x 32 images must then give exactly the gradients of one process x 64.
LENET = (*DATA_FLAGS, "--model", "lenet5", "--train-subset", "512", "--val-size", "500")
LENET += ("--batch-size", "64", "--lr", "0.05")
QUIET = ("--wandb", "disabled", "--no-latency", "--threads", "1")


@pytest.fixture(autouse=True)
def one_torchrun_at_a_time(tmp_path_factory):
    """The xdist workers take turns here: two torchrun jobs at once compete for rendezvous ports and both cores."""
    lock = tmp_path_factory.getbasetemp().parent / "torchrun.lock"  # shared by every worker of this session
    with open(lock, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield


def torchrun(*args: str, nproc: int = 2) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", *args]


def run_torchrun(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    cmd = torchrun("-m", "dynprune.train", *args)
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)


def metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_two_gloo_ranks_train_like_one_process_on_the_global_batch(tmp_path):
    one = run_module("dynprune.train", *LENET, *QUIET, "--epochs", "2", "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr[-2000:]
    two = run_torchrun(*LENET, *QUIET, "--epochs", "2", "--out", str(tmp_path / "two"))
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("test top1") == 1  # rank 0 alone reports

    result = json.loads((tmp_path / "two/result.json").read_text())
    assert result["distributed"]["world_size"] == 2 and result["distributed"]["backend"] == "gloo"
    assert result["distributed"]["max_weight_diff"] == 0.0  # both ranks hold identical weights
    for a, b in zip(metrics(tmp_path / "one"), metrics(tmp_path / "two"), strict=True):
        assert abs(a["train_loss"] - b["train_loss"]) < 1e-4 * a["train_loss"], (a, b)
        assert a["val_acc"] == b["val_acc"]
    single = load_checkpoint(tmp_path / "one/checkpoint.pt")["model"]
    distributed = load_checkpoint(tmp_path / "two/checkpoint.pt")["model"]
    for key, value in single.items():
        assert torch.allclose(value, distributed[key], atol=1e-5), key
    assert not (tmp_path / "two" / "wandb").exists()


@pytest.mark.slow
def test_gated_distributed_run_resumes_after_interrupt(tmp_path):
    """Gates' budget on the global batch, stopped after an epoch by Ctrl-C, continued with --resume."""
    out = tmp_path / "gated"
    args = ("--model", "resnet20", "--width", "0.5", "--gate", "ste", "--target-macs", "0.6", "--epochs", "2")
    # the synthetic set: its 1,000 test images keep the two end phases (calibration, test pass) short
    args += ("--train-subset", "512", "--val-size", "500", "--batch-size", "64", *QUIET, "--dataset", "synthetic")
    args += ("--out", str(out))
    proc = subprocess.Popen(
        torchrun("-m", "dynprune.train", *args),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while not (out / "checkpoint.pt").is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C reaches torchrun and both ranks
    proc.communicate(timeout=120)
    stopped_at = load_checkpoint(out / "checkpoint.pt")["epoch"]
    assert stopped_at == 1 and not (out / "result.json").exists()

    resumed = run_torchrun(*args, "--resume")
    # a rank's own error comes before torchrun's summary: keep both ends of stderr in the message
    assert resumed.returncode == 0, resumed.stderr[:6000] + "\n...\n" + resumed.stderr[-3000:]
    assert f"resumed {out} after epoch 1/2" in resumed.stdout
    rows = metrics(out)
    assert [r["epoch"] for r in rows][-1] == 2 and len({r["epoch"] for r in rows}) == 2
    result = json.loads((out / "result.json").read_text())
    assert result["distributed"]["max_weight_diff"] == 0.0
    assert abs(result["macs_ratio"] - 0.6) < 0.02  # the budget holds (calibrated on the validation split)


@pytest.mark.slow
def test_batch_that_does_not_split_over_the_ranks_is_refused(tmp_path):
    proc = run_torchrun(*LENET[:-4], "--batch-size", "63", *QUIET, "--epochs", "1", "--out", str(tmp_path / "x"))
    assert proc.returncode != 0
    assert "--batch-size 63 must be divisible by the 2 torchrun processes" in proc.stderr


def test_sync_bn_on_cpu_is_a_clear_error(tmp_path):
    proc = run_module("dynprune.train", *LENET, *QUIET, "--sync-bn", "--device", "cpu", "--out", str(tmp_path / "x"))
    assert proc.returncode == 2 and "--sync-bn needs CUDA" in proc.stderr


@pytest.mark.slow
def test_ddp_benchmark_times_one_and_two_processes(tmp_path):
    out = tmp_path / "ddp.json"
    args = ("ddp", *DATA_FLAGS, "--model", "lenet5", "--train-subset", "256", "--batch-size", "64", "--epochs", "1")
    proc = run_module("dynprune.bench", *args, "--procs", "1,2", "--json", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads(out.read_text())
    assert [r["procs"] for r in rows] == [1, 2] and rows[0]["speedup"] == 1.0
    assert all(r["images_per_s"] > 0 and r["threads_per_proc"] >= 1 for r in rows)
    assert "images/s" in proc.stdout


def test_a_failed_ddp_benchmark_says_the_trainings_own_reason():
    """torchrun's summary after a rank's error line: the tail used to show only the summary."""
    from dynprune.bench.ddp import failure_reason

    stderr = (
        "W1206 setting OMP_NUM_THREADS\n"
        "python -m dynprune.train: error: --batch-size 64 must be divisible by the 3 torchrun processes\n"
        + "torch.distributed.elastic.multiprocessing.errors.ChildFailedError: \n"
        * 80
    )
    assert failure_reason(stderr) == "--batch-size 64 must be divisible by the 3 torchrun processes"
    assert failure_reason("Killed\n").strip() == "Killed"


def test_a_rank_that_died_is_one_line_on_the_survivors(tmp_path, capsys, monkeypatch):
    """A survivor's collective fails when a peer is killed (gloo: "Connection closed by peer"): one line that
    says a process stopped and where the last checkpoint is, not the backend's traceback."""
    import torch.distributed as dist

    from dynprune import train

    def peer_gone(cfg):
        (cfg.run_dir / "checkpoint.pt").parent.mkdir(parents=True, exist_ok=True)
        (cfg.run_dir / "checkpoint.pt").write_bytes(b"an epoch")
        raise dist.DistBackendError("[../gloo/transport/tcp/pair.cc:534] Connection closed by peer [127.0.0.1]:4711")

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setattr(train, "run_training", peer_gone)
    out = tmp_path / "run"
    code = train.main(["--model", "lenet5", "--dataset", "synthetic", "--wandb", "disabled", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1, err
    assert "another torchrun process stopped (" in err[0] and "Connection closed by peer" in err[0]
    assert f"saved in {out / 'checkpoint.pt'} (continue with --resume)" in err[0]
    monkeypatch.setenv("WORLD_SIZE", "1")  # outside torchrun the same error is not a peer's: it propagates
    with pytest.raises(dist.DistBackendError):
        train.main(["--model", "lenet5", "--dataset", "synthetic", "--wandb", "disabled", "--out", str(out)])
