"""The end of a run (calibration or channel removal, test pass, result.json) survives a stop at any point: a
rerun with --resume finishes it, with the figures an uninterrupted run writes."""

from __future__ import annotations

import json

import pytest
from helpers import TINY_RESNET, tiny_config

from dynprune import runner
from dynprune.checkpoints import load_checkpoint
from dynprune.engine import FINAL_RESULT

CASES = {
    "hard": dict(TINY_RESNET, prune="l1-filter", target_macs=0.5, hard=True),
    # gumbel: its temperature and noise anneal per step; the calibration moves the decisions onto the target
    "gumbel": dict(TINY_RESNET, gate="gumbel", target_macs=0.5),
}
COMPARED = ("top1", "macs_ratio", "params", "budget_calibration", "tau_final", "noise_final")


class Stop(KeyboardInterrupt):
    """A Ctrl-C aimed at one phase of the run."""


def _stop(*args, **kwargs):
    raise Stop


def _same(a: dict, b: dict) -> None:
    for key in COMPARED:
        assert _untimed(a.get(key)) == _untimed(b.get(key)), key


def _untimed(value):
    return {k: v for k, v in value.items() if k != "seconds"} if isinstance(value, dict) else value


@pytest.fixture(scope="module", params=sorted(CASES))
def uninterrupted(request, tmp_path_factory):
    out = tmp_path_factory.mktemp("whole") / "run"
    return request.param, runner.run_training(tiny_config(out, **CASES[request.param]))


def test_stopped_in_the_test_pass_the_rerun_redoes_the_end(tmp_path, monkeypatch, uninterrupted):
    name, whole = uninterrupted
    cfg = tiny_config(tmp_path / "run", **CASES[name])
    with monkeypatch.context() as patch:
        patch.setattr(runner, "_final_result", _stop)  # after calibration / channel removal, before the test pass
        with pytest.raises(Stop):
            runner.run_training(cfg)
    assert FINAL_RESULT not in load_checkpoint(tmp_path / "run" / "checkpoint.pt")  # the last epoch's, as trained
    again = runner.run_training(tiny_config(tmp_path / "run", **CASES[name], resume=True))
    _same(again, whole)
    assert json.loads((tmp_path / "run" / "result.json").read_text())["top1"] == whole["top1"]


def test_stopped_after_the_final_checkpoint_the_rerun_writes_its_result(tmp_path, monkeypatch, uninterrupted):
    name, whole = uninterrupted
    cfg = tiny_config(tmp_path / "run", **CASES[name])
    real_write = runner.write_json

    def stop_at_result(path, payload):
        if path.name == runner.RESULT:
            raise Stop
        real_write(path, payload)

    with monkeypatch.context() as patch:
        patch.setattr(runner, "write_json", stop_at_result)
        with pytest.raises(Stop):
            runner.run_training(cfg)
    assert not (tmp_path / "run" / "result.json").exists()
    again = runner.run_training(tiny_config(tmp_path / "run", **CASES[name], resume=True))
    _same(again, whole)
    assert json.loads((tmp_path / "run" / "result.json").read_text())["top1"] == whole["top1"]


def test_a_resume_that_would_run_another_config_is_one_line(tmp_path, monkeypatch):
    """config.yaml edited, missing or replaced by another --config: the checkpoint's own config decides."""
    from dynprune.config import ConfigError

    with monkeypatch.context() as patch:
        patch.setattr(runner, "_final_result", _stop)
        with pytest.raises(Stop):
            runner.run_training(tiny_config(tmp_path / "run", epochs=1))
    saved = (tmp_path / "run" / "config.yaml").read_bytes()
    with pytest.raises(ConfigError, match=r"was started with lr: 0\.05, this resume would run 0\.1"):
        runner.run_training(tiny_config(tmp_path / "run", epochs=1, lr=0.1, resume=True))
    assert (tmp_path / "run" / "config.yaml").read_bytes() == saved  # refused before anything was rewritten
    again = runner.run_training(tiny_config(tmp_path / "run", epochs=1, resume=True, threads=2))  # may differ
    assert again["epochs"] == 1


def test_torn_files_of_a_stopped_run_do_not_stop_its_resume(tmp_path, monkeypatch):
    """A metrics.jsonl row and a result.json cut short by a stop: the resume drops the one and redoes the other."""
    with monkeypatch.context() as patch:
        patch.setattr(runner, "_final_result", _stop)
        with pytest.raises(Stop):
            runner.run_training(tiny_config(tmp_path / "run", epochs=1))
    run = tmp_path / "run"
    with open(run / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 2, "train_lo')  # the next row, cut mid-write
    (run / "result.json").write_text('{"top1": 8')  # a result cut mid-write
    result = runner.run_training(tiny_config(run, epochs=1, resume=True))
    assert json.loads((run / "result.json").read_text())["top1"] == result["top1"]
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1]


def test_a_resume_with_another_process_count_is_one_line(tmp_path, monkeypatch):
    """A checkpoint saved by 2 torchrun processes, resumed by one (before: accepted, and result.json recorded
    the last count only)."""
    import torch

    from dynprune.checkpoints import CheckpointError, save_checkpoint

    with monkeypatch.context() as patch:
        patch.setattr(runner, "_final_result", _stop)
        with pytest.raises(Stop):
            runner.run_training(tiny_config(tmp_path / "run", epochs=1))
    path = tmp_path / "run" / "checkpoint.pt"
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["world_size"] == 1
    save_checkpoint(path, {**ckpt, "world_size": 2})
    with pytest.raises(CheckpointError, match=r"trained with 2 process\(es\), resumed with 1.*--nproc_per_node 2"):
        runner.run_training(tiny_config(tmp_path / "run", epochs=1, resume=True))
    save_checkpoint(path, ckpt)
    assert runner.run_training(tiny_config(tmp_path / "run", epochs=1, resume=True))["epochs"] == 1


@pytest.mark.parametrize("config_text", ["", "lr: [unclosed", None], ids=["empty", "torn", "missing"])
def test_a_resume_from_the_shell_with_an_empty_torn_or_missing_config_yaml_uses_the_checkpoints(
    tmp_path, monkeypatch, capsys, config_text
):
    """Before: an empty config.yaml resumed with the defaults and the scheduler crashed; a missing one made a
    6-epoch sample run continue for 9 epochs on other data."""
    from helpers import train_main

    run = tmp_path / "run"
    with monkeypatch.context() as patch:
        patch.setattr(runner, "_final_result", _stop)
        with pytest.raises(Stop):
            runner.run_training(tiny_config(run, epochs=1, lr=0.07))
    if config_text is None:
        (run / "config.yaml").unlink()
    else:
        (run / "config.yaml").write_text(config_text)
    code, err = train_main(["--resume", "--out", str(run)], capsys)
    assert code == 0, err[-1500:]
    result = json.loads((run / "result.json").read_text())
    assert result["epochs"] == 1 and result["dataset"] == "synthetic" and result["model"] == "lenet5"
