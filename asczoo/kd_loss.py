"""The knowledge-distillation loss (:mod:`asczoo.distill`), in a module of its own so that the engine
can use it without importing the teacher machinery (which imports the engine)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def distillation_loss(logits: torch.Tensor, teacher: torch.Tensor, hard: torch.Tensor, *, weight: float,
                      tau: float) -> torch.Tensor:
    """Per-sample ``(1 - weight) * hard + weight * tau^2 * KL(teacher_tau || student_tau)``."""
    log_student = F.log_softmax(logits.float() / tau, dim=-1)
    log_teacher = F.log_softmax(teacher.float() / tau, dim=-1)
    kl = (log_teacher.exp() * (log_teacher - log_student)).sum(-1)
    return (1.0 - weight) * hard + weight * tau * tau * kl
