"""Every exercise checker FAILS on the TODO stub and on plausible wrong answers, and PASSES on
the solution. Stub and solution are read from the notebooks themselves (cells tagged
``exercise-stub`` / ``solution``), so the notebooks and the checkers cannot drift apart.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from radjepa_lab import exercises as E

NB = Path(__file__).resolve().parents[1] / "notebooks"

# exercise notebook stem -> (function name defined in the TODO cell, checker)
EXERCISES: dict[str, tuple[str, Callable[..., Any]]] = {
    "ex1_sample_target_block": ("sample_block", E.check_sample_block),
    "ex2_masked_forward": ("masked_forward", E.check_masked_forward),
    "ex3_jepa_loss": ("jepa_loss", E.check_jepa_loss),
    "ex4_ema_update": ("ema_update", E.check_ema_update),
    "ex5_knn_probe": ("knn_scores", E.check_knn_scores),
    "ex6_attention_rollout": ("rollout", E.check_attention_rollout),
    "ex7_dino_centering": ("dino_targets", E.check_dino_centering),
}


def _function_from(path: Path, tag: str, name: str) -> Callable[..., Any]:
    nb = json.loads(path.read_text(encoding="utf-8"))
    cells = [c for c in nb["cells"] if tag in c.get("metadata", {}).get("tags", [])]
    assert len(cells) == 1, f"{path}: expected exactly one cell tagged {tag!r}, found {len(cells)}"
    ns: dict[str, Any] = {}
    exec(compile("".join(cells[0]["source"]), f"{path.name}[{tag}]", "exec"), ns)  # noqa: S102
    assert callable(ns.get(name)), f"{path}: the {tag!r} cell does not define {name}()"
    return ns[name]


def _fails(checker: Callable[..., Any], fn: Callable[..., Any], *fragments: str) -> str:
    with pytest.raises(E.ExerciseFailed) as info:
        checker(fn)
    msg = str(info.value)
    for frag in fragments:
        assert frag.lower() in msg.lower(), f"message lacks {frag!r}:\n{msg}"
    return msg


def test_every_exercise_has_a_solution_and_nothing_else() -> None:
    ex = {p.stem for p in (NB / "exercises").glob("*.ipynb")}
    sol = {p.stem for p in (NB / "solutions").glob("*.ipynb")}
    assert ex == set(EXERCISES) == sol


@pytest.mark.parametrize("stem", sorted(EXERCISES))
def test_stub_fails_with_instructions(stem: str) -> None:
    name, checker = EXERCISES[stem]
    stub = _function_from(NB / "exercises" / f"{stem}.ipynb", "exercise-stub", name)
    _fails(checker, stub, "NotImplementedError", "TODO cell")


@pytest.mark.parametrize("stem", sorted(EXERCISES))
def test_solution_passes(stem: str, capsys: pytest.CaptureFixture[str]) -> None:
    name, checker = EXERCISES[stem]
    sol = _function_from(NB / "solutions" / f"{stem}.ipynb", "solution", name)
    res = checker(sol)
    assert isinstance(res, E.CheckResult) and res.cases >= 3
    assert "passed" in capsys.readouterr().out


def test_exercise_failed_is_an_assertion_error() -> None:
    assert issubclass(E.ExerciseFailed, AssertionError)


# ------------------------------------------------------------------------- wrong answers
# Each is a mistake a student plausibly makes; the checker must name it.


def _block(top_hi: Callable[[int, int], int], left_hi: Callable[[int, int], int],
           side: bool = False, swap: bool = False, fixed_scale: bool = False,
           own_rng: bool = False, clamp: bool = True) -> Callable[..., Any]:
    def sample_block(grid, scale, aspect, rng):
        r = np.random.default_rng() if own_rng else rng
        gh, gw = grid
        s = scale[0] if fixed_scale else r.uniform(*scale)
        a = r.uniform(*aspect)
        if side:
            h, w = round(s * gh * a ** 0.5), round(s * gw / a ** 0.5)
        else:
            area = s * gh * gw
            h, w = round((area * a) ** 0.5), round((area / a) ** 0.5)
        if swap:
            h, w = w, h
        h, w = (min(max(h, 1), gh), min(max(w, 1), gw)) if clamp else (max(h, 1), max(w, 1))
        return (int(r.integers(0, max(top_hi(gh, h), 1))), int(r.integers(0, max(left_hi(gw, w), 1))),
                h, w)

    return sample_block


OK_RANGE = lambda g, s: g - s + 1  # noqa: E731


@pytest.mark.parametrize(
    ("fn", "fragments"),
    [
        (_block(lambda g, s: max(g - s, 1), OK_RANGE), ("border bias", "range(gh - h + 1)")),
        (_block(OK_RANGE, lambda g, s: max(g - s, 1)), ("last column",)),
        (_block(lambda g, s: g, OK_RANGE), ("past the last row", "range(gh - h + 1)")),
        (_block(OK_RANGE, lambda g, s: g), ("past the last column", "range(gw - w + 1)")),
        (_block(OK_RANGE, OK_RANGE, side=True), ("fraction of the SIDE",)),
        (_block(OK_RANGE, OK_RANGE, swap=True), ("HEIGHT / WIDTH", "swap")),
        (_block(OK_RANGE, OK_RANGE, fixed_scale=True), ("almost the same area",)),
        (_block(OK_RANGE, OK_RANGE, own_rng=True), ("same seed", "rng")),
        (_block(OK_RANGE, OK_RANGE, clamp=False), ("larger than the 4x12 grid", "clamp h to gh")),
    ],
    ids=["bias-row", "bias-col", "past-row", "past-col", "side-frac", "swapped-aspect",
         "fixed-scale", "ignores-rng", "no-clamp"],
)
def test_sample_block_wrong_answers(fn: Callable[..., Any], fragments: tuple[str, ...]) -> None:
    _fails(E.check_sample_block, fn, *fragments)


def _gather(x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    return torch.gather(x, 1, keep.unsqueeze(-1).expand(-1, -1, x.shape[-1]))


def _mf(normalize: bool = True, pos: str = "before", final_norm: bool = True,
        gather: bool = True, shortcut: bool = False) -> Callable[..., Any]:
    def masked_forward(encoder, images, keep):
        if shortcut:
            return encoder(images, masks=keep)
        x = encoder.patch_embed(encoder.normalize(images) if normalize else images)
        if pos == "before":
            x = x + encoder.pos_embed
        if gather:
            x = _gather(x, keep)
        if pos == "first_k":
            x = x + encoder.pos_embed[:, : x.shape[1]]
        for blk in encoder.blocks:
            x = blk(x)
        return encoder.norm(x) if final_norm else x

    return masked_forward


@pytest.mark.parametrize(
    ("fn", "fragments"),
    [
        (_mf(normalize=False), ("encoder.normalize",)),
        (_mf(pos="none"), ("position embeddings",)),
        (_mf(pos="first_k"), ("FIRST K patches",)),
        (_mf(final_norm=False), ("final layer norm",)),
        (_mf(gather=False), ("returned every patch",)),
        (_mf(shortcut=True), ("don't call encoder.forward",)),
    ],
    ids=["no-normalize", "no-pos", "pos-first-k", "no-final-norm", "no-gather", "shortcut"],
)
def test_masked_forward_wrong_answers(fn: Callable[..., Any], fragments: tuple[str, ...]) -> None:
    _fails(E.check_masked_forward, fn, *fragments)


def _ln(t: torch.Tensor) -> torch.Tensor:
    return F.layer_norm(t, (t.shape[-1],))


@pytest.mark.parametrize(
    ("fn", "fragments"),
    [
        (lambda p, t: F.smooth_l1_loss(p, t), ("forgot to layer-normalise",)),
        (lambda p, t: F.smooth_l1_loss(_ln(p), _ln(t)), ("normalised the prediction",)),
        (lambda p, t: F.mse_loss(p, _ln(t)), ("MSE",)),
        (lambda p, t: F.l1_loss(p, _ln(t)), ("plain L1",)),
        (lambda p, t: F.smooth_l1_loss(p, _ln(t), reduction="sum"), ("summed",)),
        (lambda p, t: F.smooth_l1_loss(p, _ln(t)).item(), ("no .item()",)),
        (lambda p, t: F.smooth_l1_loss(p, (t - t.mean(-1, keepdim=True)) / t.std(-1, keepdim=True)),
         ("unbiased std",)),
        (lambda p, t: F.smooth_l1_loss(p, _ln(t), reduction="none"), ("MEAN",)),
    ],
    ids=["no-ln", "ln-both", "mse", "l1", "sum", "item", "unbiased-std", "no-reduction"],
)
def test_jepa_loss_wrong_answers(fn: Callable[..., Any], fragments: tuple[str, ...]) -> None:
    _fails(E.check_jepa_loss, fn, *fragments)


def _ema_swapped(target, online, m):
    with torch.no_grad():
        for pt, po in zip(target.parameters(), online.parameters(), strict=True):
            pt.copy_((1 - m) * pt + m * po)


def _ema_rebind(target, online, m):
    for pt, po in zip(target.parameters(), online.parameters(), strict=True):
        pt = m * pt + (1 - m) * po  # noqa: PLW2901 - the bug under test


def _ema_online(target, online, m):
    with torch.no_grad():
        for pt, po in zip(target.parameters(), online.parameters(), strict=True):
            po.mul_(m).add_(pt, alpha=1 - m)


def _ema_copy(target, online, m):
    target.load_state_dict(online.state_dict())


def _ema_new_params(target, online, m):
    for (name, pt), po in zip(list(target.named_parameters()), online.parameters(), strict=True):
        mod_name, _, attr = name.rpartition(".")
        mod = target.get_submodule(mod_name)
        setattr(mod, attr, torch.nn.Parameter((m * pt + (1 - m) * po).detach(), requires_grad=False))


def _ema_params_only(target, online, m):  # right for parameters, forgets the buffers
    with torch.no_grad():
        for pt, po in zip(target.parameters(), online.parameters(), strict=True):
            pt.mul_(m).add_(po, alpha=1 - m)


def _ema_history(target, online, m):
    for pt, po in zip(target.parameters(), online.parameters(), strict=True):
        pt.requires_grad_(True)
        pt.data = (m * pt + (1 - m) * po).detach()
        pt.requires_grad_(True)


@pytest.mark.parametrize(
    ("fn", "fragments"),
    [
        (_ema_swapped, ("swapped",)),
        (_ema_rebind, ("did not change", "in place")),
        (_ema_online, ("ONLINE",)),
        (_ema_copy, ("copy of the online",)),
        (_ema_new_params, ("replaced by new objects",)),
        (_ema_history, ("autograd",)),
        (_ema_params_only, ("buffer in_mean", "copy them")),
    ],
    ids=["swapped", "rebind", "moves-online", "copy", "new-params", "autograd-history",
         "forgets-buffers"],
)
def test_ema_wrong_answers(fn: Callable[..., Any], fragments: tuple[str, ...]) -> None:
    _fails(E.check_ema_update, fn, *fragments)


def _knn(normalise: bool = True, weight: str = "exp", dk: int = 0, divide: bool = True,
         reverse: bool = False) -> Callable[..., Any]:
    def knn_scores(x_train, y_train, x_test, k=20, temperature=0.07):
        tr, te = x_train, x_test
        if normalise:
            tr = tr / np.linalg.norm(tr, axis=1, keepdims=True)
            te = te / np.linalg.norm(te, axis=1, keepdims=True)
        sim = te @ tr.T
        nn = np.argsort(sim if reverse else -sim, axis=1)[:, : k + dk]
        s = np.take_along_axis(sim, nn, axis=1)
        with np.errstate(over="ignore", invalid="ignore"):  # un-normalised sims overflow exp
            w = {"exp": np.exp(s / temperature), "uniform": np.ones_like(s),
                 "noT": np.exp(s)}[weight]
            num = np.einsum("qk,qkf->qf", w, y_train[nn])
            return num / w.sum(1, keepdims=True) if divide else num

    return knn_scores


@pytest.mark.parametrize(
    ("fn", "fragments"),
    [
        (_knn(normalise=False), ("L2-normalise", "COSINE")),
        (_knn(weight="uniform"), ("votes equally",)),
        (_knn(weight="noT"), ("forgot the temperature",)),
        (_knn(dk=1), ("k+1",)),
        (_knn(divide=False), ("divided by the total weight",)),
        (_knn(reverse=True), ("LEAST similar",)),
    ],
    ids=["no-normalise", "uniform", "no-temperature", "k-plus-1", "not-divided", "least-similar"],
)
def test_knn_wrong_answers(fn: Callable[..., Any], fragments: tuple[str, ...]) -> None:
    _fails(E.check_knn_scores, fn, *fragments)


def _roll(order: str = "left", residual: str = "mix", fuse: str = "mean",
          layers: str = "all") -> Callable[..., Any]:
    """A student's rollout with one mistake: the checker's own catalogue of wrong variants,
    plus a last-layer-only rollout."""
    def rollout(attn, residual_weight=0.5):
        seq = {"all": attn, "last": attn[-1:]}[layers]
        return E._rollout_variant(seq, residual_weight, fuse=fuse, order=order, residual=residual)

    return rollout


@pytest.mark.parametrize(
    ("fn", "fragments"),
    [
        (_roll(order="right"), ("wrong order", "R = A_layer @ R")),
        (_roll(residual="none"), ("residual connection",)),
        (_roll(residual="add"), ("I + A",)),
        (_roll(fuse="max"), ("max",)),
        (_roll(layers="last"), ("last layer",)),
    ],
    ids=["right-multiply", "no-residual", "residual-add", "max-fusion", "last-layer-only"],
)
def test_rollout_wrong_answers(fn: Callable[..., Any], fragments: tuple[str, ...]) -> None:
    _fails(E.check_attention_rollout, fn, *fragments)


def _dino(probs: str = "right", center: str = "right", grad: bool = False) -> Callable[..., Any]:
    """A student's DINO targets with one mistake."""
    def dino_targets(teacher_logits, center_, temperature, momentum):
        t = teacher_logits if grad else teacher_logits.detach()
        mean = t.mean(0, keepdim=True)
        new = {"right": momentum * center_ + (1 - momentum) * mean,
               "swapped": (1 - momentum) * center_ + momentum * mean,
               "per-sample": momentum * center_ + (1 - momentum) * t,
               "stale": center_}[center]
        used = new if probs == "updated-first" else center_
        logits = {"no-centre": t / temperature, "divide-first": t / temperature - used,
                  "no-temperature": t - used}.get(probs, (t - used) / temperature)
        dim = 0 if probs == "batch-softmax" else -1
        return F.softmax(logits, dim=dim), new.detach() if not grad else new

    return dino_targets


