"""Rank discovery and process-group start-up, in one place for every launcher.

``discover_ranks()`` reads who this process is from the environment its launcher left, in this
order (the first that applies wins):

1. ``env``/``torchrun``: RANK and WORLD_SIZE are set (torchrun, torch elastic, the deepspeed
   launcher, or a user). LOCAL_RANK, MASTER_ADDR and MASTER_PORT come from the same variables.
2. ``mpi``: Open MPI's OMPI_COMM_WORLD_RANK/SIZE/LOCAL_RANK (checked before SLURM because mpirun
   inside an sbatch script inherits the batch step's SLURM_PROCID=0 on every rank), or an MPI
   started through PMI (PMI_RANK/PMI_SIZE, MPICH and Intel MPI) read through mpi4py.
3. ``slurm``: SLURM_PROCID, SLURM_LOCALID and SLURM_STEP_NUM_TASKS (or SLURM_NTASKS), with
   MASTER_ADDR the first host of the step's (or job's) node list and MASTER_PORT derived from the
   job id, unless MASTER_ADDR/MASTER_PORT are already set.
4. ``single``: one process on 127.0.0.1.

``init_distributed(engine_config)`` then writes MASTER_ADDR/PORT, RANK, WORLD_SIZE and LOCAL_RANK
into ``os.environ`` itself (DeepSpeed's own MPI discovery would pick a non-loopback address, and
every library downstream reads these variables) and starts the torch process group: nccl on GPUs,
gloo on CPUs, with ``engine.collective_timeout_s`` as the collective timeout. torch has no MPI
backend here, so MPI is used for discovery only.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
from dataclasses import dataclass
from datetime import timedelta
from typing import Mapping, Optional

import torch
import torch.distributed as dist

LOOPBACK = "127.0.0.1"
SLURM_PORT_BASE = 10000
SLURM_PORT_SPAN = 20000
"""Ports derived from a SLURM job id fall in [10000, 30000): below Linux's ephemeral range
(32768+), so an outgoing connection never holds the port a job is about to listen on."""


@dataclass(frozen=True)
class RankInfo:
    """Who this process is in the job and where rank 0 listens."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    source: str
    """Which launcher's variables were read: 'torchrun', 'env', 'mpi', 'slurm' or 'single'."""
    local_world_size: int = 1
    """Ranks on this node (sizes the CPU threads of each; 1 when the launcher does not say)."""

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    def as_env(self) -> dict[str, str]:
        """The torch ``env://`` variables for this rank."""
        return {"MASTER_ADDR": self.master_addr, "MASTER_PORT": str(self.master_port),
                "RANK": str(self.rank), "WORLD_SIZE": str(self.world_size),
                "LOCAL_RANK": str(self.local_rank)}


class RankDiscoveryError(RuntimeError):
    """The launcher's variables are missing or contradict each other; the message names them."""


# ---- helpers ------------------------------------------------------------------------------------

def _int(env: Mapping[str, str], name: str, default: Optional[int] = None) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        if default is None:
            raise RankDiscoveryError(f"environment variable {name} is not set")
        return default
    try:
        return int(raw)
    except ValueError:
        raise RankDiscoveryError(f"environment variable {name}={raw!r} is not an integer") from None


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def first_host(nodelist: str) -> str:
    """The first host of a SLURM node list: ``'n[1-2],gpu07'`` -> ``'n1'``.

    Uses ``scontrol show hostnames`` when it is installed (it knows every syntax SLURM accepts);
    otherwise takes the first comma-separated item and the first value of each bracket group,
    keeping zero padding (``'gpu[007-009]'`` -> ``'gpu007'``).
    """
    nodelist = nodelist.strip()
    if not nodelist:
        raise RankDiscoveryError("SLURM node list is empty")
    if shutil.which("scontrol"):
        try:
            done = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True,
                                  text=True, timeout=10, check=True)
            hosts = done.stdout.split()
            if hosts:
                return hosts[0]
        except (subprocess.SubprocessError, OSError):
            pass  # no controller reachable: the parser below knows the common syntax
    return _parse_first_host(nodelist)


