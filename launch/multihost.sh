#!/usr/bin/env bash
# Runs fmjax on one host of a multi-host job. Start it on every host with the same
# arguments; each host reads its own rows of every global batch.
#
#   COORDINATOR=10.0.0.1:1234 NUM_HOSTS=4 HOST_ID=<0..3> launch/multihost.sh \
#       --config configs/mvtec.py --workdir /shared/runs/mvtec --config.data.root=/data/mvtec_ad
#
# On Cloud TPU pods jax finds the coordinator itself: set FMJAX_DISTRIBUTED=1 instead and run
#   gcloud compute tpus tpu-vm ssh $TPU --worker=all --command \
#     "cd fmjax && FMJAX_DISTRIBUTED=1 python -m fmjax.main --config configs/mvtec.py --workdir gs://..."
set -euo pipefail
: "${COORDINATOR:?set COORDINATOR=host:port of host 0}"
: "${NUM_HOSTS:?set NUM_HOSTS}"
: "${HOST_ID:?set HOST_ID (0-based)}"
export JAX_COORDINATOR_ADDRESS="$COORDINATOR" JAX_NUM_PROCESSES="$NUM_HOSTS" JAX_PROCESS_ID="$HOST_ID"
exec python -m fmjax.main "$@"
