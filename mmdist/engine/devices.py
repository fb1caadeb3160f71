"""Which device a rank runs on, how many CPU threads it uses, and the CUDA numerics switches.

Everything here is decided once per process, before the model or any CUDA kernel exists:

- ``resolve_device``: 'auto' is CUDA when a GPU is visible, the CPU when the job was given none,
  and an error when the job was given GPUs torch cannot see; rank r of a node takes GPU r, and
  more ranks than GPUs on a node is an error naming both counts.
- ``threads_per_rank``: torch's intra-op threads. A rank that leaves it to torch takes every core
  of the node, so eight ranks on a 64-core node would run 512 threads; the allocation decides
  instead (see the function).
- ``configure_numerics``: TF32 (on by default), cuDNN's autotuner (on unless deterministic) and
  deterministic algorithms. ``CUBLAS_WORKSPACE_CONFIG`` must be
  in the environment before cuBLAS makes its first handle, or deterministic mode fails at the
  first matmul; setting it here, before the first CUDA kernel, is early enough.
- ``synchronize``: timers call it before they read the clock, because CUDA kernels run
  asynchronously and a clock read without it measures only the launch.
"""

from __future__ import annotations

import glob
import os
import warnings
from dataclasses import dataclass
from typing import Mapping, Optional

import torch

CUBLAS_DETERMINISTIC = ":4096:8"
"""cuBLAS workspace setting that makes its kernels deterministic (torch's documented value)."""


class DeviceError(RuntimeError):
    """The device the config asks for is not there, or the job's GPUs are not usable. One line."""


GPU_VARIABLES = ("SLURM_GPUS_ON_NODE", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "CUDA_VISIBLE_DEVICES")
"""Variables by which a scheduler or the user gives a job GPUs (non-empty, not '-1')."""


def gpus_given(environ: Optional[Mapping[str, str]] = None,
               devices: Optional[list[str]] = None) -> list[str]:
    """The signs that this job was given GPUs: 'VAR=value' for each GPU variable set, and the
    /dev/nvidia<N> device files present."""
    env = os.environ if environ is None else environ
    signs = [f"{name}={env[name]}" for name in GPU_VARIABLES
             if env.get(name, "").strip() not in ("", "-1", "NoDevFiles")]
    devices = sorted(glob.glob("/dev/nvidia[0-9]*")) if devices is None else devices
    return signs + devices


def _no_gpu_seen(name: str, signs: list[str], key: str) -> DeviceError:
    wheel = torch.version.cuda or "none (a CPU build)"
    given = f"this job was given GPUs ({', '.join(signs)}) but " if signs else ""
    return DeviceError(f"{key}={name}: {given}torch sees no CUDA device (torch "
                       f"{torch.__version__}, built for CUDA {wheel}, as the DALI wheel is); check "
                       "the driver with nvidia-smi (it must support that CUDA version) and the "
                       f"job's GPU request, or set {key}=cpu to run on the CPU")


def resolve_device(name: str, local_rank: int = 0, local_world_size: int = 1,
                   environ: Optional[Mapping[str, str]] = None,
                   devices: Optional[list[str]] = None, key: str = "engine.device") -> torch.device:
    """'auto' | 'cpu' | 'cuda' -> a torch.device (CUDA: the local rank's own GPU). ``key``: the
    config key or command-line option that chose ``name``, which a DeviceError names.

    'auto' is CUDA when torch sees a GPU, the CPU when the job was given none; a job given GPUs
    that torch cannot see (a driver older than the wheels' CUDA, a wrong request) is an error,
    never a silent CPU run. More ranks on a node than GPUs is an error (NCCL would stop on two
    ranks sharing a GPU)."""
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        signs = gpus_given(environ, devices)
        if name == "auto" and not signs:
            return torch.device("cpu")
        raise _no_gpu_seen(name, signs, key)
    count = torch.cuda.device_count()
    if max(local_world_size, local_rank + 1) > count:
        raise DeviceError(f"{key}={name}: {max(local_world_size, local_rank + 1)} ranks "
                          f"on this node but {count} GPU(s) visible; start at most {count} ranks "
                          "per node (one per GPU), or request more GPUs")
    return torch.device("cuda", local_rank)


