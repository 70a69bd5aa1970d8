#!/usr/bin/env bash
# GPU pretraining benchmark for the device tool: images/s, peak GPU memory and MFU of the
# kit's real trainer (radjepa_lab.train.pretrain) for ViT-S/16 and ViT-B/16 at 224 px, bf16.
# Baseline in the same run: a plain timm ViT training step (all tokens, same batch), the
# ceiling a masked I-JEPA step can approach; the ratio kit-MFU / timm-MFU is printed.
#
# Needs only torch, timm and numpy. Without CUDA it runs a 2-step CPU smoke of the same code
# path (seconds) and says so, so a broken script is caught before spending device time.
#
#   bash bench/gpu.sh                 # both models, 60 timed steps each
#   bash bench/gpu.sh --steps 100 --compile --peak-tflops 989
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
exec "$PY" - "$@" <<'PYEOF'
import argparse, math, statistics, sys, tempfile, time

import torch

from radjepa_lab.config import MaskConfig, ModelConfig, TrainConfig
from radjepa_lab.masks import MultiBlockMaskSampler
from radjepa_lab.train import pretrain

sys.path.insert(0, "bench")
from throughput import jepa_step_flops, vit_fwd_flops  # one FLOP count for both benches

p = argparse.ArgumentParser()
p.add_argument("--steps", type=int, default=60, help="timed steps (multiple of --window)")
p.add_argument("--window", type=int, default=10, help="steps per log window; first is warm-up")
p.add_argument("--compile", action="store_true")
p.add_argument("--peak-tflops", type=float, default=0.0, help="bf16 dense peak; 0 = by name")
p.add_argument("--models", default="vit_s16,vit_b16")
args = p.parse_args()

cuda = torch.cuda.is_available()
MODELS = {  # name: (width, depth, heads, predictor width, predictor depth, batch)
    "vit_s16": (384, 12, 6, 192, 6, 256),
    "vit_b16": (768, 12, 12, 384, 6, 128),
}
if cuda:
    img, patch, steps, window = 224, 16, args.steps, args.window
else:  # CPU smoke of the same code path
    print("NO CUDA: running a 2-step CPU smoke only (no GPU figures).", flush=True)
    MODELS = {"vit_tiny_smoke": (64, 2, 2, 32, 1, 8)}
    img, patch, steps, window = 64, 16, 2, 1


def peak_tflops() -> float:
    if args.peak_tflops:
        return args.peak_tflops
    if not cuda:
        return float("nan")
    name = torch.cuda.get_device_name()
    for key, tf in (("H200", 989.0), ("H100 PCIe", 756.0), ("H100", 989.0), ("A100", 312.0),
                    ("L40S", 362.0), ("A10", 125.0)):
        if key in name:
            return tf
    return float("nan")


def timm_baseline(d, depth, heads, b) -> tuple[float, float]:
    """Images/s and MFU of a plain timm ViT train step on all tokens (same batch, bf16)."""
    from timm.models.vision_transformer import VisionTransformer

    dev = "cuda" if cuda else "cpu"
    model = VisionTransformer(img_size=img, patch_size=patch, in_chans=1, embed_dim=d,
                              depth=depth, num_heads=heads, num_classes=0,
                              global_pool="avg").to(dev)
    if args.compile:
        model = torch.compile(model)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    x = torch.rand(b, 1, img, img, device=dev)
    ctx = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else torch.autocast("cpu", enabled=False)

    def step():
        with ctx:
            loss = model(x).float().pow(2).mean()
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):
        step()
    if cuda:
        torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    if cuda:
        torch.cuda.synchronize()
    ips = b * steps / (time.perf_counter() - t)
    n = (img // patch) ** 2
    flops = 3 * (2 * n * patch * patch * d + vit_fwd_flops(n, d, depth))
    return ips, ips * flops / (peak_tflops() * 1e12)


rows = []
for name in args.models.split(",") if cuda else MODELS:
    d, depth, heads, dp, pdepth, b = MODELS[name]
    cfg = TrainConfig(
        model=ModelConfig(img_size=img, patch_size=patch, embed_dim=d, depth=depth,
                          num_heads=heads, pred_embed_dim=dp, pred_depth=pdepth,
                          pred_num_heads=heads if dp % heads == 0 else 1),
        masks=MaskConfig(min_keep=1 if not cuda else 10),
        steps=window + steps, warmup=1, batch_size=b, log_every=window, ckpt_every=10**9,
        monitor_batch=32, bf16=cuda, compile=args.compile, device="cuda" if cuda else "cpu",
        num_workers=0,
    )
    g = torch.Generator().manual_seed(0)
    imgs = torch.rand(2 * b, 1, img, img, generator=g)
    data = [{"img": im} for im in imgs]
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory() as tmp:
        # windows end at steps 1, W, 2W, ...; those before step W hold compile/warm-up
        res = pretrain(cfg, tmp, dataset=data, progress=False)
    ips = statistics.median(r["imgs_per_s"] for r in res.history if r["step"] > window)
    mem = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
    sampler = MultiBlockMaskSampler(cfg.model.grid, cfg.masks)
    draws = [sampler.sample(b, g) for _ in range(20)]
    nc = statistics.mean(x.context.shape[1] for x in draws)
    k = statistics.mean(x.targets.shape[2] for x in draws)
    n = cfg.model.grid[0] * cfg.model.grid[1]
    flops = jepa_step_flops(b, n, nc, k, cfg.masks.n_targets, d, depth, dp, pdepth, patch) / b
    mfu = ips * flops / (peak_tflops() * 1e12)
    base_ips, base_mfu = timm_baseline(d, depth, heads, b)
    rows.append((name, b, ips, mem, flops / 1e9, mfu, base_ips, base_mfu, nc, k))

dev = torch.cuda.get_device_name() if cuda else "CPU"
print(f"device: {dev}  peak bf16: {peak_tflops():.0f} TFLOP/s  compile={args.compile}  "
      f"torch {torch.__version__}")
hdr = ("model", "batch", "imgs/s", "peak GiB", "GFLOP/img", "MFU", "timm imgs/s", "timm MFU",
       "MFU ratio", "ctx tok", "tgt tok")
print(("{:<15}" + "{:>12}" * (len(hdr) - 1)).format(*hdr))
for name, b, ips, mem, gf, mfu, bips, bmfu, nc, k in rows:
    ratio = mfu / bmfu if bmfu == bmfu and bmfu > 0 else float("nan")
    print(f"{name:<15}{b:>12}{ips:>12.1f}{mem:>12.2f}{gf:>12.2f}{mfu:>12.1%}{bips:>12.1f}"
          f"{bmfu:>12.1%}{ratio:>12.2f}{nc:>12.1f}{k:>12.1f}")
sys.exit(0)
PYEOF
