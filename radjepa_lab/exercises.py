"""Checkers for the classroom exercises in ``notebooks/exercises/``.

Each ``check_*`` function runs a student's function on hidden test cases and compares it
with the kit's own implementation. The contract, the same for every checker:

* on success it prints one line and returns a :class:`CheckResult`;
* on failure it raises :class:`ExerciseFailed` (an ``AssertionError``, so it also works
  inside pytest) whose message names the failing case and says what to change, e.g.
  "your block reaches past the last column: left must be drawn from range(gw - w + 1)".

Where a wrong answer is a common one (a swapped momentum, a forgotten layer norm, the
reference sampler's border bias), the checker recognises it by computing that mistake
itself and says so by name, instead of only printing two numbers that differ.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "CheckResult",
    "ExerciseFailed",
    "check_attention_rollout",
    "check_dino_centering",
    "check_ema_update",
    "check_jepa_loss",
    "check_knn_scores",
    "check_masked_forward",
    "check_sample_block",
]


class ExerciseFailed(AssertionError):
    """A hidden test case failed; the message says which one and what to change."""


@dataclass(frozen=True)
class CheckResult:
    """What a passing check ran."""

    exercise: str
    cases: int

    def __str__(self) -> str:
        return f"{self.exercise}: all {self.cases} hidden cases passed"


def _fail(exercise: str, msg: str) -> ExerciseFailed:
    return ExerciseFailed(f"[{exercise}] {msg}")


def _call(exercise: str, fn: Callable[..., Any], case: str, *args: Any, hint: str = "",
          **kwargs: Any) -> Any:
    """Call the student's function; turn any exception into a helpful ExerciseFailed."""
    try:
        return fn(*args, **kwargs)
    except ExerciseFailed:
        raise
    except NotImplementedError:
        raise _fail(
            exercise,
            f"{getattr(fn, '__name__', 'your function')} still raises NotImplementedError. "
            "Replace the `raise NotImplementedError` line in the TODO cell with your code, "
            "run that cell, then run this check again.",
        ) from None
    except Exception as e:  # noqa: BLE001 - reported to the student with the case
        extra = f" Hint: {hint}" if hint else ""
        raise _fail(
            exercise, f"on hidden case {case} your function raised {type(e).__name__}: {e}.{extra}"
        ) from e


def _passed(exercise: str, cases: int) -> CheckResult:
    res = CheckResult(exercise, cases)
    print(f"\u2705 {res}")
    return res


def _close(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray, tol: float) -> bool:
    a = torch.as_tensor(np.asarray(a) if not torch.is_tensor(a) else a).double()
    b = torch.as_tensor(np.asarray(b) if not torch.is_tensor(b) else b).double()
    return a.shape == b.shape and bool(torch.allclose(a, b, rtol=tol, atol=tol))


def _which(out: Any, variants: dict[str, Any], tol: float) -> str | None:
    """Name of the first known mistake whose result matches ``out``."""
    for msg, ref in variants.items():
        try:
            if ref is not None and _close(out, ref, tol):
                return msg
        except (RuntimeError, TypeError, ValueError):
            continue
    return None


# ============================================================================== 1. target block

_BLOCK_CASES = (
    # grid, scale, aspect
    ((14, 14), (0.15, 0.2), (0.75, 1.5)),
    ((8, 8), (0.05, 0.1), (1.0, 1.0)),
    ((6, 10), (0.1, 0.3), (0.5, 2.0)),
    ((16, 9), (0.15, 0.2), (2.0, 3.0)),
    # a wide, short grid with tall blocks: sqrt(area * aspect) exceeds the 4 rows, so only a
    # sampler that clamps h to the grid passes
    ((4, 12), (0.3, 0.5), (1.5, 3.0)),
)


def _as_block(out: Any, case: str) -> tuple[int, int, int, int]:
    ex = "sample_block"
    if torch.is_tensor(out):
        out = out.tolist()
    if not isinstance(out, tuple | list | np.ndarray) or len(out) != 4:
        raise _fail(ex, f"on case {case} you returned {out!r}; return a tuple "
                        "(top, left, height, width) of 4 integers.")
    vals = []
    for name, v in zip(("top", "left", "height", "width"), out, strict=True):
        if isinstance(v, float | np.floating) and float(v).is_integer():
            v = int(v)
        if not isinstance(v, int | np.integer):
            raise _fail(ex, f"on case {case} {name}={v!r} is not an integer; block corners and "
                            "sizes count whole patches (use int(), round() or rng.integers).")
        vals.append(int(v))
    return tuple(vals)  # type: ignore[return-value]


