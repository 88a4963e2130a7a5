"""decoptim.manual_seed: torch's generators and the graphs' seed streams from one seed."""

import numpy as np
import pytest
import torch

import decoptim as d


@pytest.mark.parametrize("seed", [1.5, True, "3", None])
def test_a_seed_that_is_not_an_int_is_named(seed):
    with pytest.raises(TypeError, match="seed must be an int"):
        d.manual_seed(seed)


@pytest.mark.parametrize("seed", [7, np.int64(7), torch.tensor(7)])
def test_it_seeds_torch(seed):
    d.manual_seed(seed)
    first = torch.rand(5)
    torch.manual_seed(7)
    assert torch.equal(torch.rand(5), first)


def test_it_restarts_every_graph_seed_stream_in_place(monkeypatch):
    pytest.importorskip("triton")
    from decoptim.core.kernels import draw

    streams = {0: torch.tensor([123, 57]), 2: torch.tensor([9, 4])}  # stand-ins on the CPU
    kept = dict(streams)
    monkeypatch.setattr(draw, "_graph_seed_streams", streams)
    d.manual_seed(5)
    for index, stream in streams.items():
        assert stream is kept[index]  # the tensor captured graphs read
        assert stream.tolist() == [draw.graph_seed_key(5, index), 0]
    assert draw.graph_seed_key(5, 0) != draw.graph_seed_key(5, 2)
    assert draw.graph_seed_key(5, 0) != draw.graph_seed_key(6, 0)
    assert 0 <= draw.graph_seed_key(-(2**40), 0) < 2**63
