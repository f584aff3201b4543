#!/usr/bin/env bash
# The GPU measurements of the issue tracker, one part per call. Runs and logs go to $RUNS
# (default runs/gpu, kept while the machine stays warm); data is read from $DATA (default
# .data, a copy of ../shared/data in MVTec layout).
#
#   bash launch/gpu_suite.sh prepare    # HERE, beside ../shared: wheels -> .whl/, data -> .data/
#                                       # (git-ignored; carry both to the GPU machine)
#   bash launch/gpu_suite.sh speed      # describe + scoring and training throughput
#   bash launch/gpu_suite.sh score      # the scoring rows of speed alone; SCORE_PROFILE=N adds
#                                       # the kernels of N traced calls to each row
#   bash launch/gpu_suite.sh loader     # grain loader images/s beside the training rate
#   bash launch/gpu_suite.sh profile    # the paper model's train step: kernel time by kind
#                                       # (PROFILE_BATCH, default 32): variants with "base||"
#   bash launch/gpu_suite.sh variants   # profile for each of VARIANTS="name|flags|xla flags;..."
#                                       # (e.g. "base||;direct|--config.model.group_norm=direct|;
#                                       # b128|--batch=128|"), one JSON line each and the
#                                       # traces under $OUT as they finish
#   bash launch/gpu_suite.sh bottle     # paper recipe on MVTec bottle (resumable), evaluate;
#                                       # BOTTLE_SECONDS > 0 stops training after that long
#   bash launch/gpu_suite.sh dtypes     # bottle's checkpoint scored in bf16 and float32:
#                                       # eval_bfloat16/, eval_float32/, bottle.jsonl
#   bash launch/gpu_suite.sh paper      # bottle, dtypes, then speed, one after the other
#   bash launch/gpu_suite.sh studies    # compute/aggregators/checkpoints/seeds/methods, bottle
#   bash launch/gpu_suite.sh mtd        # the same recipe on magnetic tile (44,625 steps:
#                                       # rerun the same command to resume where it stopped)
#   bash launch/gpu_suite.sh transistor # the same recipe on transistor (image labels only)
#   bash launch/gpu_suite.sh scaling    # compute-scaling study on bottle, batch 32..1024
#                                       # (resumable: rerun to continue with the next arm)
#   bash launch/gpu_suite.sh start PART # PART detached (setsid): it outlives the call, log in
#                                       # $RUNS/PART.log; follow it with the next calls
#   bash launch/gpu_suite.sh follow [S] # waits up to S seconds (default 540) while started
#                                       # parts run, printing their progress, then collects
#   bash launch/gpu_suite.sh collect    # $RUNS's small files (JSON, JSONL, Markdown, CSV,
#                                       # logs, PNG; no checkpoints) -> $OUT/results.tar.gz
#
# Every part on the GPU machine first installs the carried wheels (.whl/) into /tmp/site once.
# A run longer than one call (10 minutes) is started, then followed by calls made within the
# machine's 30 s idle time. With little device time (15 minutes a session, start-up included)
# the bottle run goes first and the speed tables after it, on the same warm machine (device
# tool, carry [".whl", ".data"]):
#   call 1: bash launch/gpu_suite.sh start bottle; bash launch/gpu_suite.sh follow 560
#   call 2: bash launch/gpu_suite.sh follow 560   (until "== bottle (ended)")
#   call 3: bash launch/gpu_suite.sh speed; bash launch/gpu_suite.sh collect
# or all of issue 30 as one detached part (training limited by BOTTLE_SECONDS, the
# speed settings by SCORE_KT, SCORE_BATCHES, TRAIN_BATCHES; BOTTLE_FLAGS adds config flags to
# the bottle and dtypes runs and SPEED_CONFIG replaces the benchmarks' configs/mvtec.py, for a
# rehearsal of the whole suite on a CPU with a tiny model; SPEED_FLAGS adds config flags to the
# speed and profile benchmarks, e.g. --config.model.group_norm=direct):
#   call 1: BOTTLE_SECONDS=240 SCORE_KT=10x10 SCORE_BATCHES=1,32 TRAIN_BATCHES=32,128 \
#           bash launch/gpu_suite.sh start paper; bash launch/gpu_suite.sh follow 540
#   call 2: bash launch/gpu_suite.sh follow 540
# Seen on 2026-12-04 (H200, BOTTLE_SECONDS=240): bottle 379 s (the train step compiled for about
# 150 s of its budget), dtypes 71 s, speed's scoring part 153 s; the 15 minutes (machine start
# included) ran out during train_throughput. Put the part that matters most first; a first
# call on a fresh machine spends about 30 s starting before the command runs.
# Seen in a second session (2026-12-04): `variants` with base, direct and nodrop at batch 32
# took 254, 109 and 98 s (the first compile 158 s; the later ones 88 and 77 s), then batch 128
# alone 148 s on the warm machine: 763 s of device time in all.
set -euo pipefail
RUNS="${RUNS:-runs/gpu}"; DATA="${DATA:-.data}"; SHARED="${SHARED:-../shared}"
PARTS="speed|score|loader|profile|variants|bottle|dtypes|paper|studies|mtd|transistor|scaling"
export PYTHONUNBUFFERED=1
# Compiled programs kept on the machine's disk: a part rerun on a warm machine skips compiling.
export JAX_COMPILATION_CACHE_DIR="${JAX_COMPILATION_CACHE_DIR:-/tmp/fmjax-jax-cache}"

