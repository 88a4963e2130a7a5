#!/usr/bin/env bash
# docs/results.md, part two: coordinated against i.i.d. against Best-of-K on one testbed.
#   bash bench/coord_study.sh arith   OUT   # the project's arith model (trained first)
#   bash bench/coord_study.sh smollm2 OUT   # SmolLM2-135M-Instruct + the arith LoRA adapter
#   bash bench/coord_study.sh gsm8k   OUT   # SmolLM2-135M-Instruct fine-tuned on GSM8K train
#   GPUS=4 bash bench/coord_study.sh gsm8k OUT   # the grid as 4 shards, one per GPU
#   SHARDS=4 bash bench/coord_study.sh gsm8k OUT # 4 shards, one after another on one GPU
# (bench/testbed.sh says what each is.) Each testbed runs greedy once, then the grid of
# `--preset coord-study` with n = 16 samples per problem, the coordinated ones one group of
# 16 (its strided halves and quarters are exact groups of 8 and 4).
# Resumable: rerun the same line after an interruption (a time limit, a lost machine); a
# rerun first prints what is left (`decoptim status`).
# With GPUS=N > 1 the grid runs as N shards, shard i on GPU i-1 (CUDA_VISIBLE_DEVICES); an
# unsharded run already in OUT is split first (`decoptim split`), and the shards are merged
# (`decoptim merge`) once all are done. SHARDS=M (default: the split already in OUT, else N)
# runs M shards on the N GPUs, shard i on GPU (i-1) mod N, a GPU's shards one after another:
# a run split for four GPUs resumes on one (two generate batches of the gsm8k testbed do not
# fit one H200's memory at once). A split is never changed: SHARDS must match it.
# Extra arguments go to `decoptim eval`.
set -euo pipefail
source "$(dirname "$0")/testbed.sh"  # testbed, out, py, the model (trained) and common
gpus=${GPUS:-1}
run="$out/$testbed"
split=$(ls "$run"/manifest.shard-*-of-*.json 2>/dev/null | head -1 | sed -E 's/.*-of-([0-9]+)\.json$/\1/' || true)
shards=${SHARDS:-${split:-$gpus}}
for count in "GPUS=$gpus" "SHARDS=$shards"; do
  case ${count#*=} in
    '' | *[!0-9]* | 0*) echo "${count%%=*} must be a whole number >= 1, got '${count#*=}'" >&2; exit 2 ;;
  esac
done
if [ -n "$split" ] && [ "$shards" != "$split" ]; then
  echo "$run is split into $split shards; SHARDS=$shards cannot continue it (leave SHARDS unset)" >&2
  exit 2
fi
if [ "$gpus" -gt 1 ]; then  # a shard without its GPU would run on the CPU, slowly
  visible=$($py -c "import torch; print(torch.cuda.device_count())")
  if [ "$gpus" -gt "$visible" ]; then
    echo "GPUS=$gpus needs $gpus CUDA devices; torch sees $visible (leave GPUS unset for one)" >&2
    exit 2
  fi
fi
$py -m decoptim eval "${common[@]}" --decoders greedy --n 1 --out "$out/$testbed-greedy"
grid=("${common[@]}" --preset coord-study --n 16 --group-size 16 --out "$run")
if [ -f "$run/manifest.json" ] || [ -n "$split" ]; then  # resuming: what is left, in the log
  $py -m decoptim status "$run" || true
fi
if [ "$shards" -le 1 ]; then
  $py -m decoptim eval "${grid[@]}"
  exit
fi
if [ -f "$run/manifest.json" ] && [ -z "$split" ]; then
  $py -m decoptim split "$run" "$shards"
fi
run_gpu() {  # the shards of GPU $1, one after another; fails if any of them failed
  local gpu=$1 failed=0 i
  for i in $(seq $((gpu + 1)) "$gpus" "$shards"); do
    echo "shard $i/$shards on GPU $gpu: log in $run.shard-$i.log"
    CUDA_VISIBLE_DEVICES=$gpu $py -m decoptim eval "${grid[@]}" --shard "$i/$shards" \
      --no-progress > "$run.shard-$i.log" 2>&1 \
      || { echo "shard $i/$shards failed: see $run.shard-$i.log" >&2; failed=1; }
  done
  return "$failed"
}
stop_shards() {  # each GPU's loop, then the shard it was running (else orphaned, writing on)
  local pid kids
  for pid in $(jobs -p); do
    kids=$(pgrep -P "$pid" || true)
    kill "$pid" $kids 2>/dev/null || true
  done
}
trap stop_shards EXIT  # a time limit stops the shards with us
pids=()
for gpu in $(seq 0 $((gpus - 1))); do
  run_gpu "$gpu" &
  pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
trap - EXIT
[ "$failed" = 0 ] && $py -m decoptim merge "$run"
exit "$failed"
