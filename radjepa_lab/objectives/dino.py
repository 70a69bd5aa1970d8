"""DINO-style self-distillation (Caron et al. 2021; DINOv2, the recipe of Rad-DINO), in the one
trainer of :mod:`radjepa_lab.train`.

Read top to bottom, this is one training step of DINO:

1. every image becomes 2 **global** crops and ``n_local`` smaller **local** crops
   (:func:`radjepa_lab.batches.multi_crop`; no flips: laterality matters on a chest X-ray;
   brightness/contrast jitter only when ``dino.jitter`` > 0);
2. the EMA **teacher** (encoder + head) sees the global crops only; its outputs are
   **centred** (minus a running mean, so no prototype can win every image) and **sharpened**
   (a low temperature, 0.04 -> 0.07 over the first 30 % of the run), giving a target
   distribution over the prototypes;
3. the **student** (the same encoder + head, trained) sees every crop; its softmax at
   temperature 0.1 must match the teacher's distribution of every *other* view: the cross
   entropy is averaged over all (teacher view, student view) pairs of different views;
4. AdamW step (the prototypes frozen for the first 1 % of the run), then the teacher moves
   towards the student with the EMA momentum of the I-JEPA schedule, and the centre moves
   towards this batch's mean teacher output.

The kit's encoders have no CLS token, so the head reads the **mean of the patch tokens**:
I-JEPA's image embedding and what every probe in the kit reads, so the three objectives are
compared on the same vector. Centering pulls the teacher away from one-hot collapse,
sharpening away from the uniform one; each alone collapses (exercise ``ex7``).

Borrowed: the head follows DINO's ``DINOHead`` (:class:`radjepa_lab.models.DINOHead`) and the
loss DINO's ``DINOLoss`` (facebookresearch/dino, Apache-2.0); lightly's ``DINOProjectionHead``
and ``DINOLoss`` are the same two pieces, but the training path must run with torch, timm and
numpy alone, so the few lines are adapted here rather than imported.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from radjepa_lab import distributed as D
from radjepa_lab.batches import MultiCrop
from radjepa_lab.config import TrainConfig
from radjepa_lab.models import DINOHead, VisionTransformer, build_dino_head, build_encoder
from radjepa_lab.train import Objective, ema_update, momentum_at

__all__ = [
    "DINO",
    "DINOLoss",
    "dino_cross_entropy",
    "teacher_probs",
    "teacher_temp_at",
]


def teacher_temp_at(step: int, cfg: TrainConfig) -> float:
    """DINO's teacher temperature: linear ``warmup_teacher_temp -> teacher_temp`` over the first
    ``teacher_temp_warmup`` of the run, then constant."""
    d = cfg.dino
    n = int(d.teacher_temp_warmup * cfg.steps)
    if step >= n:
        return d.teacher_temp
    return d.warmup_teacher_temp + (d.teacher_temp - d.warmup_teacher_temp) * step / n


def teacher_probs(logits: torch.Tensor, center: torch.Tensor, temp: float) -> torch.Tensor:
    """Centred and sharpened teacher distribution: ``softmax((logits - center) / temp)``."""
    return F.softmax((logits.float() - center) / temp, dim=-1)


def dino_cross_entropy(student: Sequence[torch.Tensor], teacher: Sequence[torch.Tensor],
                       student_temp: float) -> torch.Tensor:
    """Mean over every pair of different views of ``-sum(q_teacher * log p_student)``.

    ``teacher[i]`` are the teacher's probabilities for global view i, ``student[v]`` the
    student's logits for view v (the global views first, in the same order, then the local
    ones); pairs with ``v == i`` are skipped, as in DINO.
    """
    total, pairs = student[0].new_zeros((), dtype=torch.float32), 0
    for i, q in enumerate(teacher):
        for v, s in enumerate(student):
            if v == i:
                continue
            log_p = F.log_softmax(s.float() / student_temp, dim=-1)
            total = total + torch.sum(-q * log_p, dim=-1).mean()
            pairs += 1
    return total / pairs


class DINOLoss(nn.Module):
    """DINO's loss with its one piece of state, the teacher's centre (a buffer, saved with the
    run as ``dino_loss`` so a resumed run continues it)."""

    def __init__(self, out_dim: int, student_temp: float = 0.1,
                 center_momentum: float = 0.9) -> None:
        super().__init__()
        self.student_temp, self.center_momentum = student_temp, center_momentum
        self.register_buffer("center", torch.zeros(1, out_dim))

    def forward(self, student: Sequence[torch.Tensor], teacher_logits: Sequence[torch.Tensor],
                temp: float, info: D.DistInfo | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(loss, teacher probabilities of the first global view); updates the centre."""
        probs = [teacher_probs(t, self.center, temp) for t in teacher_logits]
        loss = dino_cross_entropy(student, probs, self.student_temp)
        self.update_center(torch.cat(list(teacher_logits)), info)
        return loss, probs[0]

    @torch.no_grad()
    def update_center(self, teacher_logits: torch.Tensor, info: D.DistInfo | None = None) -> None:
        """``center = m * center + (1 - m) * mean teacher logits`` (over every rank's batch)."""
        total = teacher_logits.float().sum(0, keepdim=True)
        n = torch.tensor(float(teacher_logits.shape[0]), device=total.device)
        if info is not None and info.enabled:
            torch.distributed.all_reduce(total)
            torch.distributed.all_reduce(n)
        m = self.center_momentum
        self.center.mul_(m).add_(total / n, alpha=1 - m)


