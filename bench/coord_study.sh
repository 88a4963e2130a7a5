#!/usr/bin/env bash
# docs/results.md, part two: coordinated against i.i.d. against Best-of-K on one testbed.
#   bash bench/coord_study.sh arith   OUT   # the project's arith model (trained first)
#   bash bench/coord_study.sh smollm2 OUT   # SmolLM2-135M-Instruct + the arith LoRA adapter
#   bash bench/coord_study.sh gsm8k   OUT   # SmolLM2-135M-Instruct fine-tuned on GSM8K train
# gsm8k reads $GSM8K_TRAIN and $GSM8K_TEST (default: ../shared/data/gsm8k_{train,test}.jsonl)
# and evaluates the first 500 test problems. Each testbed runs greedy once, then the grid of
# `--preset coord-study` with n = 16 samples per problem, the coordinated ones one group of
# 16 (its strided halves and quarters are exact groups of 8 and 4).
# Resumable: rerun the same line after an interruption (a time limit, a lost machine).
# Extra arguments go to `decoptim eval`.
set -euo pipefail
testbed=${1:?arith, smollm2 or gsm8k}
out=${2:?output directory}
shift 2
py=${PYTHON:-python3}
here=$(cd "$(dirname "$0")" && pwd)
task=arith
case "$testbed" in
  arith)
    model=arith; data=difficulty=1; limit=500; tokens=40; batch=125
    $py -m decoptim train-arith >/dev/null ;;
  smollm2)
    model=smollm2-arith; data=difficulty=3; limit=150; tokens=64; batch=50
    $py -m decoptim train-lora >/dev/null ;;
  gsm8k)
    shared=$here/../../shared/data
    train=${GSM8K_TRAIN:-$shared/gsm8k_train.jsonl}; data=${GSM8K_TEST:-$shared/gsm8k_test.jsonl}
    model=smollm2-gsm8k; task=gsm8k; limit=500; tokens=256; batch=200
    $py -m decoptim train-gsm8k --data "$train" >/dev/null ;;
  *) echo "testbed must be arith, smollm2 or gsm8k, got $testbed" >&2; exit 2 ;;
esac
common=(--model "$model" --task "$task" --data "$data" --limit "$limit"
        --max-new-tokens "$tokens" --batch-size "$batch" --seed 0 --no-plots "$@")
$py -m decoptim eval "${common[@]}" --decoders greedy --n 1 --out "$out/$testbed-greedy"
$py -m decoptim eval "${common[@]}" --preset coord-study --n 16 --group-size 16 \
    --out "$out/$testbed"
