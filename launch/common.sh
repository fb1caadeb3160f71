# Sourced by the one-node launchers: checks the arguments and finds the repository and its Python.
# Sets: config (the first argument, shifted off by the caller), root, python, ranks (NPROC, default 2).
# Exports OMP_NUM_THREADS, unless it is set already: this machine's CPUs divided among the ranks
# (torchrun would set 1, mpirun and the deepspeed launcher nothing, and every rank would then
# take every core). The trainer takes its torch threads from it.
if [ $# -lt 1 ]; then echo "usage: $0 CONFIG [key=value ...]" >&2; exit 2; fi
config=$1
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=python3
ranks=${NPROC:-2}
if [ -z "${OMP_NUM_THREADS:-}" ]; then
    cpus=$(nproc)
    export OMP_NUM_THREADS=$(( cpus / ranks > 0 ? cpus / ranks : 1 ))
fi
