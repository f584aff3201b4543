#!/usr/bin/env bash
# Runs fmjax on every GPU of one machine: one process; JAX sees all local GPUs and the batch is
# sharded over them (train.batch_size and evaluate.batch_size must divide by their number).
#
#   GPUS=0,1,2,3 bash launch/multigpu.sh [--dry-run] --config configs/mvtec.py \
#       --workdir runs/mvtec --config.data.root=/data/mvtec_ad
#
# GPUS (optional) picks the devices (CUDA_VISIBLE_DEVICES); default: all of them.
# --dry-run prints the command instead of running it.
set -euo pipefail
DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; shift; fi
ENV=()
if [[ -n "${GPUS:-}" ]]; then ENV+=("CUDA_VISIBLE_DEVICES=$GPUS"); fi
# Leave GPU memory to XLA's allocator without preallocating 75% per process.
ENV+=("XLA_PYTHON_CLIENT_MEM_FRACTION=${XLA_PYTHON_CLIENT_MEM_FRACTION:-0.9}")
if (( DRY_RUN )); then
  echo "env ${ENV[*]} python -m fmjax.main $*"
  exit 0
fi
exec env "${ENV[@]}" python -m fmjax.main "$@"
