#!/usr/bin/env bash
# DeepSpeed on one node with the deepspeed launcher.
#   launch/deepspeed.sh CONFIG [key=value ...]
# NPROC ranks (default 2; --num_gpus is also how many CPU processes it starts) and DS_CONFIG, the
# DeepSpeed JSON (default configs/deepspeed/zero1.json). --no_local_rank: mmdist reads LOCAL_RANK
# from the environment and takes no --local_rank argument.
set -euo pipefail
source "$(dirname "$0")/common.sh"
shift
# The launcher of the interpreter that runs the job (its console script may not be on PATH).
launcher=("$python" -m deepspeed.launcher.runner)
[ -n "${DEEPSPEED:-}" ] && launcher=("$DEEPSPEED")
port=${MASTER_PORT:-$(( 20000 + RANDOM % 10000 ))}
exec "${launcher[@]}" --num_gpus "$ranks" --master_port "$port" --no_local_rank \
    --module mmdist.train --config "$config" engine.strategy=deepspeed \
    engine.deepspeed_config="${DS_CONFIG:-configs/deepspeed/zero1.json}" "$@"
