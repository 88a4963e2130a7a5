#!/usr/bin/env bash
# The empirical study of docs/results.md, part one: the bok-study grid on one testbed.
#   bash bench/study.sh arith   OUT   # the project's arith model (trained first, seconds on a GPU)
#   bash bench/study.sh smollm2 OUT   # SmolLM2-135M-Instruct + the project's arith LoRA adapter
#   bash bench/study.sh gsm8k   OUT   # SmolLM2-135M-Instruct fine-tuned on GSM8K (testbed.sh)
# Resumable: rerun the same line after an interruption. Extra arguments go to `decoptim eval`.
set -euo pipefail
source "$(dirname "$0")/testbed.sh"  # testbed, out, py, the model (trained) and common
$py -m decoptim eval "${common[@]}" --decoders greedy --n 1 --out "$out/$testbed-greedy"
$py -m decoptim eval "${common[@]}" --preset bok-study --n 16 --out "$out/$testbed"
