"""LoRA through peft: a no-op at initialisation, trainable, merged into an equal plain model;
and the smollm2-arith trainer end to end on a tiny stand-in for SmolLM2 (a few CPU steps)."""

import json
from dataclasses import asdict

import pytest
import torch

from decoptim.eval import lora
from decoptim.eval.lora import TARGETS, LoraTraining, adapter_weights, with_lora
from tests.conftest import tiny_llama


def test_lora_starts_as_the_base_model_and_merges_exactly():
    model = tiny_llama(64, hidden=32, layers=2)
    ids = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(0))
    before = model(ids).logits
    adapted = with_lora(model, rank=4, alpha=8.0)
    assert len(adapted.targeted_module_names) == 2 * 7  # q, k, v, o, gate, up, down per layer
    torch.testing.assert_close(adapted(ids).logits, before)  # B = 0 at the start
    trainable = [p for p in adapted.parameters() if p.requires_grad]
    assert trainable and all(4 in p.shape for p in trainable)
    optimizer = torch.optim.SGD(trainable, lr=0.5)
    adapted(ids, labels=ids).loss.backward()
    optimizer.step()
    after = adapted(ids).logits.detach()
    assert not torch.allclose(after, before, atol=1e-4)
    assert len(adapter_weights(adapted)) == 2 * 2 * 7  # A and B per adapted layer
    merged = adapted.merge_and_unload()
    assert type(merged) is type(model)
    assert not any("lora" in name for name, _ in merged.named_modules())
    torch.testing.assert_close(merged(ids).logits, after, atol=1e-5, rtol=1e-5)


def test_with_lora_rejects_bad_arguments():
    with pytest.raises(ValueError, match="positive"):
        with_lora(tiny_llama(16), rank=0, alpha=1.0)
    with pytest.raises(ValueError, match="not found"):
        with_lora(tiny_llama(16), rank=2, alpha=1.0, targets=("nothing",))


@pytest.fixture
def tiny_smollm2(tmp_path, monkeypatch):
    """A 2-layer random Llama with SmolLM2's tokenizer, standing in for SmolLM2 in lora."""
    from decoptim.eval.model_cache import smollm2_path
    from decoptim.eval.training import smollm2_tokenizer

    tokenizer = smollm2_tokenizer(smollm2_path())
    model = tiny_llama(len(tokenizer), hidden=16, layers=2)
    path = tmp_path / "tiny-smollm2"
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    monkeypatch.setattr(lora, "smollm2_path", lambda: path)
    return path


def test_training_writes_the_adapter_the_merged_model_and_the_record(tmp_path, tiny_smollm2):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    config = LoraTraining(steps=2, batch_size=2, rank=2, alpha=4.0)
    out = lora.train_smollm2_arith(tmp_path / "out", config, progress=False)
    record = json.loads((out / "decoptim_training.json").read_text())
    assert record == {
        **asdict(config),
        "adapted_layers": 2 * len(TARGETS),
        "adapter_parameters": record["adapter_parameters"],
        "seconds": record["seconds"],
        "final_loss": record["final_loss"],
        "device": "cpu",
    }
    adapter = load_file(out / "adapter.safetensors")
    assert record["adapter_parameters"] == sum(t.numel() for t in adapter.values())
    base = AutoModelForCausalLM.from_pretrained(tiny_smollm2)
    merged = AutoModelForCausalLM.from_pretrained(out)
    assert type(merged) is type(base)
    assert merged.generation_config.eos_token_id is not None
    # Every adapted weight is W + (α/r)·B·A of the saved adapter; the rest is unchanged.
    merged_weights, base_weights = merged.state_dict(), base.state_dict()
    adapted = 0
    for name, weight in base_weights.items():
        layer = name.removesuffix(".weight")
        a = adapter.get(f"base_model.model.{layer}.lora_A.weight")
        if a is None:
            torch.testing.assert_close(merged_weights[name], weight)
            continue
        b = adapter[f"base_model.model.{layer}.lora_B.weight"]
        expected = weight + (config.alpha / config.rank) * b @ a
        torch.testing.assert_close(merged_weights[name], expected, atol=1e-6, rtol=1e-5)
        adapted += 1
    assert adapted == record["adapted_layers"] and len(adapter) == 2 * adapted
    assert any(t.any() for name, t in adapter.items() if "lora_B" in name)  # it trained


def test_the_adapter_model_is_cached_under_its_key(tmp_path, tiny_smollm2, monkeypatch):
    config = LoraTraining(steps=1, batch_size=1, rank=2, alpha=4.0)
    path = lora.smollm2_arith_path(config, cache=tmp_path, progress=False)
    assert path == tmp_path / config.key() and config.key().endswith("-peft")
    monkeypatch.setattr(lora, "train_smollm2_arith", pytest.fail)  # no second training
    assert lora.smollm2_arith_path(config, cache=tmp_path) == path
