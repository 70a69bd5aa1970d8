"""Pretraining throughput and peak memory: RadJEPA Lab trainer vs lightly's I-JEPA.

Both sides use the same encoder (width, depth, heads, patch), predictor width/depth,
image size, batch and number of target blocks. Throughput: all variants live in one
process and take turns step by step (a shared machine's load swings hit them equally);
the median step time is kept. Peak memory: each variant alone in a fresh subprocess.
Achieved GFLOP/s uses the analytic model-FLOP count (backward = 2x forward) with each
variant's own mean context/target token counts, since the mask policies differ.

Variants
* ``kit``     : the kit trainer step (``train.JEPA.step`` on the trainer's cached batches
                and per-step masks) with the preset's masks.
* ``lightly`` : lightly's I-JEPA modules + IJEPAMaskCollator (same mask scales, its own
                truncate-to-batch-min policy, min_keep=4), wired as in lightly's
                examples/pytorch/ijepa.py, with a 1-channel conv stem.

The kit keeps more context per image by design (blocks reach the last row/column and the
full grid, ``min_keep`` is guaranteed, no truncation to a starved batch minimum), so it
does more FLOPs per image; compare images/s AND achieved FLOP/s.

Ratios printed: kit / lightly in images/s, in achieved FLOP/s and in peak memory::

    OMP_NUM_THREADS=2 python bench/throughput.py --preset cpu --steps 6
    OMP_NUM_THREADS=2 python bench/throughput.py --preset gpu-short --batch 4 --steps 2
    python bench/throughput.py --preset gpu-short --steps 30 --device cuda
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from radjepa_lab.config import TrainConfig  # noqa: E402
from radjepa_lab.presets import get_preset  # noqa: E402

VARIANTS = ("kit", "lightly")
MATMUL_N = 1024  # the square matmul whose rate is this machine's yardstick
LIGHTLY_MIN_KEEP = 4  # lightly/I-JEPA apply min_keep to target blocks too; 10 hangs on 8x8


def vit_fwd_flops(tokens: float, d: int, depth: int, mlp: float = 4.0) -> float:
    """Forward FLOPs of ``depth`` pre-norm ViT blocks on ``tokens`` tokens (2 per MAC)."""
    return depth * ((8 + 4 * mlp) * tokens * d * d + 4 * tokens * tokens * d)


def jepa_step_flops(b: int, n: int, nc: float, k: float, m: int, d: int, depth: int, dp: int,
                    pdepth: int, patch: int, chans: int = 1, mlp: float = 4.0) -> float:
    """Model FLOPs of one I-JEPA step; backward counted as 2x forward (usual MFU convention).

    Target encoder: forward on all ``n`` tokens. Context encoder: forward+backward on ``nc``.
    Predictor: ``m`` sequences of ``nc + k`` tokens per image, forward+backward.
    """
    patch_fwd = 2 * n * chans * patch * patch * d
    target = b * (patch_fwd + vit_fwd_flops(n, d, depth, mlp))
    context = 3 * b * (patch_fwd * nc / n + vit_fwd_flops(nc, d, depth, mlp))
    pred_io = 2 * b * nc * d * dp + 2 * b * m * k * dp * d
    predictor = 3 * (pred_io + b * m * vit_fwd_flops(nc + k, dp, pdepth, mlp))
    return target + context + predictor


def flops_per_image(cfg: TrainConfig, nc: float, k: float) -> float:
    m = cfg.model
    n = m.grid[0] * m.grid[1]
    return jepa_step_flops(1, n, nc, k, cfg.masks.n_targets, m.embed_dim, m.depth,
                           m.pred_embed_dim, m.pred_depth, m.patch_size, m.in_chans,
                           m.mlp_ratio)


class PeakMemory:
    """Peak process RSS (psutil, sampled every 5 ms) or CUDA max allocated."""

    def __init__(self, device: str) -> None:
        self.device, self.peak, self._stop = device, 0, threading.Event()

    def __enter__(self) -> PeakMemory:
        if self.device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        else:
            import psutil

            proc = psutil.Process()

            def sample() -> None:
                while not self._stop.is_set():
                    self.peak = max(self.peak, proc.memory_info().rss)
                    time.sleep(0.005)

            self._thread = threading.Thread(target=sample, daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()
            self.peak = torch.cuda.max_memory_allocated()
        else:
            self._stop.set()
            self._thread.join()


def _images(n: int, size: int, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [0, 1] (content does not change the cost)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 1, size // 8, size // 8, generator=g)
    return torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear").clamp(0, 1)


def _config(args: argparse.Namespace) -> TrainConfig:
    from radjepa_lab.config import apply_overrides

    cfg = apply_overrides(get_preset(args.preset), getattr(args, "set", []))
    if args.batch:
        cfg.batch_size = args.batch
    cfg.device = args.device
    return cfg


def make_kit(args: argparse.Namespace) -> Callable[[int], tuple[int, int]]:
    """One step of the kit trainer, exactly as ``pretrain`` runs it on cached data:
    the step's batch and masks, then ``JEPA.step`` (forward, loss, AdamW, EMA)."""
    from radjepa_lab.batches import StepBatchSampler, h2d, step_masks
    from radjepa_lab.masks import MultiBlockMaskSampler
    from radjepa_lab.train import JEPA

    cfg, dev = _config(args), torch.device(args.device)
    jepa = JEPA(cfg, dev)
    images = (_images(max(2 * cfg.batch_size, 64), cfg.model.img_size) * 255).to(torch.uint8)
    images = images.to(dev)
    batches = StepBatchSampler(len(images), cfg.batch_size, cfg.seed, 0, 10**9)
    masks = MultiBlockMaskSampler(cfg.model.grid, cfg.masks)

    def step(i: int) -> tuple[int, int]:
        imgs = images.index_select(0, h2d(batches.batch(i), dev)).float() / 255.0
        mb = step_masks(masks, cfg.batch_size, cfg.seed, i, 0)
        loss, _ = jepa.step(i, imgs, mb, check=True)  # moves the masks to dev, as pretrain does
        float(loss)
        return mb.context.shape[1], mb.targets.shape[2]

    return step


