"""LoRA: a no-op at initialisation, trainable, and merged into an equal plain model."""

import pytest
import torch

from decoptim.eval.lora import LoRALinear, add_lora, lora_state_dict, merge_lora
from tests.conftest import tiny_llama


def test_lora_starts_as_the_base_model_and_merges_exactly():
    model = tiny_llama(64, hidden=32, layers=2)
    ids = torch.randint(0, 64, (2, 7), generator=torch.Generator().manual_seed(0))
    before = model(ids).logits
    count = add_lora(model, rank=4, alpha=8.0)
    assert count == 2 * 7  # q, k, v, o, gate, up, down in each layer
    torch.testing.assert_close(model(ids).logits, before)  # B = 0 at the start
    trainable = [p for p in model.parameters() if p.requires_grad]
    assert trainable and all(p.shape[0] == 4 or p.shape[1] == 4 for p in trainable)
    optimizer = torch.optim.SGD(trainable, lr=0.5)
    loss = model(ids, labels=ids).loss
    loss.backward()
    optimizer.step()
    adapted = model(ids).logits.detach()
    assert not torch.allclose(adapted, before, atol=1e-4)
    assert len(lora_state_dict(model)) == 2 * count
    merge_lora(model)
    assert not any(isinstance(m, LoRALinear) for m in model.modules())
    torch.testing.assert_close(model(ids).logits, adapted, atol=1e-5, rtol=1e-5)


def test_add_lora_rejects_bad_arguments():
    model = tiny_llama(16)
    with pytest.raises(ValueError, match="rank"):
        add_lora(model, rank=0, alpha=1.0)
    with pytest.raises(ValueError, match="no linear layer"):
        add_lora(model, rank=2, alpha=1.0, targets=("nothing",))
