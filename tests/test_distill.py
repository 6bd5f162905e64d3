"""--distill: the loss is (1 - w) task + w T^2 KL(teacher || student), for every method that fine-tunes."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import TINY_RESNET, tiny_config

from dynprune.base import ConfigError
from dynprune.catalog import train_config
from dynprune.distill import Distiller
from dynprune.models import create_model
from dynprune.runner import run_training


def test_a_teacher_identical_to_the_student_gives_zero_kl():
    torch.manual_seed(0)
    student = create_model("resnet20", 3, 10, 32, width=0.5).eval()
    x = torch.randn(8, 3, 32, 32)
    distiller = Distiller(copy.deepcopy(student), temperature=4.0, weight=0.7)
    with torch.no_grad():
        assert distiller.kl(student(x), x).item() == pytest.approx(0.0, abs=1e-6)


def test_the_loss_mixes_task_loss_and_scaled_kl_as_specified():
    torch.manual_seed(0)
    teacher = create_model("lenet5", 1, 10, 28)
    x, student_logits, task = torch.randn(16, 1, 28, 28), torch.randn(16, 10), torch.tensor(1.7)
    t, w = 3.0, 0.25
    with torch.no_grad():
        p_teacher = F.softmax(teacher.eval()(x) / t, dim=1)
    q_student = F.softmax(student_logits / t, dim=1)
    kl = (p_teacher * (p_teacher.log() - q_student.log())).sum(dim=1).mean()
    got = Distiller(teacher, t, w).loss(task, student_logits, x)
    assert got.item() == pytest.approx((1 - w) * 1.7 + w * t * t * kl.item(), rel=1e-5)


@pytest.mark.slow
def test_distilled_fine_tune_from_the_dense_run(tmp_path):
    dense = tmp_path / "dense"
    run_training(tiny_config(dense, **TINY_RESNET, epochs=2, train_subset=1280))
    teacher = str(dense / "checkpoint.pt")
    values = dict(TINY_RESNET, epochs=2, train_subset=1280, prune="l1-filter", target_macs=0.5, init=teacher)
    plain = run_training(tiny_config(tmp_path / "plain", **values))
    distilled = run_training(tiny_config(tmp_path / "kd", **values, distill=teacher, distill_weight=0.9))
    assert distilled["top1"] > 25.0 and distilled["macs_ratio"] == pytest.approx(plain["macs_ratio"])
    assert distilled["top1"] != plain["top1"] or distilled["test_loss"] != plain["test_loss"]  # the loss changed


def test_bad_distill_settings_are_one_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="--distill-weight must be in"):
        train_config({"distill_weight": 1.5})
    with pytest.raises(ConfigError, match="--distill nowhere.pt: no such checkpoint file"):
        run_training(tiny_config(tmp_path, distill="nowhere.pt"))
