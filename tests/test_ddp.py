"""Two CPU processes (gloo) through the real DDP path: replicas must stay in sync."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from helpers import blob_images, tiny_config

from radjepa_lab.models import build_encoder
from radjepa_lab.train import pretrain


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    cfg = tiny_config(steps=6, batch_size=8, ckpt_every=3, log_every=2)
    res = pretrain(cfg, Path(out) / "run", dataset=blob_images(32), progress=False)
    torch.save({"encoder": res.encoder.state_dict(), "target": res.target_encoder.state_dict(),
                "predictor": res.predictor.state_dict(), "history": res.history,
                "initialised_after": dist.is_initialized()}, Path(out) / f"rank{rank}.pt")


def test_two_process_gloo_ddp_keeps_replicas_in_sync(tmp_path: Path) -> None:
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    for part in ("encoder", "target", "predictor"):
        for k, v in r0[part].items():
            assert torch.equal(v, r1[part][k]), f"{part}.{k} diverged between ranks"
    start = build_encoder(tiny_config().model, seed=0).state_dict()  # training really happened
    assert not torch.equal(start["blocks.0.attn.qkv.weight"], r0["encoder"]["blocks.0.attn.qkv.weight"])
    assert r0["history"] and not r1["history"]  # only rank 0 logs
    assert r0["history"][-1]["step"] == 6
    assert not r0["initialised_after"]  # the trainer tore down the group it created
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["data"]["world_size"] == 2 and len(ckpt["rng"]) == 2
