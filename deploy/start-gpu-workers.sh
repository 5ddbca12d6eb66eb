#!/usr/bin/env bash
# Start one Dask worker per visible GPU, each pinned to its GPU and advertising a GPU resource,
# so that `bragg-dask ... --device cuda --scheduler ADDRESS` places one tile task per GPU at a time.
#   usage: deploy/start-gpu-workers.sh tcp://SCHEDULER:8786 [extra dask-worker options]
set -euo pipefail
scheduler=${1:?usage: $0 SCHEDULER_ADDRESS [dask worker options]}
shift
n=$(nvidia-smi --list-gpus | wc -l)
for ((i = 0; i < n; i++)); do
  CUDA_VISIBLE_DEVICES=$i dask worker "$scheduler" --nthreads 1 --nworkers 1 --resources "GPU=1" \
    --name "gpu-$(uname -n)-$i" "$@" &
done
wait
