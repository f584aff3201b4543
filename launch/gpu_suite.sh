#!/usr/bin/env bash
# The GPU measurements of the issue tracker, one part per call (each fits in 10 minutes on
# one H100). Results and logs go to $OUT (default runs/gpu); data is read from $DATA
# (default .data, a copy of ../shared/data in MVTec layout).
#
#   bash launch/gpu_suite.sh speed      # describe + scoring and training throughput
#   bash launch/gpu_suite.sh loader     # grain loader images/s beside the training rate
#   bash launch/gpu_suite.sh bottle     # paper recipe on MVTec bottle (resumable), evaluate
#   bash launch/gpu_suite.sh studies    # compute/aggregators/checkpoints/seeds/methods, bottle
#   bash launch/gpu_suite.sh mtd        # the same recipe on magnetic tile (44,625 steps:
#                                       # rerun the same command to resume where it stopped)
#   bash launch/gpu_suite.sh transistor # the same recipe on transistor (image labels only)
#   bash launch/gpu_suite.sh scaling    # compute-scaling study on bottle, batch 32..1024
#                                       # (resumable: rerun to continue with the next arm)
set -euo pipefail
OUT="${OUT:-runs/gpu}"; DATA="${DATA:-.data}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
run() {  # runs a command, logging it and its wall time to $OUT/commands.txt
  echo "+ $*" >> "$OUT/commands.txt"; local t0=$SECONDS
  "$@"; echo "wall $((SECONDS - t0)) s: $*" | tee -a "$OUT/commands.txt"
}
case "${1:?part: speed|loader|bottle|studies|mtd|transistor|scaling}" in
  speed)
    run python -m fmjax.main --config configs/mvtec.py --mode=describe | tee "$OUT/describe.txt"
    run python benchmarks/score_throughput.py --kt=10x10,5x5,2x2,20x20 --batches=1,8,32,128 \
        --seconds=2 --output="$OUT/score.jsonl"
    run python benchmarks/train_throughput.py --batches=32,128,256 --output="$OUT/train.jsonl" ;;
  loader)
    run python benchmarks/loader_throughput.py --root "$DATA/mvtec" --category bottle \
        --batch_size 128 --workers 0,4,8,15 --seconds 20 | tee "$OUT/loader.jsonl" ;;
  bottle)
    run python -m fmjax.main --config configs/mvtec.py --workdir "$OUT/bottle" \
        --config.data.root="$DATA/mvtec" --config.data.categories=bottle \
        --config.train.keep_checkpoints=20 ;;
  studies)
    for s in compute aggregators checkpoints seeds methods; do
      run python -m fmjax.main --config "configs/studies.py:$s" --workdir "$OUT/bottle" \
          --mode=study --config.data.root="$DATA/mvtec" --config.data.categories=bottle
    done ;;
  mtd)
    run python -m fmjax.main --config configs/folder.py --workdir "$OUT/mtd" \
        --config.data.root="$DATA/mtd" ;;
  transistor)
    run python -m fmjax.main --config configs/folder.py --workdir "$OUT/transistor" \
        --config.data.root="$DATA/mvtec_images_only" --config.data.image_level_only=True ;;
  scaling)
    run python -m fmjax.main --config configs/scaling.py --workdir "$OUT/scaling_bottle" \
        --config.data.root="$DATA/mvtec" --config.data.categories=bottle \
        --config.scaling.batch_sizes=32,64,128,256,512,1024 ;;
  *) echo "unknown part $1" >&2; exit 2 ;;
esac
