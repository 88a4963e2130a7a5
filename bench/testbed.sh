# Sourced by study.sh and coord_study.sh, the head they share: reads the testbed and the output
# directory from their arguments (the rest stays in "$@" for `decoptim eval`), trains the
# testbed's model (cached after the first time), and sets py ($PYTHON, else python3), testbed,
# out, the eval settings model, task, data, limit, tokens and batch, and common: the flags of
# every `decoptim eval` of a study (with the extra arguments).
#   arith    the project's arith model, arith difficulty 1, 500 problems
#   smollm2  SmolLM2-135M-Instruct + the project's arith LoRA adapter, difficulty 3, 150
#   gsm8k    SmolLM2-135M-Instruct fine-tuned on $GSM8K_TRAIN, the first 500 of $GSM8K_TEST
#            (default: ../shared/data/gsm8k_{train,test}.jsonl beside the checkout)
testbed=${1:?arith, smollm2 or gsm8k}
out=${2:?output directory}
shift 2
py=${PYTHON:-python3}
task=arith
case "$testbed" in
  arith)
    model=arith; data=difficulty=1; limit=500; tokens=40; batch=125
    $py -m decoptim train-arith >/dev/null ;;
  smollm2)
    model=smollm2-arith; data=difficulty=3; limit=150; tokens=64; batch=50
    $py -m decoptim train-lora >/dev/null ;;
  gsm8k)
    shared=$(dirname "${BASH_SOURCE[0]}")/../../shared/data
    train=${GSM8K_TRAIN:-$shared/gsm8k_train.jsonl}; data=${GSM8K_TEST:-$shared/gsm8k_test.jsonl}
    model=smollm2-gsm8k; task=gsm8k; limit=500; tokens=256; batch=200
    $py -m decoptim train-gsm8k --data "$train" >/dev/null ;;
  *) echo "testbed must be arith, smollm2 or gsm8k, got $testbed" >&2; exit 2 ;;
esac
common=(--model "$model" --task "$task" --data "$data" --limit "$limit" --max-new-tokens "$tokens"
        --batch-size "$batch" --seed 0 --no-plots "$@")
