"""Attributions for a linear probe on a frozen encoder: Integrated Gradients, Occlusion, Grad-CAM.

A probe's AUPRC says *whether* a finding is readable; an attribution says *from where*. If the
"effusion" probe lights up the costophrenic angle, the encoder encodes the right thing; if it
lights up a corner, it found a shortcut. captum is imported lazily inside each function.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from radjepa_lab.analysis.probes import LinearProbe
from radjepa_lab.data.transforms import as_image_batch
from radjepa_lab.errors import RadJEPALabError

__all__ = [
    "ProbeModel",
    "integrated_gradients",
    "occlusion",
    "probe_module",
    "token_gradcam",
]


class _TokenGrid(nn.Module):
    """Identity layer whose output is the patch tokens as a ``[B, D, gh, gw]`` feature map.

    It exists so captum's ``LayerGradCam`` can hook the tokens as if they were a CNN layer.
    """

    def forward(self, g: torch.Tensor) -> torch.Tensor:
        return g


class ProbeModel(nn.Module):
    """encoder -> pooled features -> standardisation -> linear probe, as one differentiable module.

    Output: one logit per class ``[B, F]``. The sklearn probe's scaler and weights are folded
    into a ``nn.Linear``, so ``sigmoid(model(x))`` equals ``probe.predict_scores(features)``.
    """

    def __init__(self, encoder: nn.Module, probe: LinearProbe, pool: str = "mean") -> None:
        super().__init__()
        if pool not in ("mean", "2x2"):
            raise RadJEPALabError(f"ProbeModel: pool must be 'mean' or '2x2', got {pool!r}")
        self.encoder = encoder
        self.pool = pool
        self.token_grid = _TokenGrid()
        mu = probe.scaler.mean_
        sd = probe.scaler.scale_
        w = np.zeros((len(probe.models), len(mu)))
        b = np.zeros(len(probe.models))
        for j, m in enumerate(probe.models):
            if m is None:
                c = min(max(probe.constant[j], 1e-6), 1 - 1e-6)
                b[j] = np.log(c / (1 - c))
            else:
                w[j] = m.coef_[0] / sd
                b[j] = m.intercept_[0] - (m.coef_[0] * mu / sd).sum()
        self.linear = nn.Linear(len(mu), len(probe.models))
        with torch.no_grad():
            self.linear.weight.copy_(torch.as_tensor(w, dtype=torch.float32))
            self.linear.bias.copy_(torch.as_tensor(b, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.encoder(x)  # [B, N, D]
        gh, gw = self.encoder.grid_size(x.shape[-2], x.shape[-1])
        g = self.token_grid(tokens.transpose(1, 2).reshape(len(x), -1, gh, gw))
        if self.pool == "mean":
            f = g.mean(dim=(2, 3))
        else:
            f = F.adaptive_avg_pool2d(g, 2).reshape(len(x), -1)
        return self.linear(f)


def probe_module(encoder: nn.Module, probe: LinearProbe, pool: str = "mean") -> ProbeModel:
    """Wrap ``encoder`` + pooling + a fitted :class:`LinearProbe` as one ``nn.Module`` (eval mode)."""
    return ProbeModel(encoder, probe, pool).eval()


def _x(model: nn.Module, image: np.ndarray | torch.Tensor) -> torch.Tensor:
    return as_image_batch(image, single=False).to(next(model.parameters()).device)


def integrated_gradients(
    model: nn.Module,
    image: np.ndarray | torch.Tensor,
    target: int,
    baseline: float | np.ndarray = 0.0,
    n_steps: int = 32,
) -> np.ndarray:
    """Integrated Gradients ``[H, W]`` of logit ``target`` w.r.t. the input pixels.

    The baseline defaults to a black image (0 = air in [0, 1] X-rays); attributions then add up
    to ``logit(image) - logit(baseline)`` (captum's completeness property).
    """
    from captum.attr import IntegratedGradients

    x = _x(model, image)
    base = torch.as_tensor(np.broadcast_to(baseline, x.shape[-2:]).copy(), dtype=torch.float32)
    base = base.to(x.device).expand_as(x)
    ig = IntegratedGradients(model)
    a = ig.attribute(x, baselines=base, target=int(target), n_steps=n_steps)
    return a[0].sum(0).detach().cpu().numpy()


def occlusion(
    model: nn.Module,
    image: np.ndarray | torch.Tensor,
    target: int,
    window: int = 8,
    stride: int = 4,
    fill: float = 0.0,
) -> np.ndarray:
    """Occlusion ``[H, W]``: drop in logit ``target`` when a ``window`` square is set to ``fill``."""
    from captum.attr import Occlusion

    x = _x(model, image)
    occ = Occlusion(model)
    a = occ.attribute(
        x,
        sliding_window_shapes=(x.shape[1], window, window),
        strides=(x.shape[1], stride, stride),
        baselines=fill,
        target=int(target),
    )
    return a[0].sum(0).detach().cpu().numpy()


def token_gradcam(
    model: ProbeModel, image: np.ndarray | torch.Tensor, target: int, relu: bool = True
) -> np.ndarray:
    """Grad-CAM ``[gh, gw]`` on the patch-token grid (captum ``LayerGradCam``).

    Channel weights are the spatially averaged gradients of the logit w.r.t. the tokens; the map
    is their weighted sum per patch (ReLU'd by default, i.e. evidence *for* the class).
    """
    from captum.attr import LayerGradCam

    if not isinstance(model, ProbeModel):
        raise RadJEPALabError("token_gradcam: pass a ProbeModel (see probe_module)")
    x = _x(model, image)
    gc = LayerGradCam(model, model.token_grid)
    a = gc.attribute(x, target=int(target), relu_attributions=relu)
    return a[0, 0].detach().cpu().numpy()