def synchronize(device: torch.device) -> None:
    """Wait for the device's queued kernels (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which SLURM and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class ThreadChoice:
    threads: int
    source: str
    """Where the number came from: 'trainer.threads', 'SLURM_CPUS_PER_TASK', 'OMP_NUM_THREADS'
    or 'cpus/ranks' (this process's usable CPUs over the ranks on its node)."""


def threads_per_rank(configured: int, local_world_size: int,
                     environ: Optional[Mapping[str, str]] = None) -> ThreadChoice:
    """torch intra-op threads for one rank, first rule that applies:

    1. ``trainer.threads`` when it is > 0;
    2. SLURM_CPUS_PER_TASK (the CPUs SLURM gave this task);
    3. OMP_NUM_THREADS when the launcher or the user set it (torchrun sets 1 unless it is set;
       launch/*.sh set it to the node's CPUs over the ranks);
    4. the usable CPUs over the ranks on this node (mpirun and the deepspeed launcher set
       nothing, and every rank would otherwise take every core).
    """
    env = os.environ if environ is None else environ
    if configured > 0:
        return ThreadChoice(configured, "trainer.threads")
    for name in ("SLURM_CPUS_PER_TASK", "OMP_NUM_THREADS"):
        raw = env.get(name, "")
        if raw.isdigit() and int(raw) > 0:
            return ThreadChoice(int(raw), name)
    return ThreadChoice(max(1, usable_cpus() // max(1, local_world_size)), "cpus/ranks")


def set_fp32_precision(tf32: bool) -> None:
    """fp32 matmuls and convolutions on TF32 tensor cores (``tf32``) or strict IEEE fp32, with
    torch's fp32_precision settings (torch >= 2.9; the allow_tf32 flags before)."""
    mode = "tf32" if tf32 else "ieee"
    matmul, conv = torch.backends.cuda.matmul, getattr(torch.backends.cudnn, "conv", None)
    if hasattr(matmul, "fp32_precision") and hasattr(conv, "fp32_precision"):
        matmul.fp32_precision = mode
        conv.fp32_precision = mode
    else:  # an older torch
        matmul.allow_tf32 = tf32
        torch.backends.cudnn.allow_tf32 = tf32


def configure_numerics(engine_config, deterministic: bool) -> None:
    """Apply ``engine.tf32`` and ``trainer.deterministic`` to this process: the GPU defaults.

    By default fp32 runs on TF32 tensor cores (matmuls and convolutions alike) and cuDNN picks
    its fastest convolution per shape (``cudnn.benchmark``): speed first, as for bf16.
    ``engine.tf32=false`` gives strict IEEE fp32. ``trainer.deterministic`` turns the autotuner
    off (it may pick different kernels from run to run) and turns deterministic algorithms on.
    ``bench step`` applies the same function, so its figures are the training step's.

    Deterministic mode on CUDA runs torch in warn-only mode: the decoder's bilinear upsampling
    has no deterministic CUDA backward, so torch warns once and keeps that one kernel (its
    gradients may differ in the last bits between runs); everything else is deterministic. On
    the CPU every kernel the model uses is deterministic and strict mode is used.
    """
    set_fp32_precision(bool(engine_config.tf32))
    torch.backends.cudnn.benchmark = not deterministic
    if not deterministic:
        return
    cuda = not engine_config.on_cpu
    if cuda:
        current = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
        if current not in (None, CUBLAS_DETERMINISTIC, ":16:8"):
            warnings.warn(f"CUBLAS_WORKSPACE_CONFIG={current!r} is not deterministic; using "
                          f"{CUBLAS_DETERMINISTIC}")
            current = None
        if current is None:
            os.environ["CUBLAS_WORKSPACE_CONFIG"] = CUBLAS_DETERMINISTIC
        torch.backends.cudnn.deterministic = True
    torch.use_deterministic_algorithms(True, warn_only=cuda)
