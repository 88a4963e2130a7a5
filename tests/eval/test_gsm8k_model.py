"""SmolLM2 fine-tuned on GSM8K: the examples are the harness's prompts plus targets its grader
accepts, the loss sees the target only, a tiny run writes a loadable model, and bad settings
fail with the parameter named."""

import json

import pytest

from decoptim.cli import main
from decoptim.eval.backends import ALIASES, TransformersBackend, resolve_model
from decoptim.eval.gsm8k_model import (
    DATA_ENV,
    IGNORE,
    TRAINING_RECORD,
    GSM8KTraining,
    collate,
    encode_rows,
    gsm8k_target,
    smollm2_gsm8k_path,
    training_prompt,
)
from decoptim.eval.tasks import MATH_INSTRUCTION, GSM8KTask, Problem, read_jsonl
from decoptim.pipelines.answers import gsm8k_gold
from tests.conftest import shared_data

ROW = {
    "question": "Weng earns $12 an hour. She worked 50 minutes. How much did she earn?",
    "answer": "Weng earns 12/60 = $<<12/60=0.2>>0.2 per minute.\n"
    "She earned 0.2 x 50 = $<<0.2*50=10>>10.\n#### 1,010",
}


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    from decoptim.eval.model_cache import smollm2_path

    return AutoTokenizer.from_pretrained(smollm2_path(), local_files_only=True)


@pytest.fixture(scope="module")
def train_rows():
    return list(read_jsonl(shared_data("gsm8k_train.jsonl"), ("question", "answer")))


def test_target_drops_annotations_and_ends_with_a_boxed_answer():
    target = gsm8k_target(ROW["answer"])
    assert target == (
        "Weng earns 12/60 = $0.2 per minute.\nShe earned 0.2 x 50 = $10.\n"
        "The answer is \\boxed{1010}."
    )
    with pytest.raises(ValueError, match="no '####'"):
        gsm8k_target("no final line")


def test_every_training_row_gives_a_target_the_gsm8k_grader_accepts(train_rows):
    assert len(train_rows) == 7473
    task = GSM8KTask()
    for number, row in enumerate(train_rows, start=1):
        target = gsm8k_target(row["answer"])
        problem = Problem(f"train-{number}", row["question"], gsm8k_gold(row["answer"]))
        graded = task.grade(problem, target)
        assert graded.correct, (number, target[-80:], graded.answer, problem.gold)
        assert "<<" not in target and ">>" not in target and "####" not in target


def test_prompt_is_what_the_transformers_backend_sends(tokenizer, monkeypatch):
    import decoptim.integrations.transformers as integration

    sent = []

    def fake_generate(model, tok, prompts, decoder, chat=None, system=None, **_):
        sent.extend(integration.format_prompt(tok, p, chat, system) for p in prompts)
        return []

    monkeypatch.setattr(integration, "generate", fake_generate)
    backend = TransformersBackend.__new__(TransformersBackend)
    backend.model, backend.tokenizer = None, tokenizer
    from decoptim.core.specs import parse_spec

    backend.generate([ROW["question"]], parse_spec("greedy"), 1.0, 1, 8, 0, GSM8KTask())
    prompt = training_prompt(tokenizer, ROW["question"])
    assert sent == [prompt]
    assert MATH_INSTRUCTION in prompt and prompt.endswith("<|im_start|>assistant\n")


