#!/usr/bin/env bash
# DDP on one node with Open MPI's mpirun (MPI only starts the ranks and tells each its rank;
# gloo/nccl do the communication, as torch has no MPI backend).
#   launch/mpirun.sh CONFIG [key=value ...]
# NPROC ranks (default 2). --bind-to none leaves thread placement to torch.
set -euo pipefail
if [ $# -lt 1 ]; then echo "usage: $0 CONFIG [key=value ...]" >&2; exit 2; fi
config=$1; shift
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=python3
as_root=()
[ "$(id -u)" = 0 ] && as_root=(--allow-run-as-root)  # Open MPI refuses root without it
exec mpirun "${as_root[@]}" --bind-to none -np "${NPROC:-2}" \
    "$python" -m mmdist.train --config "$config" engine.strategy=ddp "$@"
