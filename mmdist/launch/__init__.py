"""Launching runs: one job through submitit (``python -m mmdist.launch``), SLURM sweeps as job
arrays (``python -m mmdist.sweep``); the plain sbatch script is slurm/train.sh."""