def make_lightly(args: argparse.Namespace) -> Callable[[int], tuple[int, int]]:
    """lightly's I-JEPA modules and IJEPAMaskCollator, wired as examples/pytorch/ijepa.py."""
    import copy

    import torch.nn.functional as F
    from lightly.data import IJEPAMaskCollator
    from lightly.models import utils
    from lightly.models.modules import ijepa
    from torchvision.models.vision_transformer import VisionTransformer as TVViT

    cfg = _config(args)
    m, dev = cfg.model, torch.device(args.device)
    torch.manual_seed(0)
    vit = TVViT(image_size=m.img_size, patch_size=m.patch_size, num_layers=m.depth,
                num_heads=m.num_heads, hidden_dim=m.embed_dim,
                mlp_dim=int(m.embed_dim * m.mlp_ratio))
    vit.conv_proj = torch.nn.Conv2d(1, m.embed_dim, m.patch_size, m.patch_size)  # gray input
    encoder = ijepa.IJEPABackbone.from_vit(vit)
    n_patches = (m.img_size // m.patch_size) ** 2
    predictor = ijepa.IJEPAPredictor(
        seq_length=n_patches, num_layers=m.pred_depth, num_heads=m.pred_num_heads,
        hidden_dim=m.pred_embed_dim, predictor_embed_dim=m.pred_embed_dim,
        num_patches=n_patches, mlp_dim=int(m.pred_embed_dim * m.mlp_ratio),
        dropout=0.0, attention_dropout=0.0,
    )
    # lightly ties predictor_embed's input width to mlp_dim; give it the encoder width
    predictor.predictor_embed = torch.nn.Linear(m.embed_dim, m.pred_embed_dim)
    predictor.predictor_proj = torch.nn.Linear(m.pred_embed_dim, m.embed_dim)
    target = copy.deepcopy(encoder).requires_grad_(False)
    encoder.to(dev), predictor.to(dev), target.to(dev)
    opt = torch.optim.AdamW(list(encoder.parameters()) + list(predictor.parameters()), lr=1e-4)
    collator = IJEPAMaskCollator(
        input_size=(m.img_size, m.img_size), patch_size=m.patch_size,
        enc_mask_scale=cfg.masks.enc_scale, pred_mask_scale=cfg.masks.pred_scale,
        aspect_ratio=cfg.masks.pred_aspect, nenc=1, npred=cfg.masks.n_targets,
        min_keep=LIGHTLY_MIN_KEEP,
    )
    imgs = _images(max(2 * cfg.batch_size, 64), m.img_size)
    loader = torch.utils.data.DataLoader([(im, 0) for im in imgs], batch_size=cfg.batch_size,
                                         shuffle=True, collate_fn=collator, drop_last=True)
    from radjepa_lab.config import use_bf16

    autocast = (torch.autocast(dev.type, dtype=torch.bfloat16) if use_bf16(cfg, dev)
                else torch.autocast(dev.type, enabled=False))

    def batches() -> Iterator:
        while True:
            yield from loader

    it = batches()

    def step(i: int) -> tuple[int, int]:
        (x, _), masks_enc, masks_pred = next(it)
        x = x.to(dev, non_blocking=True)
        masks_enc = [u.to(dev) for u in masks_enc]
        masks_pred = [u.to(dev) for u in masks_pred]
        with autocast:
            with torch.no_grad():
                h = target(x)
                h = F.layer_norm(h, (h.size(-1),))
                h = utils.apply_masks(h, masks_pred)
                h = utils.repeat_interleave_batch(h, x.shape[0], repeat=len(masks_enc))
            z = predictor(encoder(x, masks_enc), masks_enc, masks_pred)
            loss = F.smooth_l1_loss(z.float(), h.float())
        loss.backward()
        opt.step()
        opt.zero_grad()
        with torch.no_grad():
            for q, k in zip(encoder.parameters(), target.parameters(), strict=True):
                k.data.mul_(0.996).add_((1.0 - 0.996) * q.detach().data)
        float(loss.detach())
        return masks_enc[0].shape[1], masks_pred[0].shape[1]

    return step


def make_matmul(device: str, dtype: torch.dtype) -> Callable[[int], float]:
    """One ``MATMUL_N``-square matmul in ``dtype`` (autocast-free): the machine's own rate."""
    g = torch.Generator().manual_seed(0)
    a = torch.rand(MATMUL_N, MATMUL_N, generator=g).to(device, dtype)
    b = torch.rand(MATMUL_N, MATMUL_N, generator=g).to(device, dtype)

    def run(_: int) -> float:
        torch.mm(a, b)
        return 2.0 * MATMUL_N**3

    return run


def _make(args: argparse.Namespace, variant: str) -> Callable[[int], tuple[int, int]]:
    return make_lightly(args) if variant == "lightly" else make_kit(args)


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def memory_child(args: argparse.Namespace, variant: str) -> dict:
    """Peak memory of one implementation alone in a fresh process (2 steps)."""
    with PeakMemory(args.device) as mem:
        step = _make(args, variant)
        for i in range(2):
            step(i)
    return {"peak_mem": mem.peak}


def _child(args: argparse.Namespace, variant: str) -> dict:
    cmd = [sys.executable, __file__, "--worker", variant, "--preset", args.preset,
           "--device", args.device] + [f"--set={s}" for s in args.set]
    if args.batch:
        cmd += ["--batch", str(args.batch)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, env=os.environ.copy())
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="cpu")
    p.add_argument("--steps", type=int, default=6, help="timed steps per implementation")
    p.add_argument("--batch", type=int, default=0, help="override the preset's batch size")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override (as radjepa-lab pretrain --set), e.g. --set bf16=False")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    p.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        print(json.dumps(memory_child(args, args.worker)))
        return

    cfg = _config(args)
    m = cfg.model
    print(f"preset={args.preset} device={args.device} threads={torch.get_num_threads()} "
          f"ViT d{m.embed_dim}x{m.depth} h{m.num_heads} p{m.patch_size} @{m.img_size}px, "
          f"predictor {m.pred_embed_dim}x{m.pred_depth}, batch {cfg.batch_size}, "
          f"{cfg.masks.n_targets} targets, {args.steps} timed steps each, interleaved")
    # Throughput: all implementations live in this process and take turns step by step, so
    # a shared machine's load swings hit them equally; the median step time is kept.
    steps = {v: _make(args, v) for v in VARIANTS}
    mm = {d: make_matmul(args.device, dt) for d, dt in (("fp32", torch.float32),
                                                        ("bf16", torch.bfloat16))}
    times: dict[str, list[float]] = {v: [] for v in (*VARIANTS, *mm)}
    tokens: dict[str, list[tuple[int, int]]] = {v: [] for v in VARIANTS}
    for i in range(args.steps + 1):
        for v in VARIANTS:
            _sync(args.device)
            t = time.perf_counter()
            tok = steps[v](i)
            _sync(args.device)
            if i:  # step 0 is warm-up
                times[v].append(time.perf_counter() - t)
                tokens[v].append(tok)
        for d, run in mm.items():  # the yardstick, interleaved with the steps it measures
            _sync(args.device)
            t = time.perf_counter()
            for _ in range(4):
                run(i)
            _sync(args.device)
            if i:
                times[d].append((time.perf_counter() - t) / 4)
    del steps
    peak = {d: 2.0 * MATMUL_N**3 / statistics.median(times[d]) / 1e9 for d in mm}
    med: dict[str, dict[str, float]] = {}
    for v in VARIANTS:
        nc = statistics.mean(t[0] for t in tokens[v])
        k = statistics.mean(t[1] for t in tokens[v])
        ips = cfg.batch_size / statistics.median(times[v])
        gf = flops_per_image(cfg, nc, k) / 1e9
        med[v] = {"imgs_per_s": ips, "gflop_img": gf, "gflop_s": gf * ips, "ctx": nc, "tgt": k,
                  "peak_mem": float("nan")}
    print(f"{'variant':<14}{'imgs/s':>9}{'GFLOP/img':>11}{'GFLOP/s':>9}{'ctx tok':>9}{'tgt tok':>9}")
    for v in VARIANTS:
        r = med[v]
        print(f"{v:<14}{r['imgs_per_s']:>9.1f}{r['gflop_img']:>11.3f}{r['gflop_s']:>9.1f}"
              f"{r['ctx']:>9.1f}{r['tgt']:>9.1f}", flush=True)
    if not args.no_memory:
        unit, scale = ("GiB", 2**30) if args.device == "cuda" else ("MiB RSS", 2**20)
        for v in VARIANTS:
            med[v]["peak_mem"] = _child(args, v)["peak_mem"]
            print(f"peak memory {v:<14}{med[v]['peak_mem'] / scale:>10.1f} {unit}", flush=True)
    r, base = med["kit"], med["lightly"]
    print(f"ratio kit/lightly: images/s {r['imgs_per_s'] / base['imgs_per_s']:.2f}x, "
          f"achieved FLOP/s {r['gflop_s'] / base['gflop_s']:.2f}x, "
          f"peak memory {r['peak_mem'] / base['peak_mem']:.2f}x")
    from radjepa_lab.config import use_bf16

    dtype = "bf16" if use_bf16(cfg, args.device) else "fp32"
    print(f"this machine's {MATMUL_N}^3 matmul, same run: fp32 {peak['fp32']:.1f} GFLOP/s, "
          f"bf16 {peak['bf16']:.1f} GFLOP/s")
    print(f"kit step ({dtype}, the preset's dtype) reaches {r['gflop_s']:.1f} GFLOP/s = "
          f"{r['gflop_s'] / peak[dtype]:.2f} of the {dtype} matmul rate "
          f"({r['gflop_s'] / peak['fp32']:.2f} of fp32, {r['gflop_s'] / peak['bf16']:.2f} of bf16)")


if __name__ == "__main__":
    main()
