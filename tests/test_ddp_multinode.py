"""Two *nodes* of one process each, started by torchrun through the c10d rendezvous on loopback
(gloo on CPU): the multi-node path of the README's "Scaling out" section, end to end."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import torch

WORKER = """
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from radjepa_lab.config import MaskConfig, ModelConfig, TrainConfig
from radjepa_lab.train import pretrain

out = Path(sys.argv[1])
torch.set_num_threads(1)
cfg = TrainConfig(
    model=ModelConfig(img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2,
                      pred_embed_dim=16, pred_depth=1, pred_num_heads=2),
    masks=MaskConfig(min_keep=4), steps=4, batch_size=8, warmup=1, n_train=32, log_every=2,
    ckpt_every=2, monitor_batch=16, device="cpu")
res = pretrain(cfg, out / "run", progress=False)
rank = int(__import__("os").environ["RANK"])
torch.save({"encoder": res.encoder.state_dict(), "target": res.target_encoder.state_dict(),
            "predictor": res.predictor.state_dict(), "world_size": res.info["world_size"],
            "group_left": dist.is_initialized()}, out / f"rank{rank}.pt")
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_nodes_through_c10d_rendezvous_hold_identical_weights(tmp_path: Path) -> None:
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    endpoint = f"127.0.0.1:{_free_port()}"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RANK", None), env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1",
           "--rdzv-backend", "c10d", "--rdzv-endpoint", endpoint, "--rdzv-id", "radjepa-test",
           "--max-restarts", "0", str(script), str(tmp_path)]
    nodes = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True) for _ in range(2)]
    logs = [p.communicate(timeout=300)[0] for p in nodes]
    for p, log in zip(nodes, logs, strict=True):
        assert p.returncode == 0, log[-3000:]
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert r0["world_size"] == r1["world_size"] == 2
    for part in ("encoder", "target", "predictor"):
        for k, v in r0[part].items():
            assert torch.equal(v, r1[part][k]), f"{part}.{k} differs between the two nodes"
    assert not r0["group_left"] and not r1["group_left"]  # the trainer tore its group down
    ckpt = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert ckpt["step"] == 4 and ckpt["data"]["world_size"] == 2 and len(ckpt["rng"]) == 2
