"""The three objectives share one trainer: presets that differ only in the objective, a resume
that cannot switch objective, DDP replicas in sync for DINO and MAE, and the cost of a step."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from helpers import blob_images, tiny_config

from radjepa_lab.config import config_diff
from radjepa_lab.errors import CheckpointError, ConfigError
from radjepa_lab.objectives import OBJECTIVE_CLASSES, step_cost
from radjepa_lab.presets import get_preset, with_objective
from radjepa_lab.train import JEPA, build_objective, pretrain


@pytest.mark.parametrize("base", ["cpu", "cpu-long", "gpu-phantom"])
@pytest.mark.parametrize("objective", ["dino", "mae"])
def test_objective_presets_change_only_the_objective(base: str, objective: str) -> None:
    a, b = get_preset(base), get_preset(f"{objective}-{base}")
    assert config_diff(a, b) == {"objective": ("jepa", objective)}
    assert a.steps * a.batch_size == b.steps * b.batch_size  # the same images seen
    with pytest.raises(ConfigError, match="use one of"):
        with_objective(a, "simclr")


def test_build_objective_picks_the_class() -> None:
    dev = torch.device("cpu")
    assert isinstance(build_objective(tiny_config(), dev), JEPA)
    for name, cls in OBJECTIVE_CLASSES.items():
        run = build_objective(with_objective(tiny_config(), name), dev)
        assert isinstance(run, cls) and run.evaluated is not None


def test_a_resume_cannot_switch_objective(tmp_path: Path) -> None:
    cfg = tiny_config(steps=4, ckpt_every=2)
    pretrain(cfg, tmp_path, dataset=blob_images(16), progress=False, max_steps=2)
    with pytest.raises(CheckpointError, match="objective 'jepa' -> 'mae'"):
        pretrain(with_objective(cfg, "mae"), tmp_path, dataset=blob_images(16), progress=False,
                 resume=True, allow_changes={"objective"})


def test_step_cost_counts_flops_and_time() -> None:
    costs = {o: step_cost(with_objective(tiny_config(), o), batch_size=4, steps=1)
             for o in ("jepa", "dino", "mae")}
    for c in costs.values():
        assert c["flops_per_image"] > 0 and c["s_per_image"] > 0
    # DINO pushes 2 + n_local views through the student, MAE a quarter of the patches
    assert costs["dino"]["flops_per_image"] > costs["jepa"]["flops_per_image"]
    assert costs["mae"]["flops_per_image"] < costs["jepa"]["flops_per_image"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world: int, port: int, out: str, objective: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    cfg = with_objective(tiny_config(steps=4, batch_size=8, ckpt_every=2, log_every=2), objective)
    res = pretrain(cfg, Path(out) / "run", dataset=blob_images(32), progress=False)
    torch.save({k: net.state_dict() for k, net in res.networks.items()},
               Path(out) / f"rank{rank}.pt")


@pytest.mark.parametrize("objective", ["dino", "mae"])
def test_two_process_ddp_keeps_every_network_in_sync(tmp_path: Path, objective: str) -> None:
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path), objective), nprocs=2, join=True)
    r0 = torch.load(tmp_path / "rank0.pt", weights_only=True)
    r1 = torch.load(tmp_path / "rank1.pt", weights_only=True)
    assert set(r0) == set(r1)
    for net in r0:  # DINO's centre too: it averages the teacher outputs of both ranks
        for k, v in r0[net].items():
            assert torch.equal(v, r1[net][k]), f"{net}.{k} diverged between ranks"