def check_sample_block(sample_block: Callable[..., Any], draws: int = 400) -> CheckResult:
    """Check ``sample_block(grid, scale, aspect, rng) -> (top, left, h, w)``.

    Expected semantics (I-JEPA with the kit's fix): ``s ~ U(scale)``, ``a ~ U(aspect)``,
    ``area = s * gh * gw``, ``h = round(sqrt(area * a))``, ``w = round(sqrt(area / a))``
    (clamped to the grid), ``top ~ U{0..gh-h}``, ``left ~ U{0..gw-w}``, all from ``rng``.
    """
    ex = "sample_block"
    n_cases = 0
    for ci, (grid, scale, aspect) in enumerate(_BLOCK_CASES):
        gh, gw = grid
        case = f"#{ci + 1} (grid={grid}, scale={scale}, aspect={aspect})"
        hint = ("rng.integers(0, gh - h + 1) is the valid range of top (it is 0 when h == gh); "
                "rng.uniform(low, high) draws scale and aspect.")
        blocks = [
            _as_block(_call(ex, sample_block, case, grid, scale, aspect, rng, hint=hint), case)
            for rng in [np.random.default_rng(1000 + ci)] for _ in range(draws)
        ]
        again = [
            _as_block(_call(ex, sample_block, case, grid, scale, aspect, rng), case)
            for rng in [np.random.default_rng(1000 + ci)] for _ in range(draws)
        ]
        if blocks != again:
            raise _fail(ex, f"on case {case} the same seed gave different blocks. Draw every "
                            "random number from the `rng` argument (rng.uniform, rng.integers), "
                            "not from np.random / random / torch, so a seed reproduces the masks.")
        arr = np.array(blocks)
        top, left, h, w = arr.T
        for name, v in (("height", h), ("width", w)):
            if (v < 1).any():
                raise _fail(ex, f"on case {case} a block has {name} {int(v.min())}; every block "
                                "needs at least 1 patch (clamp with max(1, ...)).")
        if (h > gh).any() or (w > gw).any():
            raise _fail(ex, f"on case {case} a block of {int(h.max())}x{int(w.max())} patches "
                            f"is larger than the {gh}x{gw} grid; clamp h to gh and w to gw.")
        if (top < 0).any() or (left < 0).any():
            raise _fail(ex, f"on case {case} a block starts at a negative row/column; top and "
                            "left count from 0.")
        if (top + h > gh).any():
            i = int(np.argmax(top + h > gh))
            raise _fail(ex, f"on case {case} your block reaches past the last row (top={top[i]}, "
                            f"height={h[i]}, grid has {gh} rows): top must be drawn from "
                            "range(gh - h + 1).")
        if (left + w > gw).any():
            i = int(np.argmax(left + w > gw))
            raise _fail(ex, f"on case {case} your block reaches past the last column "
                            f"(left={left[i]}, width={w[i]}, grid has {gw} columns): left must "
                            "be drawn from range(gw - w + 1).")
        # size: area = scale * patches, up to the rounding of h and w
        n = gh * gw
        clamped = (h == gh) | (w == gw) | (h == 1) | (w == 1)
        tol = 0.5 * (h + w) + 1.0
        area = h * w
        too_small = (area < scale[0] * n - tol) & ~clamped
        too_big = (area > scale[1] * n + tol) & ~clamped
        if too_small.any() or too_big.any():
            i = int(np.argmax(too_small | too_big))
            side_frac = (scale[0] ** 2 * n - tol[i] <= area[i] <= scale[1] ** 2 * n + tol[i])
            why = (" It looks like you used scale as a fraction of the SIDE (h = scale * gh); "
                   "scale is a fraction of the PATCHES: area = scale * gh * gw."
                   if side_frac else
                   " Compute area = scale * gh * gw, then h = round(sqrt(area * aspect)) and "
                   "w = round(sqrt(area / aspect)).")
            raise _fail(ex, f"on case {case} a {h[i]}x{w[i]} block covers {area[i]} of {n} "
                            f"patches, outside scale {scale} (about {scale[0] * n:.0f}-"
                            f"{scale[1] * n:.0f} patches).{why}")
        # aspect = height / width, up to rounding
        ok_lo = (h + 0.5) / np.maximum(w - 0.5, 0.5) >= aspect[0] - 1e-9
        ok_hi = (h - 0.5) / (w + 0.5) <= aspect[1] + 1e-9
        bad = ~(ok_lo & ok_hi) & ~clamped
        if bad.any():
            i = int(np.argmax(bad))
            swapped = aspect[0] <= (w[i] + 0.5) / max(h[i] - 0.5, 0.5) and \
                (w[i] - 0.5) / (h[i] + 0.5) <= aspect[1]
            why = (" Aspect is HEIGHT / WIDTH: h = round(sqrt(area * aspect)), w = "
                   "round(sqrt(area / aspect)). Did you swap h and w?" if swapped else
                   " Draw aspect uniformly from the range and use h = round(sqrt(area * "
                   "aspect)), w = round(sqrt(area / aspect)).")
            raise _fail(ex, f"on case {case} a block is {h[i]} rows x {w[i]} columns "
                            f"(height/width = {h[i] / w[i]:.2f}), outside aspect {aspect}.{why}")
        # the scale/aspect must actually be drawn
        mid = 0.5 * (scale[0] + scale[1]) * n
        mostly_clamped = clamped.mean() > 0.5  # clamping caps the area: nothing to judge
        if scale[1] - scale[0] >= 0.1 and not mostly_clamped and (area.max() < mid or
                                                                   area.min() > mid):
            raise _fail(ex, f"on case {case} your {draws} blocks cover {area.min()}-{area.max()} "
                            f"patches: almost the same area every time, while scale {scale} "
                            f"spans {scale[0] * n:.0f}-{scale[1] * n:.0f}. Draw the scale "
                            "uniformly from the range on every call (rng.uniform(*scale)).")
        # placement: every valid row/column, including the last ones
        if len(set(top.tolist())) == 1 and gh - h.min() > 0:
            raise _fail(ex, f"on case {case} every block starts in row {top[0]}; draw top "
                            "uniformly from range(gh - h + 1).")
        touches_bottom = (top + h == gh).any()
        touches_right = (left + w == gw).any()
        touches_top = (top == 0).any()
        touches_left = (left == 0).any()
        if not touches_bottom or not touches_right:
            where = ("last row" if not touches_bottom else "") + \
                (" and " if not (touches_bottom or touches_right) else "") + \
                ("last column" if not touches_right else "")
            raise _fail(ex, f"on case {case} none of {draws} blocks ever touched the {where}. "
                            "That is the reference sampler's border bias (facebookresearch/"
                            "ijepa #60): drawing top from range(gh - h) misses the last valid "
                            "position. Draw top from range(gh - h + 1) and left from "
                            "range(gw - w + 1), e.g. rng.integers(0, gh - h + 1).")
        if not touches_top or not touches_left:
            raise _fail(ex, f"on case {case} no block ever touched the first row/column; "
                            "positions must start at 0: rng.integers(0, gh - h + 1).")
        n_cases += 1
    return _passed(ex, n_cases)


