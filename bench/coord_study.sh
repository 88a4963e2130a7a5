#!/usr/bin/env bash
# docs/results.md, part two: coordinated against i.i.d. against Best-of-K on one testbed.
#   bash bench/coord_study.sh arith   OUT   # the project's arith model (trained first)
#   bash bench/coord_study.sh smollm2 OUT   # SmolLM2-135M-Instruct + the arith LoRA adapter
#   bash bench/coord_study.sh gsm8k   OUT   # SmolLM2-135M-Instruct fine-tuned on GSM8K train
# (bench/testbed.sh says what each is.) Each testbed runs greedy once, then the grid of
# `--preset coord-study` with n = 16 samples per problem, the coordinated ones one group of
# 16 (its strided halves and quarters are exact groups of 8 and 4).
# Resumable: rerun the same line after an interruption (a time limit, a lost machine).
# Extra arguments go to `decoptim eval`.
set -euo pipefail
source "$(dirname "$0")/testbed.sh"  # testbed, out, py, the model (trained) and common
$py -m decoptim eval "${common[@]}" --decoders greedy --n 1 --out "$out/$testbed-greedy"
$py -m decoptim eval "${common[@]}" --preset coord-study --n 16 --group-size 16 \
    --out "$out/$testbed"
