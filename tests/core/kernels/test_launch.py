"""Cached kernel launches (`decoptim.core.kernels.launch`).

- The key is at least as fine as Triton's specialisation (checked on the CPU against
  `native_specialize_impl`): two launches with one key would be compiled alike by Triton's
  JIT, so reusing the variant is the same launch.
- The launch logic, with Triton's driver and JIT path replaced by fakes (CPU).
- On a GPU: repeat launches of the decoders never reach Triton's JIT, and logits at an
  unaligned address take a variant of their own.
"""

from __future__ import annotations

import os

import pytest
import torch

triton = pytest.importorskip("triton")

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

if os.environ.get("TRITON_INTERPRET") == "1":
    pytest.skip("under Triton's interpreter `kernel` is triton.jit", allow_module_level=True)

import triton.language as tl  # noqa: E402
from triton.backends.compiler import BaseBackend  # noqa: E402
from triton.runtime.jit import native_specialize_impl  # noqa: E402

import decoptim as d  # noqa: E402
from decoptim.core.kernels import launch, top_p  # noqa: E402
from decoptim.core.kernels.launch import CachedLaunchFunction, kernel  # noqa: E402
from tests.conftest import random_logits  # noqa: E402


def _probe(x, n, BLOCK: tl.constexpr, FLAG: tl.constexpr = True):
    pass


PROBE = CachedLaunchFunction(_probe)
BASE = torch.zeros(64, dtype=torch.float64)

EDGES = [0, 1, 2, 15, 16, 17, -1, -16, 2**31 - 1, 2**31, -(2**31), -(2**31) - 1, 2**32,
         2**63 - 1, 2**63, 2**64 - 1, True, False, 0.0, 1.0, -2.5, None]  # fmt: skip
DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.int32, torch.int64, torch.bool]


def _tensor(dtype: torch.dtype, offset: int) -> torch.Tensor:
    # A view `offset` elements into a buffer: its address is divisible by 16 or not.
    return BASE.view(torch.uint8)[: 64 * 8].view(dtype)[offset : offset + 4]


def _specialisation(value) -> tuple:
    return native_specialize_impl(BaseBackend, value, False, True, True)


values = st.one_of(
    st.sampled_from(EDGES),
    st.integers(-(2**64), 2**64 - 1).filter(lambda v: -(2**63) <= v < 2**64),
    st.floats(allow_nan=False),
    st.builds(_tensor, st.sampled_from(DTYPES), st.integers(0, 9)),
)


def _key(value):
    key, launched = PROBE.bind((value, 7), {"BLOCK": 32})
    return key[1], launched[0]


@settings(max_examples=300, deadline=None)
@given(st.lists(values, min_size=2, max_size=12))
def test_one_key_means_one_specialisation(launches):
    seen: dict = {}
    for value in launches + EDGES:
        key, _ = _key(value)
        specialisation = _specialisation(value)
        assert seen.setdefault(key, specialisation) == specialisation, (value, key)


def test_a_launch_pdl_option_is_part_of_the_key():
    # A dependent launch and a plain one of the same kernel are two launcher calls.
    key, _ = PROBE.bind((_tensor(torch.float32, 0), 7), {"BLOCK": 32, "launch_pdl": True})
    other, _ = PROBE.bind((_tensor(torch.float32, 0), 7), {"BLOCK": 32, "launch_pdl": False})
    assert key != other


def test_dependent_launches_only_on_hopper_or_later(monkeypatch):
    # And only with a Triton that has griddepcontrol (3.4 and later).
    assert not launch.dependent_launch(torch.device("cpu"))
    for major in (8, 9, 10):
        launch.dependent_launch.cache_clear()
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda _, m=major: (m, 0))
        expected = major >= 9 and launch.gdc_wait is not None
        assert launch.dependent_launch(torch.device("cuda", 0)) is expected
    launch.dependent_launch.cache_clear()


def test_the_edge_launches_dependently_up_to_two_programs_per_sm(monkeypatch):
    # 16 rows at V = 151,936 take 256 of the edge's programs, 32 rows 512: on 132 SMs the
    # first overlap their launches and the second do not (stop 50's A/B on an H200).
    monkeypatch.setattr(top_p, "dependent_launch", lambda _: True)
    monkeypatch.setattr(top_p, "sm_count", lambda _: 132)

    def rows(count: int) -> torch.Tensor:  # only the shape is read
        return torch.empty(count, 151_936, device="meta")

    assert top_p._dependent(rows(16)) and not top_p._dependent(rows(32))
    monkeypatch.setattr(top_p, "dependent_launch", lambda _: False)
    assert not top_p._dependent(rows(1))


