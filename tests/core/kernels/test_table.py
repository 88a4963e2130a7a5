"""The kernel table's choice for every built-in decoder, checked on the CPU: the "is this a
CUDA tensor with kernels enabled" test is patched to say yes, and only the route is read
(no kernel runs)."""

import warnings

import pytest
import torch

import decoptim as d
from decoptim.core import decoders
from decoptim.core.kernels import MAX_FUSED_TOP_M, table

# The route each built-in decoder takes, by name ("torch" is the torch path): those of the
# former `_kernel_route` methods of decoders.py and bok.py, and softmax's closed form.
EXPECTED = [
    (d.Greedy(), "torch"),
    (d.Softmax(0.7), "softmax"),
    (d.SimplexDecoder(d.Shannon(), solver="mirror"), "torch"),
    (d.TopK(50), "floor"),
    (d.TopK(torch.tensor([3, 50])), "floor"),
    (d.SimplexDecoder(d.Shannon(), d.TopKSupport(50) & d.TopPSupport(0.9)), "top_k_intersection"),
    (
        d.SimplexDecoder(d.Shannon(), d.TopPSupport(0.9) & d.TopKSupport(5), 0.7),
        "top_k_intersection",
    ),
    (d.SimplexDecoder(d.Shannon(), d.TopKSupport(50) & d.MinPSupport(0.1)), "top_k_intersection"),
    (d.TopP(0.9), "top_p"),
    (d.TopP(torch.tensor([0.5, 0.9]), temperature=torch.tensor([0.7, 1.3])), "top_p"),
    (d.MinP(0.1), "floor"),
    (d.MinP(torch.tensor([0.1, 0.5]), temperature=torch.tensor([0.7, 1.3])), "floor"),
    (d.SimplexDecoder(d.Shannon(), d.MinPSupport(0.1), solver="mirror"), "torch"),
    (d.Typical(0.9), "typical"),
    (d.Typical(torch.tensor([0.5, 0.9]), temperature=torch.tensor([0.7, 1.3])), "typical"),
    (d.Epsilon(3e-4), "floor"),
    (d.Eta(3e-4), "floor"),
    (d.Sparsemax(), "tsallis"),
    (d.Sparsemax(solver="bisect"), "tsallis"),
    (d.Sparsemax(solver="sort"), "torch"),
    (d.Sparsemax(solver="closed_form"), "torch"),
    (d.Sparsemax(solver="mirror"), "torch"),
    (d.Entmax(1.5), "tsallis"),
    (d.Entmax(1.3), "tsallis"),
    (d.Entmax(1.5, solver="sort"), "torch"),
    (d.SimplexDecoder(d.Tsallis(1.7)), "tsallis"),
    (d.SimplexDecoder(d.Shannon(), d.TopPSupport(0.8), solver="mirror"), "top_p"),
    (d.BestOfK(8, 0.02, 0.2), "bok_prob"),
    (d.BestOfK(8, 0.02, 0.2, solver="mirror"), "bok_prob"),
    (d.BestOfK(8, 0.02, 0.2, solver="mirror", step_size=1.0), "torch"),
    (d.BestOfK(8, 2.0, 0.2, weights="topm", top_m=64), "bok_topm"),
    (d.BestOfK(8, 2.0, 0.2, weights="rank", top_m=MAX_FUSED_TOP_M), "bok_topm"),
    (d.BestOfK(8, 2.0, 0.2, weights="topm", top_m=MAX_FUSED_TOP_M + 1), "torch"),
    (d.BestOfK(8, 0.02, 0.2, solver="mirror", weights="topm"), "torch"),
    (d.BestOfK(8, 0.02, 0.2, weights=torch.rand(8)), "torch"),
    # w = p beyond the kernels' coverage slope βK: the torch path.
    (d.BestOfK(8, 1e4 / 8, 0.5), "bok_prob"),
    (d.BestOfK(8, 2e4 / 8, 0.5), "torch"),
    (d.BestOfK(8, 128 / 8, 0.5, solver="mirror"), "bok_prob"),
    (d.BestOfK(8, 256 / 8, 0.5, solver="mirror"), "torch"),
    (d.BestOfK(8, 0.02, 0.2).beta_zero_control(), "bok_prob"),
    (d.BestOfK(8, 0.02, 0.2).matched_temperature_control(), "softmax"),
]


@pytest.fixture
def on_cuda(monkeypatch):
    """Route as if every tensor were on CUDA with the kernels enabled; warnings forgotten."""
    monkeypatch.setattr(table, "use_kernels", lambda x: True)
    monkeypatch.setattr(table, "_WARNED", set())


