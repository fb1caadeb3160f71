"""Threads per rank from the allocation, and the CUDA numerics switches set before CUDA starts."""

from __future__ import annotations

import os
import re
import subprocess

import pytest
import torch

from mmdist.config import EngineConfig
from mmdist.engine.devices import (CUBLAS_DETERMINISTIC, DeviceError, configure_numerics,
                                   resolve_device, threads_per_rank, usable_cpus)

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
    saved = (torch.backends.cuda.matmul.fp32_precision, torch.backends.cudnn.conv.fp32_precision,
             torch.backends.cudnn.benchmark, torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled())
    yield
    torch.backends.cuda.matmul.fp32_precision = saved[0]
    torch.backends.cudnn.conv.fp32_precision = saved[1]
    torch.backends.cudnn.benchmark = saved[2]
    torch.use_deterministic_algorithms(saved[3], warn_only=saved[4])


def test_gpu_defaults_are_tf32_and_the_autotuner_unless_deterministic(restore_numerics):
    assert EngineConfig().tf32 is True
    configure_numerics(EngineConfig(device="cpu"), deterministic=False)
    assert torch.backends.cuda.matmul.fp32_precision == "tf32"
    assert torch.backends.cudnn.conv.fp32_precision == "tf32"
    assert torch.backends.cudnn.benchmark
    configure_numerics(EngineConfig(device="cpu", tf32=False), deterministic=True)
    assert torch.backends.cuda.matmul.fp32_precision == "ieee"  # strict fp32 on request
    assert torch.backends.cudnn.conv.fp32_precision == "ieee"
    assert not torch.backends.cudnn.benchmark  # the autotuner may change kernels between runs


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


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the machine without a usable GPU")
@pytest.mark.parametrize("env, devices, sign", [
    ({"SLURM_GPUS_ON_NODE": "4"}, [], "SLURM_GPUS_ON_NODE=4"),
    ({"SLURM_JOB_GPUS": "0,1"}, [], "SLURM_JOB_GPUS=0,1"),
    ({"CUDA_VISIBLE_DEVICES": "0"}, [], "CUDA_VISIBLE_DEVICES=0"),
    ({}, ["/dev/nvidia0"], "/dev/nvidia0"),
])
def test_auto_never_falls_back_to_the_cpu_when_the_job_was_given_gpus(env, devices, sign):
    with pytest.raises(DeviceError, match=rf"engine.device=auto: this job was given GPUs "
                                          rf"\({re.escape(sign)}\) but torch sees no CUDA device "
                                          r".*nvidia-smi.*engine.device=cpu"):
        resolve_device("auto", environ=env, devices=devices)
    assert torch.version.cuda is None or f"CUDA {torch.version.cuda}" in str(
        pytest.raises(DeviceError, resolve_device, "auto", environ=env, devices=devices).value)
    assert resolve_device("cpu", environ=env, devices=devices).type == "cpu"  # on purpose


@pytest.mark.skipif(torch.cuda.is_available(), reason="tests the machine without a GPU")
def test_auto_is_the_cpu_for_a_job_given_no_gpus():
    env = {"CUDA_VISIBLE_DEVICES": "", "SLURM_JOB_GPUS": ""}
    assert resolve_device("auto", environ=env, devices=[]).type == "cpu"
    with pytest.raises(DeviceError, match="engine.device=cuda: torch sees no CUDA device"):
        resolve_device("cuda", environ=env, devices=[])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_more_ranks_on_a_node_than_gpus_names_both_counts():
    count = torch.cuda.device_count()
    assert resolve_device("cuda", count - 1, count) == torch.device("cuda", count - 1)
    with pytest.raises(DeviceError, match=rf"{count + 1} ranks on this node but {count} GPU"):
        resolve_device("auto", 0, count + 1)