def test_loss_mask_covers_exactly_the_target_and_eos(tokenizer, train_rows):
    rows = [ROW, *train_rows[:3]]
    examples, too_long = encode_rows(tokenizer, rows, 512)
    assert too_long == 0 and len(examples) == 4
    input_ids, labels = collate(examples, tokenizer.pad_token_id)
    width = max(len(ids) for ids, _ in examples)
    assert input_ids.shape == labels.shape == (4, width)
    for row, (example, (ids, prompt_length)) in enumerate(zip(rows, examples, strict=True)):
        text = training_prompt(tokenizer, example["question"])
        prompt = tokenizer(text, add_special_tokens=False)["input_ids"]  # as generate encodes it
        assert ids[:prompt_length] == prompt
        assert input_ids[row, : len(ids)].tolist() == ids
        learned = (labels[row] != IGNORE).nonzero().flatten().tolist()
        assert learned == list(range(prompt_length, len(ids)))
        assert labels[row, prompt_length : len(ids)].tolist() == ids[prompt_length:]
        assert ids[-1] == tokenizer.eos_token_id
        target = tokenizer.decode(ids[prompt_length:-1])
        assert target == gsm8k_target(example["answer"])
    short, dropped = encode_rows(tokenizer, rows, 10)
    assert short == [] and dropped == 4


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    """2 steps of 1 row: of the first 8 rows, 2 fit in max_length 120 (via the CLI; short, for
    a 135M model on a CPU)."""
    data = shared_data("gsm8k_train.jsonl")
    out = tmp_path_factory.mktemp("gsm8k-model") / "model"
    command = ["train-gsm8k", "--data", str(data), "--limit", "8", "--epochs", "1"]
    command += ["--batch-size", "1", "--max-length", "120", "--out", str(out), "--no-progress"]
    return command, main(command), out


def test_tiny_training_run_writes_a_loadable_model_and_its_record(tiny_run):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    _, code, out = tiny_run
    assert code == 0
    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    assert model.generation_config.pad_token_id == tokenizer.pad_token_id
    assert model.dtype == torch.float32
    record = json.loads((out / TRAINING_RECORD).read_text())
    data = shared_data("gsm8k_train.jsonl")
    assert record["data_rows"] == 7473 and record["limit"] == 8
    assert record["rows_used"] == 2 and record["rows_too_long"] == 6
    assert record["steps"] == record["planned_steps"] == 2
    assert record["epochs"] == 1 and record["batch_size"] == 1 and record["max_length"] == 120
    import hashlib

    assert record["data_sha256"] == hashlib.sha256(data.read_bytes()).hexdigest()
    for field in ("first_loss", "last_loss", "mean_last_50_loss", "seconds", "device"):
        assert field in record
    assert 0 < record["last_loss"] < 20 and record["device"] == "cpu"
    assert record["mean_last_50_loss"] == pytest.approx(
        (record["first_loss"] + record["last_loss"]) / 2
    )
    assert not list(out.parent.glob("model.*"))  # no staging folder left


def test_cached_model_is_reused_and_the_alias_finds_it(tiny_run, tmp_path, monkeypatch):
    import shutil

    _, _, out = tiny_run
    config = GSM8KTraining()
    shutil.copytree(out, tmp_path / config.key(), ignore=shutil.ignore_patterns("*.safetensors"))
    data = shared_data("gsm8k_train.jsonl")
    assert smollm2_gsm8k_path(data, config, cache=tmp_path) == tmp_path / config.key()
    assert smollm2_gsm8k_path(None, config, cache=tmp_path) == tmp_path / config.key()
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps(ROW) + "\n")
    with pytest.raises(ValueError, match="trained on another data file"):
        smollm2_gsm8k_path(other, config, cache=tmp_path)
    monkeypatch.setenv("DECOPTIM_CACHE", str(tmp_path))
    monkeypatch.delenv(DATA_ENV, raising=False)
    assert resolve_model("smollm2-gsm8k") == str(tmp_path / config.key())


def test_alias_without_a_model_says_how_to_build_it(tmp_path, monkeypatch):
    assert "smollm2-gsm8k" in ALIASES
    monkeypatch.setenv("DECOPTIM_CACHE", str(tmp_path))
    monkeypatch.delenv(DATA_ENV, raising=False)
    with pytest.raises(FileNotFoundError, match=r"decoptim train-gsm8k --data PATH") as error:
        resolve_model("smollm2-gsm8k")
    assert DATA_ENV in str(error.value)
    monkeypatch.setenv(DATA_ENV, str(tmp_path / "missing.jsonl"))
    with pytest.raises(FileNotFoundError, match=r"DECOPTIM_GSM8K_TRAIN=.*missing.jsonl"):
        resolve_model("smollm2-gsm8k")
    with pytest.raises(FileNotFoundError, match="smollm2-gsm8k is not built"):
        smollm2_gsm8k_path(None, GSM8KTraining(), cache=tmp_path)


