#!/bin/bash
# Train mmdist on SLURM: one rank per task, one task per GPU.
#
#   sbatch slurm/train.sh CONFIG [key=value ...]
#   sbatch --nodes=4 --gpus-per-node=8 --ntasks-per-node=8 --partition=gpu --account=proj \
#          slurm/train.sh configs/default.yaml output_dir=runs/big engine.strategy=ddp
#
# Any #SBATCH line below can be overridden on the sbatch command line; keep --ntasks-per-node
# equal to --gpus-per-node. Submit from the repository root (the job runs there).
#
# Preemption and time limits: SLURM sends USR2 to every rank 90 s before the end (the check that
# sends it runs about once a minute, so it may come up to a minute earlier). The trainer finishes
# its step, rank 0 writes a checkpoint, every rank exits with status 3, and this script requeues
# the job. The requeued job (SLURM_RESTART_COUNT > 0) resumes from the run directory's latest
# checkpoint. USR1 is not used: NCCL installs its own handler for it.
#
#SBATCH --job-name=mmdist
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=8
#SBATCH --time=24:00:00
#SBATCH --signal=USR2@90
#SBATCH --requeue
#SBATCH --open-mode=append
#SBATCH --output=slurm/logs/%x-%j.out
#SBATCH --error=slurm/logs/%x-%j.out

set -uo pipefail

if [ $# -lt 1 ]; then
    echo "usage: sbatch slurm/train.sh CONFIG [key=value ...]" >&2
    exit 2
fi
CONFIG=$1
shift
cd "${SLURM_SUBMIT_DIR:-.}"
if [ ! -f "$CONFIG" ]; then
    echo "train.sh: config file not found: $CONFIG (relative to $(pwd))" >&2
    exit 2
fi

# The interpreter: MMDIST_PYTHON, else the repository's virtual environment, else python3.
PYTHON=${MMDIST_PYTHON:-}
if [ -z "$PYTHON" ]; then
    if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi

# Rank, world size, local rank and rank 0's address/port come from SLURM's variables in each task
# (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, the first node, a port derived from the job id):
# mmdist.engine.distributed reads them.

# One intra-op thread pool per task, sized to the CPUs SLURM gave it.
export OMP_NUM_THREADS=${SLURM_CPUS_PER_TASK:-1}

RESUME=()
if [ "${SLURM_RESTART_COUNT:-0}" -gt 0 ]; then
    # A requeue re-runs this script as submitted: the resume point comes from the run directory.
    RESUME=(trainer.resume=true)
fi
echo "train.sh: job ${SLURM_JOB_ID} restart ${SLURM_RESTART_COUNT:-0} on ${SLURM_JOB_NODELIST}" \
     "(${SLURM_NTASKS:-1} tasks): $CONFIG $*"

# No B: prefix on --signal: USR2 goes to the ranks (srun's tasks), not to this shell.
srun --kill-on-bad-exit=1 "$PYTHON" -u -m mmdist.train --config "$CONFIG" "$@" "${RESUME[@]}"
status=$?

if [ $status -eq 3 ]; then
    echo "train.sh: stopped by a signal after a checkpoint; requeueing job ${SLURM_JOB_ID}"
    scontrol requeue "${SLURM_JOB_ID}"
    exit 0
fi
exit $status