@pytest.mark.parametrize(("decoder", "name"), EXPECTED, ids=lambda v: repr(v)[:70])
def test_each_built_in_decoder_takes_the_route_it_took_before(on_cuda, decoder, name):
    x = torch.zeros(2, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no built-in decoder is an uncovered composite
        assert table.route_name(decoder, x) == name
        # Kernels read float32 rows only.
        assert table.route_name(decoder, x.double()) == "torch"


def test_without_cuda_everything_takes_the_torch_path():
    x = torch.zeros(2, 8)
    for decoder, _ in EXPECTED:
        assert table.kernel_route(decoder, x) is None


def test_every_route_of_the_table_is_a_route_of_some_built_in_decoder(on_cuda):
    x = torch.zeros(2, 8)
    listed = {route.name for routes in table.KERNELS.values() for route in routes}
    assert listed == {name for _, name in EXPECTED} - {"torch"}
    assert {table.route_name(decoder, x) for decoder, _ in EXPECTED} == listed | {"torch"}


@pytest.mark.parametrize(
    "build",
    [
        lambda: d.BestOfK(8, 0.5, 0.3, support=d.TopKSupport(3)),
        lambda: d.BestOfK(8, 0.5, 0.3, support=d.MinPSupport(0.1)),
        lambda: d.SimplexDecoder(d.Tsallis(1.5), d.TopKSupport(3)),
        lambda: d.SimplexDecoder(d.Shannon(), d.TopPSupport(0.9) & d.MinPSupport(0.1)),
        lambda: d.SimplexDecoder(d.Shannon() + 0.5 * d.Tsallis(2.0)),
    ],
    ids=["bok-topk", "bok-minp", "entmax-topk", "softmax-intersect", "mixed-regulariser"],
)
def test_an_uncovered_composite_takes_the_torch_path_and_warns_once(on_cuda, build):
    decoder = build()
    x = torch.randn(2, 8, generator=torch.Generator().manual_seed(0))
    with pytest.warns(UserWarning, match="no entry in decoptim's kernel table") as caught:
        assert table.kernel_route(decoder, x) is None
    message = str(caught[0].message)
    parts = getattr(decoder.support, "parts", (decoder.support,))
    assert type(decoder).__name__ in message
    assert all(type(part).__name__ in message for part in parts), message
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # Said once per (decoder class, support type): neither the same decoder nor another
        # instance of the same composite warns again, and the torch path solves it.
        assert table.kernel_route(decoder, x) is None
        q = build().probs(x)
    torch.testing.assert_close(q.sum(-1), torch.ones(2))
    assert torch.equal(q, decoder.probs(x))


def test_the_warning_is_per_decoder_class_and_support_type(on_cuda):
    x = torch.zeros(2, 8)
    with pytest.warns(UserWarning):
        table.kernel_route(d.BestOfK(8, 0.5, 0.3, support=d.TopKSupport(3)), x)
    with pytest.warns(UserWarning, match="MinPSupport"):
        table.kernel_route(d.BestOfK(8, 0.5, 0.3, support=d.MinPSupport(0.2)), x)
    with pytest.warns(UserWarning, match="SimplexDecoder with support TopKSupport"):
        table.kernel_route(d.SimplexDecoder(d.Tsallis(2.0), d.TopKSupport(3)), x)


def test_an_intersection_is_keyed_by_its_parts_in_any_order(on_cuda):
    x = torch.zeros(2, 8)
    top_k, top_p, min_p = d.TopKSupport(3), d.TopPSupport(0.9), d.MinPSupport(0.1)
    for support in (top_k & top_p, top_p & top_k, min_p & top_k, top_p & min_p & top_k):
        decoder = d.SimplexDecoder(d.Shannon(), support)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert table.route_name(decoder, x) == "top_k_intersection", support
    # Top-k given twice, or beside a support the route does not know, is another composite.
    for support in (top_k & d.TopKSupport(2), top_k & d.TypicalSupport(0.9)):
        with pytest.warns(UserWarning, match="TopKSupport & "):
            assert table.route_name(d.SimplexDecoder(d.Shannon(), support), x) == "torch"


def test_decoders_consult_the_table(on_cuda, monkeypatch):
    """probs goes through the route the table picks: a stand-in route is called."""
    calls = []
    fake = table.Route(
        "fake", covers=lambda decoder: True, probs=lambda dec, x: calls.append(dec) or x
    )
    monkeypatch.setitem(table.KERNELS, (d.KLCoverage, d.TopKSupport), (fake,))
    monkeypatch.setitem(table.KERNELS, (d.Tsallis, d.Full), (fake,))
    x = torch.zeros(2, 8)
    bok = d.BestOfK(8, 0.5, 0.3, support=d.TopKSupport(3))
    sparsemax = d.Sparsemax()
    assert bok.probs(x) is not None and sparsemax.probs(x) is not None
    assert calls == [bok, sparsemax]
    assert decoders.kernel_route is table.kernel_route