class _Student(nn.Module):
    """Encoder + DINO head over the mean patch token; one forward for both crop sizes (as DINO's
    MultiCropWrapper), so DDP sees a single call per step."""

    def __init__(self, encoder: VisionTransformer, head: DINOHead) -> None:
        super().__init__()
        self.encoder, self.head = encoder, head

    def forward(self, globals_: torch.Tensor, locals_: torch.Tensor | None = None
                ) -> torch.Tensor:
        pooled = [self.encoder(globals_).mean(1)]
        if locals_ is not None:
            pooled.append(self.encoder(locals_).mean(1))
        return self.head(torch.cat(pooled))


class DINO(Objective):
    """Student and EMA teacher (each the kit encoder + a DINO head) and the loss of one step."""

    name, title = "dino", "DINO"

    def __init__(self, cfg: TrainConfig, device: torch.device,
                 info: D.DistInfo | None = None) -> None:
        super().__init__(cfg, device, info)
        self.encoder = build_encoder(cfg.model, init=cfg.model.encoder_init, seed=cfg.seed)
        self.head = build_dino_head(cfg.model, cfg.dino, seed=cfg.seed)
        student = _Student(self.encoder, self.head)
        self.teacher = copy.deepcopy(student).requires_grad_(False).eval().to(device)
        self.criterion = DINOLoss(cfg.dino.out_dim, cfg.dino.student_temp,
                                  cfg.dino.center_momentum).to(device)
        self._setup(student)
        self.networks = {"encoder": self.encoder, "dino_head": self.head,
                         "target_encoder": self.teacher.encoder,
                         "target_dino_head": self.teacher.head, "dino_loss": self.criterion}
        self.evaluated = self.teacher.encoder
        self._last: dict[str, float] = {}

    def loss(self, step: int, views: MultiCrop, masks: Any) -> torch.Tensor:
        b = views.n_images
        with torch.no_grad():
            t_logits = self.teacher(views.globals).chunk(2)
        s_logits = self.model(views.globals, views.locals).split(b)
        temp = teacher_temp_at(step, self.cfg)
        loss, q = self.criterion(s_logits, t_logits, temp, self.info)
        with torch.no_grad():  # what the monitors print: how peaked the teacher's targets are
            entropy = -(q * q.clamp_min(1e-12).log()).sum(-1).mean()
        self._last = {"teacher_temp": temp, "entropy": entropy}
        return loss

    def before_update(self, step: int) -> None:
        if step < int(self.cfg.dino.freeze_prototypes * self.cfg.steps):
            self.head.prototypes.grad = None  # DINO's freeze_last_layer: AdamW skips it

    def after_step(self, step: int) -> None:
        ema_update(self.teacher, self.online, momentum_at(step, self.cfg))

    def log_fields(self, views: MultiCrop, masks: Any) -> dict[str, Any]:
        """The teacher's temperature and the entropy of its targets (nats; ``log out_dim``
        means uniform targets, 0 one-hot), and the number of views per image."""
        out: dict[str, Any] = {"views": views.n_views}
        if self._last:
            out["teacher_temp"] = self._last["teacher_temp"]
            out["teacher_entropy"] = float(self._last["entropy"])
            out["teacher_entropy_max"] = math.log(self.cfg.dino.out_dim)
        return out
