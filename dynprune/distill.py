"""Knowledge distillation from a trained teacher, for every method that fine-tunes (``--distill CKPT``).

Loss = (1 - w) * task loss + w * T^2 * KL(softmax(teacher / T) || softmax(student / T)) (Hinton et al. 2015;
the T^2 keeps the soft term's gradients on the scale of the hard one). The teacher is any dynprune checkpoint,
rebuilt as its run trained it, in eval mode, its parameters frozen; it sees the same augmented batch as the
student. A teacher identical to the student gives a KL of exactly zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Distiller:
    def __init__(self, teacher: nn.Module, temperature: float, weight: float) -> None:
        self.teacher = teacher.eval()
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.temperature, self.weight = temperature, weight

    def to(self, device: torch.device, memory_format: torch.memory_format) -> Distiller:
        self.teacher = self.teacher.to(device, memory_format=memory_format)
        return self

    def kl(self, student_logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """T^2 * KL(teacher || student) at temperature T, mean over the batch."""
        with torch.no_grad():
            teacher_logits = self.teacher(x).float()
        t = self.temperature
        log_student = F.log_softmax(student_logits.float() / t, dim=1)
        log_teacher = F.log_softmax(teacher_logits / t, dim=1)
        return F.kl_div(log_student, log_teacher, log_target=True, reduction="batchmean") * t * t

    def loss(self, task_loss: torch.Tensor, student_logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return (1 - self.weight) * task_loss + self.weight * self.kl(student_logits, x)
