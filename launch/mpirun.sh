#!/usr/bin/env bash
# DDP on one node with Open MPI's mpirun (MPI only starts the ranks and tells each its rank;
# gloo/nccl do the communication, as torch has no MPI backend).
#   launch/mpirun.sh CONFIG [key=value ...]
# NPROC ranks (default 2). --bind-to none leaves thread placement to torch.
set -euo pipefail
source "$(dirname "$0")/common.sh"
shift
as_root=()
[ "$(id -u)" = 0 ] && as_root=(--allow-run-as-root)  # Open MPI refuses root without it
exec mpirun "${as_root[@]}" --bind-to none -x OMP_NUM_THREADS -np "$ranks" \
    "$python" -m mmdist.train --config "$config" engine.strategy=ddp "$@"