def test_tensors_are_launched_as_their_addresses_and_keyed_by_alignment():
    aligned, off = _tensor(torch.float32, 0), _tensor(torch.float32, 1)
    assert _key(aligned) == ((torch.float32, True), aligned.data_ptr())
    assert _key(off) == ((torch.float32, False), off.data_ptr())
    assert _key(_tensor(torch.int32, 0))[0] != _key(aligned)[0]


def test_the_key_holds_constexprs_and_options_and_defaults_are_filled():
    key, launched = PROBE.bind((_tensor(torch.float32, 0), 7), {"BLOCK": 32, "num_warps": 4})
    other, _ = PROBE.bind((_tensor(torch.float32, 0), 7), {"BLOCK": 64, "num_warps": 4})
    assert key != other
    assert launched[2:] == [32, True]  # BLOCK as given, FLAG's default
    _, launched = PROBE.bind((_tensor(torch.float32, 0), 7), {"BLOCK": 32, "FLAG": False})
    assert launched[2:] == [32, False]


def test_a_tensor_given_by_keyword_is_keyed_by_its_specialisation_not_the_object():
    first, second = _tensor(torch.float32, 0), _tensor(torch.float32, 4)  # both aligned
    key, launched = PROBE.bind((), {"x": first, "n": 7, "BLOCK": 32, "num_warps": 4})
    other, _ = PROBE.bind((), {"x": second, "n": 7, "BLOCK": 32, "num_warps": 4})
    assert key == other == PROBE.bind((second, 7), {"BLOCK": 32, "num_warps": 4})[0]
    assert launched == [first.data_ptr(), 7, 32, True]


@pytest.mark.parametrize(
    "args, kwargs",
    [
        ((BASE, "seven"), {"BLOCK": 32}),  # a type the key does not know
        ((BASE, torch.tensor(7).numpy()), {"BLOCK": 32}),  # a numpy int is not an int
        ((BASE, 7), {}),  # a missing constexpr: Triton's own error says which
        ((BASE, 7, 32, True, 5), {}),  # too many arguments
    ],
)
def test_launches_the_key_does_not_cover_take_tritons_path(args, kwargs):
    assert PROBE.bind(args, kwargs) is None


def test_kernel_is_a_cached_launch_jit_function():
    made = kernel(_probe)
    assert isinstance(made, CachedLaunchFunction)
    assert made.arg_names == ["x", "n", "BLOCK", "FLAG"]


# --- The launch itself, with Triton's driver and path replaced by fakes ---------------------


class _Compiled:
    """What Triton's JIT returns for a launch: a compiled variant with its launcher."""

    function, packed_metadata = "function", "metadata"

    def __init__(self, refuses_addresses: bool = False):
        self.launches: list[tuple] = []
        self.refuses_addresses = refuses_addresses

    def run(self, *launch):
        if self.refuses_addresses:
            raise TypeError("pointer argument must be a tensor")
        self.launches.append(launch)


class _Driver:
    def get_current_device(self):
        return 0

    def get_current_stream(self, device):
        return 1234


@pytest.fixture
def through_triton(monkeypatch):
    """Launches that take Triton's own path, each answered by the same compiled variant."""
    from decoptim.core.kernels import launch

    calls: list[dict] = []
    compiled = _Compiled()

    def tritons_run(self, *args, grid, warmup, **kwargs):
        calls.append({"args": args, "grid": grid, **kwargs})
        return compiled

    monkeypatch.setattr(triton.runtime.jit.JITFunction, "run", tritons_run)
    monkeypatch.setattr(triton.runtime.driver, "_active", _Driver())
    monkeypatch.setattr(launch, "_ENABLED", True)
    monkeypatch.setattr(launch, "_ADDRESSES_ACCEPTED", True)
    return calls, compiled


def test_the_first_launch_of_a_key_compiles_and_later_ones_call_the_launcher(through_triton):
    calls, compiled = through_triton
    made = CachedLaunchFunction(_probe)
    x = _tensor(torch.float32, 0)
    made[(4, 2)](x, 7, BLOCK=32)
    assert len(calls) == 1 and compiled.launches == []
    made[(5, 3)](x, 9, BLOCK=32)  # another grid and int of the same specialisation
    assert len(calls) == 1
    assert compiled.launches == [(5, 3, 1, 1234, "function", "metadata", None, None, None,
                                  x.data_ptr(), 9, 32, True)]  # fmt: skip
    made[(4,)](_tensor(torch.float32, 1), 7, BLOCK=32)  # unaligned: a key of its own
    made[(4,)](x, 16, BLOCK=32)  # an int divisible by 16
    made[(4,)](x, 7, BLOCK=64)  # another constexpr
    assert len(calls) == 4 and len(compiled.launches) == 1


