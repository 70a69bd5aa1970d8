"""The step stream: every step's batch and masks are a pure function of (seed, step, rank)."""

from __future__ import annotations

import pytest
import torch
from helpers import blob_images, tiny_config

from radjepa_lab.batches import StepBatchSampler, cache_dataset, step_masks
from radjepa_lab.data.transforms import resize_batch
from radjepa_lab.errors import DataError
from radjepa_lab.masks import MultiBlockMaskSampler


def test_batch_sampler_is_a_function_of_the_step() -> None:
    s = StepBatchSampler(10, 4, seed=1, start_step=0, steps=10)
    stream = torch.cat([s.batch(i) for i in range(5)])  # 20 positions = 2 epochs
    assert sorted(stream[:10].tolist()) == list(range(10))
    assert sorted(stream[10:].tolist()) == list(range(10))
    resumed = StepBatchSampler(10, 4, seed=1, start_step=3, steps=10)
    assert torch.equal(resumed.batch(3), s.batch(3))
    r0 = StepBatchSampler(10, 4, seed=1, start_step=0, steps=10, rank=0, world_size=2)
    r1 = StepBatchSampler(10, 4, seed=1, start_step=0, steps=10, rank=1, world_size=2)
    assert torch.equal(torch.cat([r0.batch(2), r1.batch(2)]), s.batch(2))


def test_step_masks_are_a_function_of_seed_step_and_rank() -> None:
    sampler = MultiBlockMaskSampler((8, 8))
    a, b = step_masks(sampler, 4, seed=0, step=7, rank=0), step_masks(sampler, 4, 0, 7, 0)
    assert torch.equal(a.context, b.context) and torch.equal(a.targets, b.targets)
    for other in (step_masks(sampler, 4, 0, 8, 0), step_masks(sampler, 4, 0, 7, 1),
                  step_masks(sampler, 4, 1, 7, 0)):
        assert not (torch.equal(a.context, other.context)
                    and torch.equal(a.targets, other.targets))


def test_cache_dataset_stores_uint8_at_the_model_size_and_refuses_nan() -> None:
    cfg = tiny_config()
    data = blob_images(10, size=48)  # resized to the model's 32 px
    cached = cache_dataset(data, cfg)
    assert cached.dtype == torch.uint8 and cached.shape == (10, 1, 32, 32)
    want = resize_batch(torch.stack([d["img"] for d in data]), 32)
    assert (cached.float() / 255 - want).abs().max() <= 0.5 / 255 + 1e-6
    data[3] = {"img": torch.full_like(data[3]["img"], float("nan"))}
    with pytest.raises(DataError, match="image 3 .*NaN"):
        cache_dataset(data, cfg)


def test_crops_are_part_of_the_step_stream_and_reproducible() -> None:
    import torch
    from helpers import blob_images, tiny_config

    from radjepa_lab.batches import cache_dataset, step_stream
    from radjepa_lab.masks import MultiBlockMaskSampler

    cfg = tiny_config(crop_scale=(0.3, 0.6))
    data = blob_images(32)
    cached = cache_dataset(data, cfg)
    masks = MultiBlockMaskSampler(cfg.model.grid, cfg.masks)

    def first_two(c):
        it = step_stream(data, cached, c, 0, masks, torch.device("cpu"))
        return [next(it)[1] for _ in range(2)]

    a, b = first_two(cfg), first_two(cfg)
    plain = first_two(tiny_config())
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))  # a function of (seed, step)
    assert not torch.equal(a[0], plain[0]) and a[0].shape == plain[0].shape


@pytest.mark.parametrize("objective", ["dino", "mae"])
def test_the_step_stream_serves_every_objective(objective: str) -> None:
    from radjepa_lab.batches import MultiCrop, step_stream
    from radjepa_lab.masks import PatchMasks
    from radjepa_lab.presets import with_objective
    from radjepa_lab.train import build_objective

    cfg = with_objective(tiny_config(), objective)
    data = blob_images(32)
    sampler = build_objective(cfg, torch.device("cpu")).sampler()

    def first(c):
        it = step_stream(data, cache_dataset(data, c), c, 0, sampler, torch.device("cpu"))
        return next(it)

    (_, imgs, masks), (_, again, masks2) = first(cfg), first(cfg)
    if objective == "dino":  # views instead of images, no masks
        assert isinstance(imgs, MultiCrop) and masks is None
        assert imgs.globals.shape[0] == 2 * cfg.batch_size
        assert torch.equal(imgs.globals, again.globals) and torch.equal(imgs.locals, again.locals)
    else:
        assert isinstance(masks, PatchMasks) and torch.equal(masks.keep, masks2.keep)
        assert masks.keep.shape == (cfg.batch_size, 4)
