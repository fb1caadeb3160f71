#!/usr/bin/env bash
# DDP on one node with torchrun.
#   launch/torchrun.sh CONFIG [key=value ...]        e.g. launch/torchrun.sh configs/tiny.yaml
# NPROC ranks (default 2; one per GPU on a GPU node). Later overrides win, so
# engine.strategy=deepspeed engine.deepspeed_config=... runs DeepSpeed under torchrun instead.
# Ranks, MASTER_ADDR/PORT come from torchrun (--standalone picks a free port).
set -euo pipefail
source "$(dirname "$0")/common.sh"
shift
exec "$python" -m torch.distributed.run --standalone --nproc_per_node "$ranks" \
    -m mmdist.train --config "$config" engine.strategy=ddp "$@"