def test_switched_off_every_launch_takes_tritons_path(through_triton):
    from decoptim.core.kernels.launch import set_cached_launches

    calls, compiled = through_triton
    made = CachedLaunchFunction(_probe)
    set_cached_launches(False)
    for _ in range(3):
        made[(4,)](_tensor(torch.float32, 0), 7, BLOCK=32)
    assert len(calls) == 3 and compiled.launches == []
    set_cached_launches(True)
    for _ in range(2):
        made[(4,)](_tensor(torch.float32, 0), 7, BLOCK=32)
    assert len(calls) == 4 and len(compiled.launches) == 1


def test_a_launcher_refusing_addresses_turns_the_cache_off_for_good(through_triton, monkeypatch):
    from decoptim.core.kernels import launch

    calls, _ = through_triton
    made = CachedLaunchFunction(_probe)
    made._variants = {}
    x = _tensor(torch.float32, 0)
    made[(4,)](x, 7, BLOCK=32)
    key = next(iter(made._variants))
    made._variants[key] = _Compiled(refuses_addresses=True)
    made[(4,)](x, 7, BLOCK=32)
    assert len(calls) == 2 and launch._ADDRESSES_ACCEPTED is False
    made[(4,)](x, 7, BLOCK=32)
    assert len(calls) == 3


# --- On a GPU: the decoders' launches --------------------------------------------------------

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
LAUNCHING = [
    d.Softmax(0.8),
    d.TopP(0.9),
    d.TopK(50),
    d.MinP(0.1),
    d.Typical(0.9),
    d.Sparsemax(),
    d.BestOfK(8, 0.05, 1.0, weights="topm", top_m=64),
    d.BestOfK(8, 0.02, 0.2),
]


@cuda
@pytest.mark.parametrize("decoder", LAUNCHING, ids=repr)
def test_cuda_repeat_launches_skip_tritons_binding(decoder, monkeypatch):
    through_triton = []
    triton_run = triton.runtime.jit.JITFunction.run

    def counted(self, *args, **kwargs):
        if isinstance(self, CachedLaunchFunction):
            through_triton.append(self.fn.__name__)
        return triton_run(self, *args, **kwargs)

    monkeypatch.setattr(triton.runtime.jit.JITFunction, "run", counted)
    first, second = (random_logits(8, 32000, seed).cuda() for seed in (0, 1))
    decoder.probs(first), decoder.sample(first)  # compiles, or finds, each variant
    through_triton.clear()
    q, tokens = decoder.probs(second), decoder.sample(second)
    assert through_triton == []
    torch.testing.assert_close(q.cpu(), decoder.probs(second.cpu()), atol=2e-6, rtol=1e-4)
    assert (q.gather(1, tokens[:, None]) > 0).all()


@cuda
@pytest.mark.parametrize("decoder", LAUNCHING, ids=repr)
def test_cuda_rows_at_an_unaligned_address_take_their_own_variant(decoder):
    """Logits 4 bytes past a 16-byte boundary (a view into a larger buffer) must not reuse
    a variant compiled for aligned ones (which assumes aligned vector loads)."""
    from tests.core.kernels.launches import kernels

    aligned = random_logits(8, 32001, 2).cuda()
    buffer = torch.empty(aligned.numel() + 1, device="cuda")
    unaligned = buffer[1:].view_as(aligned).copy_(aligned)
    assert unaligned.data_ptr() % 16 != 0
    assert torch.equal(decoder.probs(aligned), decoder.probs(unaligned))
    assert torch.equal(decoder.probs(unaligned), decoder.probs(aligned))
    seeded = [torch.Generator("cuda").manual_seed(5) for _ in range(2)]
    assert torch.equal(decoder.sample(aligned, generator=seeded[0]),
                       decoder.sample(unaligned, generator=seeded[1]))  # fmt: skip
    first_arguments = {key[1] for found in kernels().values() for _, key in found._variants}
    assert (torch.float32, False) in first_arguments


def test_a_launch_hook_sends_launches_through_tritons_path():
    from triton import knobs

    def hook(metadata):
        pass

    assert not PROBE.hooked()  # no hook by default, in any Triton that has knobs
    knobs.runtime.launch_enter_hook.add(hook)
    try:
        assert PROBE.hooked()
    finally:
        knobs.runtime.launch_enter_hook.remove(hook)
    assert not PROBE.hooked()
