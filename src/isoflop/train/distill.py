"""Output-level knowledge distillation (Hinton et al. 2015), the regulariser of Lifelong-MoE (Chen et al. 2023):
the student's next-token distribution is pulled toward a fixed teacher's on the current data, which limits
forgetting of what the teacher knew.

    extra loss = weight * mean over tokens of KL(p_teacher || p_student)

It is exactly zero when the student equals the teacher, and never computed when the weight is 0.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from isoflop.train.spec import DistillConfig


def kl_to_teacher(teacher_logits_BTV: torch.Tensor, student_logits_BTV: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of KL(teacher || student), in float32 (nats). Padding rows past a vocabulary are
    compared too: both models give them (near) zero probability."""
    student_log_probs = F.log_softmax(student_logits_BTV.float().flatten(0, 1), dim=-1)
    teacher_log_probs = F.log_softmax(teacher_logits_BTV.float().flatten(0, 1), dim=-1)
    return F.kl_div(student_log_probs, teacher_log_probs, log_target=True, reduction="batchmean")


def distillation_loss(cfg: DistillConfig, teacher: nn.Module) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """The loop's extra-loss callback: weight * KL(teacher || student) on the same inputs."""
    teacher.eval().requires_grad_(False)

    def extra(inputs_BT: torch.Tensor, logits_BTV: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            teacher_logits_BTV = teacher(inputs_BT)
        if teacher_logits_BTV.shape != logits_BTV.shape:
            raise ValueError(f"teacher logits {tuple(teacher_logits_BTV.shape)} and student logits "
                             f"{tuple(logits_BTV.shape)} differ: distillation needs the same vocabulary")
        return cfg.weight * kl_to_teacher(teacher_logits_BTV, logits_BTV)

    return extra
