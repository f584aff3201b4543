#!/usr/bin/env bash
# fmjax on a Cloud TPU VM pod slice (all workers run one process each; JAX finds the
# coordinator and the worker ranks itself when FMJAX_DISTRIBUTED=1).
#
#   TPU=fmjax-v4 ZONE=us-central2-b ACCELERATOR=v4-32 DATA=gs://my-bucket/mvtec_ad \
#     bash launch/tpu_pod.sh [--dry-run] <step> [fmjax arguments]
#
# Steps, in order:
#   create   create the TPU VM slice (RUNTIME, default tpu-ubuntu2204-base)
#   setup    on every worker: copy this checkout (or clone REPO_URL), install fmjax[gcs] (gcsfs
#            and google-cloud-storage, for a gs:// workdir) with jax[tpu], and copy DATA (a gs://
#            folder) to the worker's own disk at /tmp/fmjax-data. Without DATA the dataset is
#            read from a bucket mount instead: BUCKET is mounted read-only with gcsfuse at
#            /mnt/fmjax (then pass --config.data.root=/mnt/fmjax/<path>)
#   run      run python -m fmjax.main on every worker, e.g.
#              bash launch/tpu_pod.sh run --config configs/mvtec.py \
#                  --workdir gs://my-bucket/runs/mvtec --config.data.root=/tmp/fmjax-data
#            (rerunning resumes from the latest checkpoint in the bucket)
#   delete   delete the slice
#
# The workdir is a gs:// folder, written directly (fmjax.core.files and Orbax go through
# etils.epath and TensorStore; no mount): every worker writes its checkpoint shards there and
# process 0 the logs and reports. Each worker reads its own rows of every batch from its copy
# of the data (or the read-only mount). --dry-run prints the gcloud commands instead.
set -euo pipefail
DRY_RUN=0
if [[ "${1:-}" == "--dry-run" ]]; then DRY_RUN=1; shift; fi
STEP="${1:?step: create|setup|run|delete}"; shift
: "${TPU:?set TPU (the slice name)}"
: "${ZONE:?set ZONE (e.g. us-central2-b)}"
ACCELERATOR="${ACCELERATOR:-v4-32}"
RUNTIME="${RUNTIME:-tpu-ubuntu2204-base}"
PROJECT_FLAG=()
if [[ -n "${PROJECT:-}" ]]; then PROJECT_FLAG=(--project "$PROJECT"); fi

do_() {  # runs (or prints) one command
  if (( DRY_RUN )); then printf '%q ' "$@"; echo; else "$@"; fi
}
on_all() {  # a shell command on every worker
  do_ gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE" "${PROJECT_FLAG[@]}" --worker=all \
      --command "$1"
}

case "$STEP" in
  create)
    do_ gcloud compute tpus tpu-vm create "$TPU" --zone "$ZONE" "${PROJECT_FLAG[@]}" \
        --accelerator-type "$ACCELERATOR" --version "$RUNTIME" ;;
  setup)
    if [[ -z "${DATA:-}" ]]; then
      : "${BUCKET:?set DATA (a gs:// folder copied to every worker) or BUCKET (mounted at /mnt/fmjax)}"
    fi
    if [[ -n "${REPO_URL:-}" ]]; then
      on_all "rm -rf fmjax && git clone --depth 1 $REPO_URL fmjax"
    else
      do_ tar czf /tmp/fmjax-code.tar.gz --exclude=.git --exclude=.venv --exclude=runs \
          --exclude=.data --exclude=.whl -C "$(cd "$(dirname "$0")/.." && pwd)" .
      do_ gcloud compute tpus tpu-vm scp /tmp/fmjax-code.tar.gz "$TPU:" --zone "$ZONE" \
          "${PROJECT_FLAG[@]}" --worker=all
      on_all "rm -rf fmjax && mkdir fmjax && tar xzf fmjax-code.tar.gz -C fmjax"
    fi
    on_all "cd fmjax && pip install -q -e '.[gcs]' && pip install -q -U 'jax[tpu]' -f https://storage.googleapis.com/jax-releases/libtpu_releases.html"
    if [[ -n "${DATA:-}" ]]; then
      on_all "mkdir -p /tmp/fmjax-data && gsutil -m -q rsync -r $DATA /tmp/fmjax-data"
    else
      on_all "command -v gcsfuse || (echo \"deb [signed-by=/usr/share/keyrings/cloud.google.asc] https://packages.cloud.google.com/apt gcsfuse-\$(lsb_release -c -s) main\" | sudo tee /etc/apt/sources.list.d/gcsfuse.list && curl -s https://packages.cloud.google.com/apt/doc/apt-key.gpg | sudo tee /usr/share/keyrings/cloud.google.asc >/dev/null && sudo apt-get update -q && sudo apt-get install -y -q gcsfuse)"
      on_all "sudo mkdir -p /mnt/fmjax && sudo chown \$USER /mnt/fmjax && (mountpoint -q /mnt/fmjax || gcsfuse --implicit-dirs -o ro $BUCKET /mnt/fmjax)"
    fi ;;
  run)
    on_all "cd fmjax && FMJAX_DISTRIBUTED=1 PYTHONUNBUFFERED=1 python -m fmjax.main $*" ;;
  delete)
    do_ gcloud compute tpus tpu-vm delete "$TPU" --zone "$ZONE" "${PROJECT_FLAG[@]}" --quiet ;;
  *)
    echo "unknown step $STEP: create|setup|run|delete" >&2; exit 2 ;;
esac