def _parse_first_host(nodelist: str) -> str:
    depth, end = 0, len(nodelist)
    for index, char in enumerate(nodelist):
        depth += (char == "[") - (char == "]")
        if char == "," and depth == 0:
            end = index
            break
    item = nodelist[:end]

    def first_value(match: re.Match) -> str:
        return re.split(r"[,-]", match.group(1), maxsplit=1)[0]

    host = re.sub(r"\[([^\]]*)\]", first_value, item)
    if not host or "[" in host or "]" in host:
        raise RankDiscoveryError(f"cannot read a host name from SLURM node list {nodelist!r}")
    return host


def slurm_port(job_id: int) -> int:
    """MASTER_PORT for a SLURM job: a pure function of the job id, so every task agrees."""
    return SLURM_PORT_BASE + job_id % SLURM_PORT_SPAN


# ---- the launchers ---------------------------------------------------------------------------

def _from_env(env: Mapping[str, str]) -> RankInfo:
    rank, world = _int(env, "RANK"), _int(env, "WORLD_SIZE")
    source = "torchrun" if ("TORCHELASTIC_RUN_ID" in env or "GROUP_RANK" in env) else "env"
    if world > 1 and "MASTER_PORT" not in env:
        raise RankDiscoveryError(f"RANK={rank} WORLD_SIZE={world} are set but MASTER_PORT is not")
    return RankInfo(rank, world, _int(env, "LOCAL_RANK", rank), env.get("MASTER_ADDR", LOOPBACK),
                    _int(env, "MASTER_PORT", 29500), source,
                    _int(env, "LOCAL_WORLD_SIZE", _slurm_local_tasks(env, world)))


def _from_open_mpi(env: Mapping[str, str]) -> RankInfo:
    rank = _int(env, "OMPI_COMM_WORLD_RANK")
    world = _int(env, "OMPI_COMM_WORLD_SIZE")
    local = _int(env, "OMPI_COMM_WORLD_LOCAL_RANK", rank)
    local_size = _int(env, "OMPI_COMM_WORLD_LOCAL_SIZE", world)
    one_node = local_size == world
    addr, port = env.get("MASTER_ADDR"), env.get("MASTER_PORT")
    if addr is None and one_node:
        addr = LOOPBACK
    if addr is None or port is None:
        addr, port = _mpi_broadcast_master(addr)
    return RankInfo(rank, world, local, addr, int(port), "mpi", local_size)


def _from_pmi(env: Mapping[str, str]) -> RankInfo:
    rank, world = _int(env, "PMI_RANK"), _int(env, "PMI_SIZE")
    local = _int(env, "MPI_LOCALRANKID", _int(env, "PMI_LOCAL_RANK", rank))
    addr, port = env.get("MASTER_ADDR"), env.get("MASTER_PORT")
    if addr is None or port is None:
        addr, port = _mpi_broadcast_master(addr)
    return RankInfo(rank, world, local, addr, int(port), "mpi",
                    _int(env, "MPI_LOCALNRANKS", _int(env, "PMI_LOCAL_SIZE", world)))


def _mpi_broadcast_master(addr: Optional[str]) -> tuple[str, int]:
    """Rank 0 picks its address (unless given) and a free port; MPI broadcasts them to all ranks.
    Imported only here: importing mpi4py initialises MPI, which only makes sense under mpirun."""
    try:
        from mpi4py import MPI
    except ImportError:
        raise RankDiscoveryError("launched by MPI without MASTER_ADDR/MASTER_PORT and mpi4py is "
                                 "not installed: install mpi4py or export both variables") from None
    comm = MPI.COMM_WORLD
    payload = None
    if comm.Get_rank() == 0:
        host = addr or socket.gethostname()
        payload = (host, free_port(LOOPBACK if host == LOOPBACK else ""))
    return comm.bcast(payload, root=0)


def _from_slurm(env: Mapping[str, str]) -> RankInfo:
    rank = _int(env, "SLURM_PROCID")
    # SLURM_STEP_NUM_TASKS is the srun step's size; SLURM_NTASKS the allocation's.
    world = _int(env, "SLURM_STEP_NUM_TASKS", _int(env, "SLURM_NTASKS", 1))
    local = _int(env, "SLURM_LOCALID", 0)
    addr = env.get("MASTER_ADDR")
    if addr is None:
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST") \
            or env.get("SLURM_NODELIST")
        if not nodelist:
            raise RankDiscoveryError("SLURM_PROCID is set but SLURM_JOB_NODELIST is not")
        addr = first_host(nodelist)
    if "MASTER_PORT" in env:
        port = _int(env, "MASTER_PORT")
    else:
        port = slurm_port(_int(env, "SLURM_JOB_ID", _int(env, "SLURM_JOBID", 0)))
    return RankInfo(rank, world, local, addr, port, "slurm", _slurm_local_tasks(env, world))


