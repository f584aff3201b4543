#!/usr/bin/env bash
# Runs fmjax on one host of a multi-host job (any machines that reach each other over TCP).
# Start it on every host with the same arguments; each host reads its own rows of every
# global batch, process 0 writes the logs and reports, all hosts write their checkpoint shards
# (so --workdir must be a folder every host sees: NFS, Filestore, or a gs:// bucket with
# fmjax[gcs] installed).
#
#   COORDINATOR=10.0.0.1:1234 NUM_HOSTS=4 HOST_ID=<0..3> bash launch/multihost.sh [--dry-run] \
#       --config configs/mvtec.py --workdir /shared/runs/mvtec --config.data.root=/data/mvtec_ad
#
# --dry-run prints the environment and the command instead of running it.
# FMJAX_DISTRIBUTED_TIMEOUT (default 300 s) bounds the wait for the other hosts.
set -euo pipefail
DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; shift; fi
: "${COORDINATOR:?set COORDINATOR=host:port of host 0}"
: "${NUM_HOSTS:?set NUM_HOSTS}"
: "${HOST_ID:?set HOST_ID (0-based)}"
export JAX_COORDINATOR_ADDRESS="$COORDINATOR" JAX_NUM_PROCESSES="$NUM_HOSTS" JAX_PROCESS_ID="$HOST_ID"
if (( DRY_RUN )); then
  echo "JAX_COORDINATOR_ADDRESS=$COORDINATOR JAX_NUM_PROCESSES=$NUM_HOSTS JAX_PROCESS_ID=$HOST_ID" \
       "python -m fmjax.main $*"
  exit 0
fi
exec python -m fmjax.main "$@"