device_env() {  # the carried wheels, installed once per machine; fmjax from this tree
  if [[ -d .whl ]] && ! [[ -f /tmp/site/.fmjax-installed ]]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl && touch /tmp/site/.fmjax-installed
  fi
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
}
run() {  # runs a command, logging it and its wall time to $RUNS/commands.txt
  echo "+ $*" >> "$RUNS/commands.txt"; local t0=$SECONDS
  "$@" || { local rc=$?; echo "exit $rc after $((SECONDS - t0)) s: $*" | tee -a "$RUNS/commands.txt"
             return $rc; }
  echo "wall $((SECONDS - t0)) s: $*" | tee -a "$RUNS/commands.txt"
}
alive() {  # the started parts still running
  local f; for f in "$RUNS"/*.pid; do
    [[ -e "$f" ]] && kill -0 "$(cat "$f")" 2>/dev/null && basename "$f" .pid
  done; return 0
}
collect() {
  [[ -n "${OUT:-}" ]] || { echo "collect: OUT is not set (the device tool sets it)" >&2; return 0; }
  (cd "$RUNS" && find . -type f \( -name '*.json' -o -name '*.jsonl' -o -name '*.md' \
      -o -name '*.csv' -o -name '*.txt' -o -name '*.log' -o -name '*.png' \) \
      -not -path '*/checkpoints/*' -not -path '*/tensorboard/*' -not -path '*/profile/*' \
      -print0 | tar czf "$OUT/results.tar.gz" --null -T -)
  ls -l "$OUT/results.tar.gz"
}

part="${1:?part: prepare|$PARTS|start PART|follow [S]|collect}"
if [[ "$part" != prepare ]]; then mkdir -p "$RUNS"; fi
case "$part" in
  prepare)  # .whl/ and .data/ are in .gitignore
    mkdir -p .whl .data && cp "$SHARED"/device/wheels/*.whl .whl/
    # Not in the GPU machine's image (pure Python; its needs, protobuf and numpy, are there).
    python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp -d .whl "tensorboardX==2.6.4"
    for d in ${DATA_SETS:-mvtec mtd mvtec_images_only}; do
      rm -rf ".data/$d"; cp -r "$SHARED/data/$d" .data/
    done
    du -sh .whl .data ;;
  speed|score)
    device_env
    config="${SPEED_CONFIG:-configs/mvtec.py}"
    run python3 benchmarks/score_throughput.py --config="$config" \
        --kt="${SCORE_KT:-10x10,5x5,2x2,20x20}" --batches="${SCORE_BATCHES:-1,8,32,128}" \
        --seconds=2 --profile_calls="${SCORE_PROFILE:-0}" --output="$RUNS/score.jsonl" \
        ${SPEED_FLAGS:-}
    if [[ -n "${OUT:-}" ]]; then cp "$RUNS/score.jsonl" "$OUT/"; fi
    [[ "$part" == speed ]] || exit 0
    run python3 benchmarks/train_throughput.py --config="$config" \
        --batches="${TRAIN_BATCHES:-32,128,256}" --seconds=3 --output="$RUNS/train.jsonl" \
        ${SPEED_FLAGS:-}
    run python3 -m fmjax.main --config configs/mvtec.py --mode=describe | tee "$RUNS/describe.txt" ;;
  loader)
    device_env
    run python3 benchmarks/loader_throughput.py --root "$DATA/mvtec" --category bottle \
        --batch_size 128 --workers 0,4,8,15 --seconds 20 | tee "$RUNS/loader.jsonl" ;;
  profile|variants)  # the train step's profile under each variant; results to $OUT as they come
    device_env
    mkdir -p "$RUNS/traces"
    [[ "$part" == variants ]] || VARIANTS="base||"
    IFS=';' read -ra specs <<< "${VARIANTS:?VARIANTS=\"name|benchmark flags|XLA flags;...\"}"
    for spec in "${specs[@]}"; do
      IFS='|' read -r name flags xla <<< "$spec"
      name="$(echo $name)"; [[ -n "$name" ]] || continue
      run env XLA_FLAGS="${XLA_FLAGS:-} $xla" python3 benchmarks/train_profile.py \
          --config="${SPEED_CONFIG:-configs/mvtec.py}" --batch="${PROFILE_BATCH:-32}" --steps=5 \
          --top=25 --output="$RUNS/profile.jsonl" --count_flops=false --label="$name" \
          --trace_copy="$RUNS/traces/$name.trace.json.gz" ${SPEED_FLAGS:-} $flags \
        || echo "== variant $name failed"
      if [[ -n "${OUT:-}" ]]; then  # what came so far, in case the call's time runs out
        cp "$RUNS/profile.jsonl" "$OUT/" 2>/dev/null || true
        tar czf "$OUT/traces.tar.gz" -C "$RUNS" traces
      fi
    done ;;
  bottle)
    device_env
    run python3 -m fmjax.main --config configs/mvtec.py --workdir "$RUNS/bottle" \
        --config.data.root="$DATA/mvtec" --config.data.categories=bottle \
        --config.train.keep_checkpoints=20 --config.train.max_seconds="${BOTTLE_SECONDS:-0}" \
        ${BOTTLE_FLAGS:-} ;;
  dtypes)  # the bottle run's report renamed eval_bfloat16; the same checkpoint in float32
    device_env
    w="$RUNS/bottle"
    [[ -d "$w/eval" ]] && { rm -rf "$w/eval_bfloat16"; mv "$w/eval" "$w/eval_bfloat16"; }
    run python3 -m fmjax.main --config configs/mvtec.py --workdir "$w" --mode=evaluate \
        --config.data.root="$DATA/mvtec" --config.data.categories=bottle \
        --config.model.dtype=float32 ${BOTTLE_FLAGS:-}
    rm -rf "$w/eval_float32"; mv "$w/eval" "$w/eval_float32"
    run python3 benchmarks/eval_summary.py --workdir "$w" --reports=eval_bfloat16,eval_float32 \
        --output="$RUNS/bottle.jsonl" ;;
  paper)  # issue 30 in one go; a part that fails does not stop the next
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv || true
    for p in bottle dtypes speed; do
      bash "$0" "$p" || echo "== part $p failed (exit $?)"
    done ;;
  studies)
    device_env
    for s in compute aggregators checkpoints seeds methods; do
      run python3 -m fmjax.main --config "configs/studies.py:$s" --workdir "$RUNS/bottle" \
          --mode=study --config.data.root="$DATA/mvtec" --config.data.categories=bottle
    done ;;
  mtd)
    device_env
    run python3 -m fmjax.main --config configs/folder.py --workdir "$RUNS/mtd" \
        --config.data.root="$DATA/mtd" ;;
  transistor)
    device_env
    run python3 -m fmjax.main --config configs/folder.py --workdir "$RUNS/transistor" \
        --config.data.root="$DATA/mvtec_images_only" --config.data.image_level_only=True ;;
  scaling)
    device_env
    run python3 -m fmjax.main --config configs/scaling.py --workdir "$RUNS/scaling_bottle" \
        --config.data.root="$DATA/mvtec" --config.data.categories=bottle \
        --config.scaling.batch_sizes=32,64,128,256,512,1024 ;;
  start)
    target="${2:?start PART ($PARTS)}"
    [[ "|$PARTS|" == *"|$target|"* ]] || { echo "unknown part $target" >&2; exit 2; }
    if alive | grep -qx "$target"; then echo "$target is already running"; exit 0; fi
    setsid nohup bash "$0" "$target" > "$RUNS/$target.log" 2>&1 < /dev/null &
    echo $! > "$RUNS/$target.pid"
    echo "started $target (pid $!), log $RUNS/$target.log" ;;
  follow)
    limit="${2:-540}"; t0=$SECONDS; last=-60
    while [[ -n "$(alive)" ]] && (( SECONDS - t0 < limit )); do
      if (( SECONDS - last >= 60 )); then
        last=$SECONDS
        for p in $(alive); do echo "[$((SECONDS - t0)) s] $p: $(tail -c 300 "$RUNS/$p.log" | tr '\r' '\n' | tail -n 1)"; done
      fi
      sleep 5
    done
    for f in "$RUNS"/*.log; do
      [[ -e "$f" ]] || continue
      p=$(basename "$f" .log)
      if alive | grep -qx "$p"; then state=running; else state=ended; fi
      echo "== $p ($state)"; tail -c 2000 "$f" | tr '\r' '\n' | tail -n 8
    done
    collect ;;
  collect) collect ;;
  *) echo "unknown part $part" >&2; exit 2 ;;
esac
