"""Rank discovery reads torchrun, Open MPI, SLURM and plain environments the same way."""

import shutil

import pytest

from mmdist.engine.distributed import (RankDiscoveryError, _parse_first_host, discover_ranks,
                                       first_host, slurm_port)


def test_single_process_gets_loopback_and_a_port():
    info = discover_ranks({})
    assert (info.rank, info.world_size, info.local_rank, info.source) == (0, 1, 0, "single")
    assert info.master_addr == "127.0.0.1" and 0 < info.master_port < 65536
    assert not info.is_distributed


def test_torchrun_variables():
    env = {"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "node7",
           "MASTER_PORT": "29400", "TORCHELASTIC_RUN_ID": "abc"}
    info = discover_ranks(env)
    # Without LOCAL_WORLD_SIZE every rank is taken to be on this node.
    assert info == type(info)(3, 4, 1, "node7", 29400, "torchrun", 4)
    assert discover_ranks({**env, "LOCAL_WORLD_SIZE": "2"}).local_world_size == 2
    assert info.as_env() == {"MASTER_ADDR": "node7", "MASTER_PORT": "29400", "RANK": "3",
                             "WORLD_SIZE": "4", "LOCAL_RANK": "1"}
    # The deepspeed launcher sets the same variables without torch elastic's.
    env.pop("TORCHELASTIC_RUN_ID")
    assert discover_ranks(env).source == "env"


def test_torchrun_variables_win_over_slurm_and_mpi():
    env = {"RANK": "1", "WORLD_SIZE": "2", "MASTER_PORT": "1234", "SLURM_PROCID": "0",
           "SLURM_NTASKS": "1", "OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "1"}
    assert discover_ranks(env).rank == 1


def test_open_mpi_one_node_uses_loopback():
    env = {"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2",
           "OMPI_COMM_WORLD_LOCAL_RANK": "1", "OMPI_COMM_WORLD_LOCAL_SIZE": "2",
           "MASTER_PORT": "23456",
           # mpirun inside an sbatch script: the batch step's SLURM_PROCID=0 must not win
           "SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_JOB_NODELIST": "n1", "SLURM_JOB_ID": "5"}
    info = discover_ranks(env)
    assert (info.rank, info.world_size, info.local_rank, info.source) == (1, 2, 1, "mpi")
    assert (info.master_addr, info.master_port) == ("127.0.0.1", 23456)
    assert info.local_world_size == 2


def test_slurm_variables_and_derived_master():
    env = {"SLURM_PROCID": "3", "SLURM_LOCALID": "1", "SLURM_NTASKS": "4",
           "SLURM_JOB_NODELIST": "n[1-2]", "SLURM_JOB_ID": "123457"}
    info = discover_ranks(env)
    assert (info.rank, info.world_size, info.local_rank, info.source) == (3, 4, 1, "slurm")
    assert info.master_addr == "n1"
    assert info.master_port == slurm_port(123457) == 10000 + 123457 % 20000
    assert info.local_world_size == 4  # no SLURM_TASKS_PER_NODE: all on one node
    assert discover_ranks({**env, "SLURM_TASKS_PER_NODE": "2(x2)"}).local_world_size == 2
    # The step's size wins over the allocation's; explicit MASTER_* win over derived ones.
    env.update({"SLURM_STEP_NUM_TASKS": "8", "SLURM_PROCID": "5", "MASTER_ADDR": "head",
                "MASTER_PORT": "4000"})
    info = discover_ranks(env)
    assert (info.world_size, info.master_addr, info.master_port) == (8, "head", 4000)


@pytest.mark.parametrize("nodelist, host", [
    ("n1", "n1"), ("n[1-2]", "n1"), ("gpu[007-009,011],cpu1", "gpu007"),
    ("cpu1,gpu[007-009]", "cpu1"), ("rack[2-3]-node[05,07]", "rack2-node05"),
    ("a[3,5-6]", "a3")])
def test_first_host_parser(nodelist, host):
    assert _parse_first_host(nodelist) == host


@pytest.mark.skipif(shutil.which("scontrol") is None, reason="SLURM's scontrol is not installed")
def test_first_host_agrees_with_scontrol():
    for nodelist in ("n[1-2]", "gpu[007-009,011],cpu1", "rack[2-3]-node[05,07]"):
        assert first_host(nodelist) == _parse_first_host(nodelist)


@pytest.mark.parametrize("env, needle", [
    ({"RANK": "x", "WORLD_SIZE": "2", "MASTER_PORT": "1"}, "RANK='x'"),
    ({"RANK": "2", "WORLD_SIZE": "2", "MASTER_PORT": "1"}, "outside world size 2"),
    ({"RANK": "1", "WORLD_SIZE": "2"}, "MASTER_PORT"),
    ({"SLURM_PROCID": "0", "SLURM_NTASKS": "2"}, "SLURM_JOB_NODELIST"),
])
def test_bad_variables_are_named(env, needle):
    with pytest.raises(RankDiscoveryError, match=needle.replace("[", r"\[")):
        discover_ranks(env)