def _slurm_local_tasks(env: Mapping[str, str], default: int) -> int:
    """Tasks on this node from SLURM_TASKS_PER_NODE-style values ('8(x4)' or '2,1'), where the
    first group is this node's count only when all nodes agree; else ``default``."""
    for name in ("SLURM_STEP_TASKS_PER_NODE", "SLURM_TASKS_PER_NODE"):
        raw = env.get(name, "")
        match = re.fullmatch(r"(\d+)(\(x\d+\))?", raw)
        if match:
            return int(match.group(1))
    return default


def discover_ranks(environ: Optional[Mapping[str, str]] = None) -> RankInfo:
    """Read rank, world size, local rank and rank 0's address from the launcher's variables.

    ``environ`` defaults to ``os.environ``; nothing is written (see ``export_rank_env``).
    Raises RankDiscoveryError naming the variable when they are incomplete or inconsistent.
    """
    env = os.environ if environ is None else environ
    if "RANK" in env and "WORLD_SIZE" in env:
        info = _from_env(env)
    elif "OMPI_COMM_WORLD_RANK" in env:
        info = _from_open_mpi(env)
    elif "PMI_RANK" in env and "PMI_SIZE" in env:
        info = _from_pmi(env)
    elif "SLURM_PROCID" in env:
        info = _from_slurm(env)
    else:
        info = RankInfo(0, 1, 0, env.get("MASTER_ADDR", LOOPBACK),
                        _int(env, "MASTER_PORT", 0) or free_port(), "single", 1)
    if not 0 <= info.rank < info.world_size:
        raise RankDiscoveryError(f"{info.source}: rank {info.rank} is outside world size "
                                 f"{info.world_size}")
    if info.local_world_size < 1:
        raise RankDiscoveryError(f"{info.source}: local world size {info.local_world_size} < 1")
    if info.local_rank < 0:
        raise RankDiscoveryError(f"{info.source}: local rank {info.local_rank} is negative")
    return info


def export_rank_env(info: RankInfo) -> None:
    """Write MASTER_ADDR/PORT, RANK, WORLD_SIZE and LOCAL_RANK for this process."""
    os.environ.update(info.as_env())


# ---- the process group ------------------------------------------------------------------------

def backend_for(device: torch.device) -> str:
    return "nccl" if device.type == "cuda" else "gloo"


def process_group_timeout_s(engine_config, device: torch.device) -> float:
    """The process group's own collective timeout.

    gloo raises a Python error when a collective times out, which mmdist.engine.ddp turns into a
    message naming the silent ranks, so gloo gets ``engine.collective_timeout_s`` itself. NCCL
    instead aborts the process from its own watchdog thread, with a message that names no rank;
    it gets a grace period on top so that mmdist's progress watchdog (mmdist.engine.watchdog),
    armed at ``engine.collective_timeout_s``, reports first.
    """
    timeout = engine_config.collective_timeout_s
    if device.type == "cuda":
        return timeout + max(30.0, 0.1 * timeout)
    return timeout


def init_distributed(engine_config, info: Optional[RankInfo] = None) -> RankInfo:
    """Discover this rank, export its variables and start the default process group.

    ``engine_config`` is an ``EngineConfig`` (device, collective_timeout_s). Starting is
    idempotent: a process group that already exists is kept. With a CUDA device the local rank's
    GPU becomes the current device before nccl starts.
    """
    from mmdist.engine.devices import resolve_device

    info = info or discover_ranks()
    export_rank_env(info)
    device = resolve_device(engine_config.device, info.local_rank, info.local_world_size)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        dist.init_process_group(backend_for(device), init_method="env://", rank=info.rank,
                                world_size=info.world_size,
                                timeout=timedelta(seconds=process_group_timeout_s(
                                    engine_config, device)),
                                **kwargs)
    return info


def destroy_distributed() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
