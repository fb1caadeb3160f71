# Sourced by the one-node launchers: checks the arguments and finds the repository and its Python.
# Sets: config (the first argument, shifted off by the caller), root, python.
if [ $# -lt 1 ]; then echo "usage: $0 CONFIG [key=value ...]" >&2; exit 2; fi
config=$1
root=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-$root/.venv/bin/python}
[ -x "$python" ] || python=python3
