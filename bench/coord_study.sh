#!/usr/bin/env bash
# docs/results.md, part two: coordinated against i.i.d. against Best-of-K on one testbed.
#   bash bench/coord_study.sh arith   OUT   # the project's arith model (trained first)
#   bash bench/coord_study.sh smollm2 OUT   # SmolLM2-135M-Instruct + the arith LoRA adapter
#   bash bench/coord_study.sh gsm8k   OUT   # SmolLM2-135M-Instruct fine-tuned on GSM8K train
#   GPUS=4 bash bench/coord_study.sh gsm8k OUT   # the grid as 4 shards, one per GPU
# (bench/testbed.sh says what each is.) Each testbed runs greedy once, then the grid of
# `--preset coord-study` with n = 16 samples per problem, the coordinated ones one group of
# 16 (its strided halves and quarters are exact groups of 8 and 4).
# Resumable: rerun the same line after an interruption (a time limit, a lost machine).
# With GPUS=N > 1 the grid runs as N shards, shard i on GPU i-1 (CUDA_VISIBLE_DEVICES); an
# unsharded run already in OUT is split first (`decoptim split`), and the shards are merged
# (`decoptim merge`) once all are done. Keep N the same when resuming.
# Extra arguments go to `decoptim eval`.
set -euo pipefail
source "$(dirname "$0")/testbed.sh"  # testbed, out, py, the model (trained) and common
gpus=${GPUS:-1}
if [ "$gpus" -gt 1 ]; then  # a shard without its GPU would run on the CPU, slowly
  visible=$($py -c "import torch; print(torch.cuda.device_count())")
  if [ "$gpus" -gt "$visible" ]; then
    echo "GPUS=$gpus needs $gpus CUDA devices; torch sees $visible (leave GPUS unset for one)" >&2
    exit 2
  fi
fi
$py -m decoptim eval "${common[@]}" --decoders greedy --n 1 --out "$out/$testbed-greedy"
grid=("${common[@]}" --preset coord-study --n 16 --group-size 16 --out "$out/$testbed")
if [ "$gpus" -le 1 ]; then
  $py -m decoptim eval "${grid[@]}"
  exit
fi
run="$out/$testbed"
if [ -f "$run/manifest.json" ] && ! ls "$run"/manifest.shard-*-of-*.json >/dev/null 2>&1; then
  $py -m decoptim split "$run" "$gpus"
fi
trap 'kill $(jobs -p) 2>/dev/null || true' EXIT  # a time limit stops the shards with us
pids=()
for i in $(seq 1 "$gpus"); do
  CUDA_VISIBLE_DEVICES=$((i - 1)) $py -m decoptim eval "${grid[@]}" --shard "$i/$gpus" \
    --no-progress > "$run.shard-$i.log" 2>&1 &
  pids+=($!)
  echo "shard $i/$gpus on GPU $((i - 1)): log in $run.shard-$i.log"
done
failed=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || { echo "shard $((i + 1))/$gpus failed: see $run.shard-$((i + 1)).log" >&2; failed=1; }
done
trap - EXIT
[ "$failed" = 0 ] && $py -m decoptim merge "$run"
exit "$failed"
