"""Threads per rank from the allocation, and the CUDA numerics switches set before CUDA starts."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
import torch

from mmdist.config import EngineConfig
from mmdist.engine.devices import (CUBLAS_DETERMINISTIC, configure_numerics, threads_per_rank,
                                   usable_cpus)

from test_distributed_launchers import REPO, launch_env


@pytest.mark.parametrize("configured, env, expected", [
    (3, {"SLURM_CPUS_PER_TASK": "8", "OMP_NUM_THREADS": "2"}, (3, "trainer.threads")),
    (0, {"SLURM_CPUS_PER_TASK": "8", "OMP_NUM_THREADS": "2"}, (8, "SLURM_CPUS_PER_TASK")),
    (0, {"OMP_NUM_THREADS": "2"}, (2, "OMP_NUM_THREADS")),
    (0, {"OMP_NUM_THREADS": ""}, (None, "cpus/ranks")),
])
def test_threads_follow_the_allocation(configured, env, expected):
    choice = threads_per_rank(configured, local_world_size=1, environ=env)
    threads, source = expected
    assert choice.source == source
    assert choice.threads == (threads if threads is not None else usable_cpus())


def test_ranks_of_a_node_share_its_cpus():
    assert threads_per_rank(0, 10_000, environ={}).threads == 1  # never 0
    assert threads_per_rank(0, 1, environ={}).threads == usable_cpus()


@pytest.fixture()
def restore_numerics(monkeypatch):
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled())
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved[:2]
    torch.use_deterministic_algorithms(saved[2], warn_only=saved[3])


def test_tf32_is_explicit_and_off_by_default(restore_numerics):
    assert EngineConfig().tf32 is False
    configure_numerics(EngineConfig(device="cpu"), deterministic=False)
    assert not torch.backends.cuda.matmul.allow_tf32 and not torch.backends.cudnn.allow_tf32
    configure_numerics(EngineConfig(device="cpu", tf32=True), deterministic=False)
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32


def test_deterministic_on_cuda_sets_cublas_before_cuda_and_warns_only(restore_numerics):
    configure_numerics(EngineConfig(device="cuda"), deterministic=True)
    assert os.environ["CUBLAS_WORKSPACE_CONFIG"] == CUBLAS_DETERMINISTIC
    assert torch.are_deterministic_algorithms_enabled()
    assert torch.is_deterministic_algorithms_warn_only_enabled()  # bilinear upsampling backward


def test_deterministic_on_the_cpu_is_strict(restore_numerics):
    configure_numerics(EngineConfig(device="cpu"), deterministic=True)
    assert "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    assert torch.are_deterministic_algorithms_enabled()
    assert not torch.is_deterministic_algorithms_warn_only_enabled()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_the_torchrun_launcher_gives_each_rank_its_share_of_the_cpus(tmp_path):
    env = launch_env()
    del env["OMP_NUM_THREADS"]
    env["NPROC"] = "1"
    command = [str(REPO / "launch" / "torchrun.sh"), "configs/tiny.yaml",
               f"output_dir={tmp_path / 'run'}", "trainer.max_steps=1", "trainer.threads=0",
               "trainer.checkpoint_every=0", "trainer.image_log_every=0"]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=250)
    assert done.returncode == 0, done.stderr[-3000:]
    match = re.search(r"(\d+) CPU thread\(s\) per rank \((\w+)\)", done.stdout)
    assert match, done.stdout[-2000:]
    # torchrun alone would have set OMP_NUM_THREADS=1.
    assert (int(match.group(1)), match.group(2)) == (usable_cpus(), "OMP_NUM_THREADS")