# ============================================================================== 2. masked forward


def _tiny_encoder(seed: int, img: int = 32, patch: int = 8, dim: int = 32, depth: int = 2):
    from radjepa_lab.config import ModelConfig
    from radjepa_lab.models import build_encoder

    cfg = ModelConfig(img_size=img, patch_size=patch, embed_dim=dim, depth=depth, num_heads=2,
                      pred_embed_dim=16, pred_depth=1, pred_num_heads=2)
    return build_encoder(cfg, seed=seed).eval()


def _guarded(enc: torch.nn.Module) -> torch.nn.Module:
    """A copy of ``enc`` whose shortcut methods refuse to run (the student writes them)."""
    g = copy.deepcopy(enc)

    def refuse(name: str) -> Callable[..., Any]:
        def f(*_a: Any, **_k: Any) -> Any:
            raise ExerciseFailed(
                f"[masked_forward] don't call encoder.{name}(...): the exercise is to write it. "
                "Use encoder.normalize, encoder.patch_embed, encoder.pos_embed, encoder.blocks "
                "and encoder.norm."
            )
        return f

    for name in ("forward", "embed", "forward_layers", "forward_with_prefix"):
        setattr(g, name, refuse(name))
    return g


def _gather(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return torch.gather(x, 1, idx.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def _mf_variants(enc: Any, x: torch.Tensor, keep: torch.Tensor) -> dict[str, torch.Tensor]:
    def run(tokens: torch.Tensor, norm: bool = True) -> torch.Tensor:
        for blk in enc.blocks:
            tokens = blk(tokens)
        return enc.norm(tokens) if norm else tokens

    pe = enc.patch_embed(enc.normalize(x))
    raw = enc.patch_embed(x)
    pos = enc.pos_embed
    return {
        "you did not normalise the input: start with x = encoder.normalize(images) (the encoder "
        "owns its input mean/std; images arrive in [0, 1]).": run(_gather(raw + pos, keep)),
        "you forgot the position embeddings: add encoder.pos_embed to the patch tokens BEFORE "
        "keeping the context tokens, otherwise the encoder cannot tell where a token came from.":
            run(_gather(pe, keep)),
        "you forgot the final layer norm: return encoder.norm(x) after the blocks.":
            run(_gather(pe + pos, keep), norm=False),
        "you used the first image's indices for every image: gather each image's own rows, "
        "e.g. torch.gather(x, 1, keep[..., None].expand(-1, -1, D)).":
            run(_gather(pe + pos, keep[:1].expand_as(keep))),
        "you gave the kept tokens the positions of the FIRST K patches: gather the position "
        "embeddings with the same indices (simplest: add encoder.pos_embed before gathering).":
            run(_gather(pe, keep) + pos[:, : keep.shape[1]]),
    }


def check_masked_forward(masked_forward: Callable[..., Any]) -> CheckResult:
    """Check ``masked_forward(encoder, images, keep) -> tokens [B, K, D]``.

    Must equal ``encoder(images, masks=keep)`` of the kit: normalise, patch-embed, add the
    sin-cos position embedding, keep only the ``keep`` tokens of each image, run the blocks,
    apply the final norm.
    """
    ex = "masked_forward"
    cases = []
    g = torch.Generator().manual_seed(7)
    for seed, b, k, sort in ((0, 3, 6, True), (1, 2, 11, False), (2, 4, 16, True)):
        enc = _tiny_encoder(seed)
        n = enc.pos_embed.shape[1]
        x = torch.rand(b, 1, 32, 32, generator=g)
        keep = torch.stack([torch.randperm(n, generator=g)[:k] for _ in range(b)])
        if sort:
            keep = keep.sort(1).values
        cases.append((enc, x, keep, f"(B={b}, K={k} of {n} patches, "
                                    f"{'sorted' if sort else 'unsorted'} indices)"))
    for i, (enc, x, keep, desc) in enumerate(cases):
        case = f"#{i + 1} {desc}"
        with torch.no_grad():
            ref = enc(x, masks=keep)
            out = _call(ex, masked_forward, case, _guarded(enc), x.clone(), keep.clone(),
                        hint="pos_embed is [1, N, D] for all N patches; add it before "
                             "gathering the kept tokens.")
            variants = _mf_variants(enc, x, keep)
        if not torch.is_tensor(out):
            raise _fail(ex, f"on case {case} you returned {type(out).__name__}; return the "
                            "tokens as a tensor [B, K, D].")
        if tuple(out.shape) != tuple(ref.shape):
            why = (" You returned every patch: keep only the context tokens with "
                   "torch.gather(x, 1, keep[..., None].expand(-1, -1, D))."
                   if out.ndim == 3 and out.shape[1] == enc.pos_embed.shape[1] else "")
            raise _fail(ex, f"on case {case} the output has shape {tuple(out.shape)}, expected "
                            f"{tuple(ref.shape)} = [B, K, D].{why}")
        if not _close(out, ref, 1e-4):
            known = _which(out, variants, 1e-4)
            if known:
                raise _fail(ex, f"on case {case} {known}")
            err = float((out - ref).abs().max())
            raise _fail(ex, f"on case {case} your tokens differ from the reference by up to "
                            f"{err:.3g}. Order: normalize -> patch_embed -> + pos_embed -> keep "
                            "tokens -> blocks -> norm.")
    return _passed(ex, len(cases))


# ============================================================================== 3. loss


def _loss_cases() -> list[tuple[torch.Tensor, torch.Tensor, str]]:
    g = torch.Generator().manual_seed(3)
    out = []
    for shape, scale, off, noise in (((4, 2, 5, 16), 5.0, 3.0, 0.3), ((1, 3, 7, 32), 0.2, -1.0,
                                                                       2.5), ((2, 1, 4, 8), 1.0, 0.0, 1.0)):
        target = torch.randn(*shape, generator=g) * scale + off
        ln = F.layer_norm(target, (shape[-1],))
        pred = ln + noise * torch.randn(*shape, generator=g)
        out.append((pred, target, f"(shape {list(shape)}, targets ~ {off:+g} + {scale:g} x "
                                  f"noise, |pred - LN(target)| ~ {noise:g})"))
    return out


def check_jepa_loss(jepa_loss: Callable[..., Any]) -> CheckResult:
    """Check ``jepa_loss(pred, target) -> scalar tensor``.

    Must equal the mean smooth-L1 (beta 1) between ``pred`` and ``target`` layer-normed over
    the feature dimension WITHOUT affine parameters (I-JEPA's loss).
    """
    from radjepa_lab.train import jepa_loss as kit_loss

    ex = "jepa_loss"
    cases = _loss_cases()
    for i, (pred, target, desc) in enumerate(cases):
        case = f"#{i + 1} {desc}"
        d = target.shape[-1]
        p = pred.clone().requires_grad_(True)
        out = _call(ex, jepa_loss, case, p, target.clone())
        if not torch.is_tensor(out):
            raise _fail(ex, f"on case {case} you returned a {type(out).__name__}; return the "
                            "loss as a torch tensor (no .item()), so it can be backpropagated.")
        if out.numel() != 1:
            raise _fail(ex, f"on case {case} your loss has shape {tuple(out.shape)}; reduce it "
                            "to one number with the MEAN over all elements.")
        ln = F.layer_norm(target, (d,))
        ref = kit_loss(pred, target)  # the trainer's own loss is the reference
        mu, sd = target.mean(-1, keepdim=True), target.std(-1, keepdim=True)
        variants = {
            "you forgot to layer-normalise the target: use F.layer_norm(target, "
            "(target.shape[-1],)) without affine parameters. Without it the target's scale "
            "could shrink and make the loss trivially small.": F.smooth_l1_loss(pred, target),
            "you normalised the prediction too: only the TARGET is layer-normed; the predictor "
            "must learn to output normalised features itself.":
                F.smooth_l1_loss(F.layer_norm(pred, (d,)), ln),
            "you used the squared error (MSE); I-JEPA uses smooth-L1 (F.smooth_l1_loss), which "
            "is quadratic only for |error| < 1 and linear beyond.": F.mse_loss(pred, ln),
            "you used plain L1; I-JEPA uses smooth-L1 (F.smooth_l1_loss), quadratic for "
            "|error| < 1.": F.l1_loss(pred, ln),
            "you summed instead of averaging: use the mean over all elements (the default "
            "reduction of F.smooth_l1_loss).": F.smooth_l1_loss(pred, ln, reduction="sum"),
            "you normalised with the unbiased std (torch.std); layer norm uses the biased "
            "variance plus eps. Call F.layer_norm(target, (target.shape[-1],)).":
                F.smooth_l1_loss(pred, (target - mu) / sd),
            "you normalised over the wrong dimension: layer norm works per token over the LAST "
            "(feature) dimension.": F.smooth_l1_loss(
                pred, (target - target.mean(-2, keepdim=True)) / target.std(-2, keepdim=True)),
        }
        if not _close(out.detach().reshape(()), ref, 1e-5):
            known = _which(out.detach().reshape(()), variants, 1e-5)
            if known:
                raise _fail(ex, f"on case {case} {known}")
            raise _fail(ex, f"on case {case} your loss is {float(out):.6g}, expected "
                            f"{float(ref):.6g}: smooth-L1 between pred and "
                            "F.layer_norm(target, (D,)), averaged.")
        try:
            out.reshape(()).backward()
        except RuntimeError as e:
            raise _fail(ex, f"on case {case} the loss cannot be backpropagated ({e}); don't "
                            "detach pred or convert it to numpy.") from e
        if p.grad is None or not torch.isfinite(p.grad).all():
            raise _fail(ex, f"on case {case} no gradient reached pred; keep the computation in "
                            "torch.")
    return _passed(ex, len(cases))


# ============================================================================== 4. EMA


def _ema_nets(seed: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    torch.manual_seed(seed)
    online = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.LayerNorm(5),
                                 torch.nn.Linear(5, 3))
    online.register_buffer("in_mean", torch.tensor([0.5]))  # like the encoder's input statistics
    target = copy.deepcopy(online)
    with torch.no_grad():  # the target has drifted from the online network, as in training
        for p in online.parameters():
            p.add_(torch.randn_like(p))
        online.in_mean.fill_(0.25)  # and the online network's buffer was changed
    target.requires_grad_(False)
    return target, online


def check_ema_update(ema_update: Callable[..., Any]) -> CheckResult:
    """Check ``ema_update(target, online, momentum) -> None``.

    In place, for every parameter: ``target = momentum * target + (1 - momentum) * online``;
    buffers (not learned) are copied from the online network; the online (context) encoder is
    unchanged and the target keeps no autograd history.
    """
    ex = "ema_update"
    ms = (0.996, 0.5, 0.0, 1.0, 0.9)
    for i, m in enumerate(ms):
        case = f"#{i + 1} (momentum={m})"
        target, online = _ema_nets(i)
        t0 = [p.detach().clone() for p in target.parameters()]
        o0 = [p.detach().clone() for p in online.parameters()]
        ids = [id(p) for p in target.parameters()]
        _call(ex, ema_update, case, target, online, m,
              hint="wrap the update in `with torch.no_grad():` and update each target "
                   "parameter in place (p_t.mul_(m).add_(p_o, alpha=1 - m)).")
        t1 = [p.detach().clone() for p in target.parameters()]
        o1 = [p.detach().clone() for p in online.parameters()]
        if [id(p) for p in target.parameters()] != ids:
            raise _fail(ex, f"on case {case} the target's parameters were replaced by new "
                            "objects; update them in place (p.mul_(...).add_(...) or "
                            "p.copy_(...)) so the optimiser and trainer keep working.")
        if any(not torch.equal(a, b) for a, b in zip(o0, o1, strict=True)):
            raise _fail(ex, f"on case {case} you changed the ONLINE (context) encoder. Only the "
                            "target moves: target = m * target + (1 - m) * online.")
        ref = [m * a + (1 - m) * b for a, b in zip(t0, o0, strict=True)]
        if all(_close(a, b, 1e-6) for a, b in zip(t1, ref, strict=True)):
            if any(p.requires_grad or p.grad_fn is not None for p in target.parameters()):
                raise _fail(ex, f"on case {case} the values are right but the target now "
                                "records autograd history (requires_grad=True). Do the update "
                                "under `with torch.no_grad():` or use online.detach().")
            if not torch.equal(target.in_mean, online.in_mean):
                raise _fail(ex, f"on case {case} the parameters are right, but the target's "
                                f"buffer in_mean is {float(target.in_mean):g} while the online "
                                f"network's is {float(online.in_mean):g}. Buffers are not "
                                "learned, so there is nothing to average: copy them "
                                "(for b_t, b_o in zip(target.buffers(), online.buffers()): "
                                "b_t.copy_(b_o)).")
            continue
        if all(torch.equal(a, b) for a, b in zip(t0, t1, strict=True)):
            raise _fail(ex, f"on case {case} the target did not change. `p = m * p + ...` only "
                            "rebinds the name p; update the tensor in place: "
                            "p_t.mul_(m).add_(p_o, alpha=1 - m) (or p_t.copy_(...)).")
        swapped = [(1 - m) * a + m * b for a, b in zip(t0, o0, strict=True)]
        if all(_close(a, b, 1e-6) for a, b in zip(t1, swapped, strict=True)):
            raise _fail(ex, f"on case {case} you swapped the weights: momentum multiplies the "
                            "TARGET (it moves slowly, m is close to 1): target = m * target + "
                            "(1 - m) * online.")
        if all(_close(a, b, 1e-6) for a, b in zip(t1, o0, strict=True)):
            raise _fail(ex, f"on case {case} the target became a copy of the online encoder; "
                            "the momentum was ignored: target = m * target + (1 - m) * online.")
        err = max(float((a - b).abs().max()) for a, b in zip(t1, ref, strict=True))
        raise _fail(ex, f"on case {case} target parameters are off by up to {err:.3g}; expected "
                        "target = m * target + (1 - m) * online for EVERY parameter.")
    return _passed(ex, len(ms))


# ============================================================================== 5. kNN probe


def _knn_reference(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, k: int, t: float,
                   normalise: bool = True, weight: str = "exp", metric: str = "cos",
                   divide: bool = True, largest: bool = True) -> np.ndarray:
    if metric == "euclid":
        d = ((xte[:, None, :] - xtr[None]) ** 2).sum(-1)
        sim = -d
    else:
        a, b = xtr, xte
        if normalise:
            a = a / np.linalg.norm(a, axis=1, keepdims=True)
            b = b / np.linalg.norm(b, axis=1, keepdims=True)
        sim = b @ a.T
    nn = np.argsort(-sim if largest else sim, axis=1)[:, :k]
    s = np.take_along_axis(sim, nn, axis=1)
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):  # mistakes may overflow
        w = {"exp": np.exp(s / t), "exp_noT": np.exp(s), "uniform": np.ones_like(s),
             "sim": s}[weight]
        num = np.einsum("qk,qkf->qf", w, ytr[nn])
        return num / w.sum(1, keepdims=True) if divide else num


def check_knn_scores(knn_scores: Callable[..., Any]) -> CheckResult:
    """Check ``knn_scores(x_train, y_train, x_test, k=20, temperature=0.07) -> [N_test, F]``.

    DINO's weighted kNN: cosine similarity of L2-normalised features, the ``k`` most similar
    training images vote with weight ``exp(sim / temperature)``, and a finding's score is
    the weighted fraction of those neighbours that have it.
    """
    from radjepa_lab.analysis.probes import knn_scores as kit_knn

    ex = "knn_scores"
    rng = np.random.default_rng(11)
    cases = []
    for n_tr, n_te, d, f, k, t in ((60, 15, 8, 3, 20, 0.07), (40, 10, 5, 2, 5, 0.5),
                                   (30, 12, 16, 4, 7, 0.1)):
        centres = rng.normal(size=(f, d))
        y = (rng.random((n_tr + n_te, f)) < 0.4).astype(np.float64)
        x = y @ centres + rng.normal(size=(n_tr + n_te, d))
        x *= rng.uniform(0.2, 5.0, size=(n_tr + n_te, 1))  # norms vary: cosine != dot product
        cases.append((x[:n_tr], y[:n_tr], x[n_tr:], y[n_tr:], k, t))
    for i, (xtr, ytr, xte, _yte, k, t) in enumerate(cases):
        case = f"#{i + 1} ({len(xtr)} train, {len(xte)} test, {ytr.shape[1]} findings, k={k}, " \
               f"temperature={t})"
        out = _call(ex, knn_scores, case, xtr.copy(), ytr.copy(), xte.copy(), k=k, temperature=t)
        out = np.asarray(out, dtype=np.float64)
        ref = kit_knn(xtr, ytr, xte, k=k, temperature=t)
        if out.shape != ref.shape:
            raise _fail(ex, f"on case {case} the scores have shape {out.shape}, expected "
                            f"{ref.shape} = [N_test, F]: one score per test image and finding.")
        if not np.isfinite(out).all():
            raise _fail(ex, f"on case {case} some scores are NaN/inf: exp(sim / T) overflowed. "
                            "L2-normalise both feature sets first, so sim is the COSINE "
                            f"similarity (|sim| <= 1 and exp(1 / {t}) stays finite); raw dot "
                            "products can be in the hundreds.")
        if _close(out, ref, 1e-6):
            continue
        variants = {
            "you did not L2-normalise the features: DINO's kNN uses COSINE similarity, i.e. "
            "x / ||x|| for both train and test before the dot product.":
                _knn_reference(xtr, ytr, xte, k, t, normalise=False),
            "you used Euclidean distance; DINO's kNN ranks and weights neighbours by cosine "
            "similarity of L2-normalised features.":
                _knn_reference(xtr, ytr, xte, k, t, metric="euclid", weight="uniform"),
            "every neighbour votes equally: weight each vote by exp(similarity / temperature)":
                _knn_reference(xtr, ytr, xte, k, t, weight="uniform"),
            "you forgot the temperature: the weight is exp(similarity / temperature), which "
            "makes close neighbours count much more.": _knn_reference(xtr, ytr, xte, k, t,
                                                                      weight="exp_noT"),
            "you weighted votes by the raw similarity; use exp(similarity / temperature).":
                _knn_reference(xtr, ytr, xte, k, t, weight="sim"),
            "your scores are not divided by the total weight: score = sum(w * y) / sum(w), a "
            "fraction in [0, 1].": _knn_reference(xtr, ytr, xte, k, t, divide=False),
            f"you used k+1 = {k + 1} neighbours; take exactly the top k by similarity.":
                _knn_reference(xtr, ytr, xte, k + 1, t),
            f"you used k-1 = {k - 1} neighbours; take exactly the top k by similarity.":
                _knn_reference(xtr, ytr, xte, max(k - 1, 1), t),
            "you took the k LEAST similar images; sort by similarity in descending order "
            "(np.argsort(-sim)).": _knn_reference(xtr, ytr, xte, k, t, largest=False),
        }
        known = _which(out, variants, 1e-6)
        if known:
            raise _fail(ex, f"on case {case} {known}")
        if out.min() < -1e-9 or out.max() > 1 + 1e-9:
            raise _fail(ex, f"on case {case} scores range over [{out.min():.3g}, "
                            f"{out.max():.3g}]; a weighted fraction of neighbours lies in [0, 1].")
        err = float(np.abs(out - ref).max())
        raise _fail(ex, f"on case {case} your scores differ from the reference by up to "
                        f"{err:.3g}. Steps: L2-normalise, sim = test @ train.T, top-k, "
                        "w = exp(sim / T), score = (w @ y) / w.sum().")
    return _passed(ex, len(cases))


# ============================================================================== 6. rollout


def _attention(rng: np.random.Generator, layers: int, heads: int, n: int) -> np.ndarray:
    logits = rng.normal(scale=2.0, size=(layers, heads, n, n))
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _rollout_variant(attn: np.ndarray, w: float, fuse: str = "mean", order: str = "left",
                     residual: str = "mix") -> np.ndarray:
    n = attn.shape[-1]
    eye = np.eye(n)
    r = eye.copy()
    for layer in attn:
        m = {"mean": layer.mean(0), "max": layer.max(0)}[fuse]
        if residual == "mix":
            m = w * eye + (1 - w) * m
        elif residual == "add":
            m = eye + m
        m = m / m.sum(-1, keepdims=True)
        r = m @ r if order == "left" else r @ m
    return r


def check_attention_rollout(rollout: Callable[..., Any]) -> CheckResult:
    """Check ``rollout(attn [L, H, N, N], residual_weight=0.5) -> [N, N]``.

    Per layer: average the heads, mix in the residual stream as ``w * I + (1 - w) * A``,
    renormalise rows; then multiply the layers in order (``R = A_l @ R``), so row ``q`` says
    how much each input patch contributes to output token ``q``. Rows sum to 1.
    """
    from radjepa_lab.analysis.attention import attention_rollout

    ex = "attention_rollout"
    rng = np.random.default_rng(5)
    cases = [(_attention(rng, 3, 2, 9), 0.5), (_attention(rng, 4, 3, 6), 0.2),
             (_attention(rng, 1, 2, 5), 0.5), (_attention(rng, 2, 4, 12), 0.7)]
    for i, (attn, w) in enumerate(cases):
        nl, h, n, _ = attn.shape
        case = f"#{i + 1} ({nl} layers, {h} heads, {n} patches, residual_weight={w})"
        out = _call(ex, rollout, case, attn.copy(), residual_weight=w)
        out = np.asarray(out.detach() if torch.is_tensor(out) else out, dtype=np.float64)
        ref = attention_rollout(attn, "mean", w)
        if out.shape != ref.shape:
            raise _fail(ex, f"on case {case} you returned shape {out.shape}, expected {(n, n)}: "
                            "one row per query patch, one column per input patch (heads and "
                            "layers are combined).")
        if _close(out, ref, 1e-6):
            continue
        variants = {
            "you multiplied in the wrong order: later layers act on the result of earlier "
            "ones, so R = A_layer @ R (left-multiply), starting from R = I.":
                _rollout_variant(attn, w, order="right"),
            "you left out the residual connection: each block adds its input back, so use "
            "w * I + (1 - w) * A before multiplying.": _rollout_variant(attn, w, residual="none"),
            "you added the residual as I + A; mix it with the weight: w * I + (1 - w) * A "
            "(then renormalise rows).": _rollout_variant(attn, w, residual="add"),
            "you fused the heads with max; this rollout averages the heads (mean over axis 1).":
                _rollout_variant(attn, w, fuse="max"),
            "you only used the last layer; rollout multiplies ALL layers' matrices.":
                _rollout_variant(attn[-1:], w),
            "you only used the first layer; rollout multiplies ALL layers' matrices.":
                _rollout_variant(attn[:1], w),
        }
        known = _which(out, variants, 1e-6)
        if known:
            raise _fail(ex, f"on case {case} {known}")
        rows = out.sum(-1)
        if not np.allclose(rows, 1, atol=1e-6):
            raise _fail(ex, f"on case {case} rows of your rollout sum to {rows.min():.3g}.."
                            f"{rows.max():.3g}; renormalise each layer's matrix so its rows sum "
                            "to 1 (m / m.sum(-1, keepdims=True)).")
        err = float(np.abs(out - ref).max())
        raise _fail(ex, f"on case {case} your rollout differs from the reference by up to "
                        f"{err:.3g}. Per layer: A = attn.mean(heads); A = w*I + (1-w)*A; "
                        "A /= A.sum(-1); R = A @ R.")
    return _passed(ex, len(cases))


# ============================================================================== 7. DINO centering


def _dino_cases() -> list[tuple[torch.Tensor, torch.Tensor, float, float, str]]:
    g = torch.Generator().manual_seed(7)
    out = []
    for b, k, temp, m, shared in ((6, 5, 0.04, 0.9, 0.3), (4, 8, 0.07, 0.5, 0.2),
                                  (9, 3, 0.1, 0.99, 0.0), (5, 6, 0.07, 0.0, 0.25)):
        # cosine-like logits (DINO's prototypes give values in [-1, 1]) whose images share a
        # large component, the collapse centering removes; the centre has learned part of it
        common = shared * torch.randn(1, k, generator=g)
        logits = common + 0.05 * torch.randn(b, k, generator=g)
        center = 0.8 * common + 0.1 * torch.randn(1, k, generator=g)
        out.append((logits, center, temp, m, f"(batch {b}, {k} prototypes, temperature {temp:g}, "
                                             f"centre momentum {m:g})"))
    return out


def check_dino_centering(dino_targets: Callable[..., Any]) -> CheckResult:
    """Check ``dino_targets(teacher_logits, center, temperature, momentum) -> (probs, center)``.

    ``probs = softmax((teacher_logits - center) / temperature)`` over the prototypes, with the
    centre as it was BEFORE this batch and no gradient; the new centre is
    ``momentum * center + (1 - momentum) * teacher_logits.mean(0, keepdim=True)`` (DINO's
    teacher centering and sharpening; :mod:`radjepa_lab.objectives.dino`).
    """
    from radjepa_lab.objectives.dino import teacher_probs

    ex = "dino_centering"
    cases = _dino_cases()
    for i, (logits, center, temp, m, desc) in enumerate(cases):
        case = f"#{i + 1} {desc}"
        t = logits.clone().requires_grad_(True)  # as if the teacher were part of the graph
        c0 = center.clone()
        out = _call(ex, dino_targets, case, t, center.clone(), temp, m,
                    hint="return a tuple (probs, new_center) of tensors.")
        if not isinstance(out, tuple | list) or len(out) != 2:
            raise _fail(ex, f"on case {case} you returned {type(out).__name__}; return a tuple "
                            "(probs, new_center): this batch's targets and the updated centre.")
        probs, new_c = out
        if not (torch.is_tensor(probs) and torch.is_tensor(new_c)):
            raise _fail(ex, f"on case {case} return two torch tensors (probs, new_center).")
        want_p = teacher_probs(logits, c0, temp)
        mean = logits.mean(0, keepdim=True)
        want_c = m * c0 + (1 - m) * mean
        if tuple(probs.shape) != tuple(logits.shape):
            raise _fail(ex, f"on case {case} probs has shape {tuple(probs.shape)}; expected one "
                            f"distribution per image over the prototypes, {tuple(logits.shape)}.")
        p = probs.detach().float()
        p_variants = {
            "you did not subtract the centre: every image's logits share a large component, "
            "and without centering one prototype wins for every image (DINO's collapse). "
            "Use softmax((logits - center) / temperature).": F.softmax(logits / temp, -1),
            "you subtracted the centre after dividing by the temperature: the centre is in "
            "logit units, so subtract first, then divide: softmax((logits - center) / T).":
                F.softmax(logits / temp - c0, -1),
            "you forgot the temperature (sharpening): divide the centred logits by it, "
            "softmax((logits - center) / T); a small T makes the targets peaked.":
                F.softmax(logits - c0, -1),
            "you multiplied by the temperature; divide by it: softmax((logits - center) / T).":
                F.softmax((logits - c0) * temp, -1),
            "you took the softmax over the batch (dim 0); each image's target is a "
            "distribution over the PROTOTYPES: softmax(..., dim=-1).":
                F.softmax((logits - c0) / temp, 0),
            "you updated the centre first and then used it: this batch's targets use the "
            "centre from BEFORE the update (DINO updates it after computing the loss).":
                teacher_probs(logits, want_c, temp),
        }
        if not _close(p, want_p, 1e-5):
            known = _which(p, p_variants, 1e-5)
            if known:
                raise _fail(ex, f"on case {case} {known}")
            raise _fail(ex, f"on case {case} probs are off by up to "
                            f"{float((p - want_p).abs().max()):.3g}; expected "
                            "softmax((logits - center) / temperature, dim=-1).")
        if probs.requires_grad:
            raise _fail(ex, f"on case {case} the targets carry a gradient: they are the teacher's "
                            "and the student must not push them. Compute them under "
                            "`with torch.no_grad():` (or .detach() the logits).")
        nc = new_c.detach().float()
        c_variants = {
            "you swapped the momentum: it multiplies the OLD centre (a slow average), "
            "center = m * center + (1 - m) * batch mean.": (1 - m) * c0 + m * mean,
            "the centre is ONE vector over the prototypes: average the teacher logits over "
            "the batch first (logits.mean(0, keepdim=True)).": m * c0 + (1 - m) * logits,
            "you averaged the probabilities; DINO's centre is a running mean of the teacher "
            "LOGITS: center = m * center + (1 - m) * logits.mean(0, keepdim=True).":
                m * c0 + (1 - m) * want_p.mean(0, keepdim=True),
            "you replaced the centre by this batch's mean; it is a moving average: "
            "center = m * center + (1 - m) * batch mean.": mean,
            "the centre did not move: center = m * center + (1 - m) * batch mean, and return "
            "it.": c0,
        }
        if m == 0.0:  # the batch mean itself is right here
            c_variants.pop("you replaced the centre by this batch's mean; it is a moving "
                           "average: center = m * center + (1 - m) * batch mean.")
        if not _close(nc, want_c, 1e-5):
            known = _which(nc, c_variants, 1e-5)
            if known:
                raise _fail(ex, f"on case {case} {known}")
            if nc.shape != want_c.shape:
                raise _fail(ex, f"on case {case} the new centre has shape {tuple(nc.shape)}; "
                                f"expected {tuple(want_c.shape)}, one value per prototype.")
            raise _fail(ex, f"on case {case} the new centre is off by up to "
                            f"{float((nc - want_c).abs().max()):.3g}; expected "
                            "m * center + (1 - m) * logits.mean(0, keepdim=True).")
        if new_c.requires_grad:
            raise _fail(ex, f"on case {case} the new centre carries a gradient; it is a "
                            "running statistic: update it under `with torch.no_grad():`.")
    return _passed(ex, len(cases))
