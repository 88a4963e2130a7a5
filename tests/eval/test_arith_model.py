import torch

from decoptim.eval.arith import make_problems, prompt
from decoptim.eval.arith_model import ArithTraining, build_tokenizer, train_arith_model


def test_tokenizer_round_trips_arith_text():
    tokenizer = build_tokenizer()
    for problem in make_problems(20, seed=2, difficulty=3):
        text = prompt(problem.question) + " " + problem.solution
        ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        assert tokenizer.unk_token_id not in ids
        assert tokenizer.decode(ids) == text
        assert len(ids) < len(text)  # words are single tokens


def test_training_is_seeded_and_deterministic(tmp_path):
    config = ArithTraining(steps=3, batch_size=4, hidden_size=16, layers=1, heads=2)
    first = train_arith_model(tmp_path / "a", config, progress=False)
    second = train_arith_model(tmp_path / "b", config, progress=False)
    from safetensors.torch import load_file

    a, b = load_file(first / "model.safetensors"), load_file(second / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (first / "tokenizer.json").exists() and (first / "decoptim_training.json").exists()