@pytest.mark.parametrize(
    ("fn", "fragments"),
    [
        (_dino(probs="no-centre"), ("did not subtract the centre",)),
        (_dino(probs="divide-first"), ("subtract first",)),
        (_dino(probs="no-temperature"), ("forgot the temperature",)),
        (_dino(probs="batch-softmax"), ("over the batch", "dim=-1")),
        (_dino(probs="updated-first"), ("BEFORE the update",)),
        (_dino(center="swapped"), ("swapped the momentum",)),
        (_dino(center="per-sample"), ("ONE vector",)),
        (_dino(center="stale"), ("did not move",)),
        (_dino(grad=True), ("gradient", "no_grad")),
    ],
    ids=["no-centre", "divide-first", "no-temperature", "batch-softmax", "updated-first",
         "swapped-momentum", "per-sample-centre", "stale-centre", "gradient"],
)
def test_dino_centering_wrong_answers(fn: Callable[..., Any], fragments: tuple[str, ...]) -> None:
    _fails(E.check_dino_centering, fn, *fragments)


def test_unexpected_exception_names_the_case() -> None:
    def broken(grid, scale, aspect, rng):
        return grid[5]

    msg = _fails(E.check_sample_block, broken, "hidden case #1", "IndexError")
    assert "grid=(14, 14)" in msg
