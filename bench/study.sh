#!/usr/bin/env bash
# The empirical study of docs/results.md: the bok-study grid on one testbed.
#   bash bench/study.sh arith   OUT   # the project's arith model (trained first, seconds on a GPU)
#   bash bench/study.sh smollm2 OUT   # SmolLM2-135M-Instruct + the project's arith LoRA adapter
# Resumable: rerun the same line after an interruption. Extra arguments go to `decoptim eval`.
set -euo pipefail
testbed=${1:?arith or smollm2}
out=${2:?output directory}
shift 2
py=${PYTHON:-python3}
case "$testbed" in
  arith)
    model=arith; data=difficulty=1; limit=500; tokens=40; batch=125
    $py -m decoptim train-arith >/dev/null ;;
  smollm2)
    model=smollm2-arith; data=difficulty=3; limit=150; tokens=64; batch=50
    $py -m decoptim train-lora >/dev/null ;;
  *) echo "testbed must be arith or smollm2, got $testbed" >&2; exit 2 ;;
esac
common=(--model "$model" --task arith --data "$data" --limit "$limit" --max-new-tokens "$tokens"
        --batch-size "$batch" --seed 0 --no-plots "$@")
$py -m decoptim eval "${common[@]}" --decoders greedy --n 1 --out "$out/$testbed-greedy"
$py -m decoptim eval "${common[@]}" --preset bok-study --n 16 --out "$out/$testbed"
