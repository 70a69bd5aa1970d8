"""Resource use: embedding extraction streams (never more than a batch of images alive, peak
memory far below the dataset's size) and cleans up its workers after a bad file."""

from __future__ import annotations

import gc
import multiprocessing
import weakref
from pathlib import Path

import numpy as np
import pytest
import torch
from corpus import valid_dicom
from guards import reset_peak_rss, time_limit, vm_kib

from radjepa_lab.analysis.embed import extract_features
from radjepa_lab.config import ModelConfig
from radjepa_lab.data.datasets import FolderDataset
from radjepa_lab.errors import DataError
from radjepa_lab.models import build_encoder

SIZE, N, BATCH = 128, 2048, 32  # 2048 x 64 KiB = 128 MiB of images if anything kept them


class LiveCountingDataset(torch.utils.data.Dataset):
    """Images made on demand; counts how many item tensors are alive at once."""

    def __init__(self, n: int, size: int) -> None:
        self.n, self.size = n, size
        self.live = self.peak = self.made = 0

    def __len__(self) -> int:
        return self.n

    def _gone(self) -> None:
        self.live -= 1

    def __getitem__(self, i: int) -> dict:
        img = torch.full((1, self.size, self.size), (i % 251) / 250.0)
        self.live += 1
        self.made += 1
        self.peak = max(self.peak, self.live)
        weakref.finalize(img, self._gone)
        return {"img": img, "lab": torch.tensor([float(i % 2)]), "idx": i}


def _encoder() -> torch.nn.Module:
    return build_encoder(ModelConfig(img_size=SIZE, patch_size=16, embed_dim=32, depth=1,
                                     num_heads=2, pred_embed_dim=16, pred_depth=1,
                                     pred_num_heads=2))


def test_extract_features_streams_a_dataset_bigger_than_its_budget() -> None:
    ds = LiveCountingDataset(N, SIZE)
    enc = _encoder()
    data_mib = N * SIZE * SIZE * 4 / 2**20
    gc.collect()
    rss_check = reset_peak_rss()  # Linux; else only the live-tensor count is checked
    before = vm_kib("VmRSS")
    with time_limit(120, "extract_features"):
        feats = extract_features(enc, ds, pool="mean", batch_size=BATCH, device="cpu",
                                 progress=False)
    growth_mib = (vm_kib("VmHWM") - before) / 1024
    assert ds.made == N and feats.pooled.shape == (N, 32)
    np.testing.assert_array_equal(feats.idx, np.arange(N))
    assert ds.peak <= BATCH, f"{ds.peak} images alive at once (batch is {BATCH})"
    gc.collect()
    assert ds.live == 0
    if rss_check:  # features are 256 KiB; images would be 128 MiB
        assert growth_mib < 0.25 * data_mib, f"peak RSS grew {growth_mib:.0f} MiB"


def test_extract_features_with_workers_names_a_bad_file_and_reaps_workers(tmp_path: Path
                                                                          ) -> None:
    root = tmp_path / "cxr"
    root.mkdir()
    for i in range(6):
        valid_dicom(root / f"img_{i}.dcm")
    bad = root / "img_3.dcm"
    bad.write_bytes(bad.read_bytes()[:200])
    ds = FolderDataset(root, size=SIZE)
    with time_limit(90, "extract_features with workers"), pytest.raises(DataError) as info:
        extract_features(_encoder(), ds, batch_size=2, num_workers=2, device="cpu",
                         progress=False)
    assert str(bad) in str(info.value)
    gc.collect()
    assert [p for p in multiprocessing.active_children() if p.is_alive()] == []