def test_eval_with_the_missing_alias_fails_cleanly(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DECOPTIM_CACHE", str(tmp_path))
    monkeypatch.delenv(DATA_ENV, raising=False)
    data = shared_data("gsm8k_test.jsonl")
    command = ["eval", "--model", "smollm2-gsm8k", "--task", "gsm8k", "--data", str(data)]
    command += ["--limit", "2", "--decoders", "greedy", "--out", str(tmp_path / "run")]
    assert main(command) == 2
    assert "train-gsm8k --data PATH" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--epochs", "0"], "epochs must be an int >= 1, got epochs=0"),
        (["--batch-size", "0"], "batch_size must be an int >= 1, got batch_size=0"),
        (["--learning-rate", "0"], "learning_rate must be a number in (0, 1), got "),
        (["--learning-rate", "nan"], "got learning_rate=nan"),
        (["--warmup", "1"], "warmup must be a fraction in [0, 1), got warmup=1.0"),
        (["--max-length", "1"], "max_length must be an int >= 2, got max_length=1"),
        (["--limit", "0"], "limit must be an int >= 1, got limit=0"),
        (["--seed", "-1"], "seed must be an int >= 0, got seed=-1"),
    ],
)
def test_cli_rejects_bad_settings(flags, message, tmp_path, capsys):
    data = tmp_path / "train.jsonl"
    data.write_text(json.dumps(ROW) + "\n")
    out = tmp_path / "out"
    assert main(["train-gsm8k", "--data", str(data), *flags, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("decoptim train-gsm8k: error: ") and message in err
    assert not out.exists()


def test_cli_rejects_a_missing_or_bad_data_file(tmp_path, capsys):
    missing = tmp_path / "nope.jsonl"
    assert main(["train-gsm8k", "--data", str(missing), "--out", str(tmp_path / "o")]) == 2
    assert f"data file {missing} does not exist" in capsys.readouterr().err
    assert main(["train-gsm8k", "--data", str(tmp_path), "--out", str(tmp_path / "o")]) == 2
    assert "is a directory" in capsys.readouterr().err
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "q"}\n')
    assert main(["train-gsm8k", "--data", str(broken), "--out", str(tmp_path / "o")]) == 2
    assert "broken.jsonl:1: missing field(s) answer" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_config_key_names_every_setting():
    key = GSM8KTraining().key()
    assert key.startswith("smollm2-gsm8k-seed0-epochs3-batch_size64-")
    assert GSM8KTraining(limit=8).key() != key
    with pytest.raises(ValueError, match="epochs=True"):
        GSM8KTraining(epochs=True)


def test_right_padding_needs_no_attention_mask(tokenizer, train_rows):
    """The loop passes no attention mask: the padding follows every real token, so causal
    attention gives the same loss as with the mask (and keeps SDPA on its causal kernel)."""
    import torch

    from tests.conftest import tiny_llama

    examples, _ = encode_rows(tokenizer, train_rows[:3], 512)
    assert len({len(ids) for ids, _ in examples}) > 1  # some rows are padded
    input_ids, labels = collate(examples, tokenizer.pad_token_id)
    model = tiny_llama(len(tokenizer), hidden=32, layers=2)
    mask = (torch.arange(input_ids.shape[1]) < torch.tensor([[len(i)] for i, _ in examples])).long()
    with torch.no_grad():
        unmasked = model(input_ids=input_ids, labels=labels).loss
        masked = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
    torch.testing.assert_close(unmasked, masked)
