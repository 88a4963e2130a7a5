"""Kernel checks run by Triton's interpreter on the CPU (TRITON_INTERPRET=1 must be set
before Triton is imported, hence a separate process: see test_interpreted.py).

Each check runs a CUDA-path kernel pipeline on CPU tensors and compares it with the torch
reference in float64, including rows that overflow the candidate slots and so take the
in-kernel fallback over the whole row.
"""

from __future__ import annotations

import contextlib
import os
import sys
import unittest.mock

import torch
import triton
import triton.language as tl

assert os.environ.get("TRITON_INTERPRET") == "1", "run with TRITON_INTERPRET=1"

import decoptim as d  # noqa: E402
from decoptim.core.checks import kernel_rows  # noqa: E402
from decoptim.core.coordinated import (  # noqa: E402
    PROPOSALS,
    coordinated_sample,
    coordinated_sample_in_set,
    group_codes,
    hashed_uniform,
)
from decoptim.core.kernels import candidates as candidates_module  # noqa: E402
from decoptim.core.kernels import table, top_p, uniforms  # noqa: E402
from decoptim.core.kernels.bok_head import exponential  # noqa: E402
from decoptim.core.kernels.bok_prob import SMALL_HEAD, _solve, bok_prob_sample  # noqa: E402
from decoptim.core.kernels.bok_terms import GAP, INV_TAU_P, Z_MAX  # noqa: E402
from decoptim.core.kernels.bok_terms import C as C_TERM  # noqa: E402
from decoptim.core.kernels.bok_topm import (  # noqa: E402
    TopMProblem,
    _head,
    bok_topm_probs,
    bok_topm_sample,
)
from decoptim.core.kernels.candidates import (  # noqa: E402
    CAP,
    COMPACT,
    candidate_counts,
    gather_candidates,
    kth_largest,
    kth_largest_code,
    kth_largest_packed_code,
    load_few_candidates,
    top_candidates,
)
from decoptim.core.kernels.draw import BLOCK as DRAW_BLOCK  # noqa: E402
from decoptim.core.kernels.draw import (  # noqa: E402
    CodedDraw,
    draw_coordinated,
    draw_from_probs,
    draw_many_from_logits,
    draw_seed,
    next_graph_seeds,
)
from decoptim.core.kernels.streaming import (  # noqa: E402
    code_of,
    exp_affine,
    kth_largest_lower_bound,
    row_stats,
    segment_size,
)
from decoptim.core.kernels.temperature import softmax_probs, softmax_sample  # noqa: E402
from decoptim.core.kernels.top_p import (  # noqa: E402
    TYPICAL,
    _propose_and_accept,
    _typical_centre,
    sample_at_the_edge,
    top_p_probs,
    top_p_sample,
    typical_probs,
)
from decoptim.core.kernels.tsallis import tsallis_probs, tsallis_sample  # noqa: E402
from decoptim.core.kernels.uniforms import pick  # noqa: E402
from tests.conftest import (  # noqa: E402
    assert_draws_are_the_two_step_picks,
    assert_first_proposal_inside_the_top_p_cut_kept,
    assert_first_proposal_inside_the_typical_set_kept,
    assert_same_support_up_to_the_top_p_cut,
    assert_same_support_up_to_the_typical_edge,
    crowded_rows,
    random_logits,
)
from tests.core.kernels.philox_pairs import philox_pairs, philox_words  # noqa: E402


def check_gather_keeps_exactly_the_tokens_above_the_bound() -> None:
    # Crowded rows (many kept per block, and slots that overflow) and rows whose few kept
    # tokens fall one to a block (the append without a scan), two to a block, or none.
    sparse = torch.full((3, 6000), -50.0)
    sparse[0, ::1500] = 0.0  # one per 1,024-token block
    sparse[1, [5, 6, 2047, 2048, 5999]] = 0.0  # two in a block, then one, one and one
    sparse[2, 3000] = 0.0  # a lone kept token
    z = torch.cat([crowded_rows(6000, 0), sparse, random_logits(2, 6000, 4)])
    maxes = row_stats(z, kernel_rows(1.0, z)).maxes
    got = gather_candidates(z, scale=kernel_rows(0.5, z), maxes=maxes, offset=1.0)
    x = (z - z.max(-1, keepdim=True).values) * 0.5
    expected = x >= -1.0
    for row in range(z.shape[0]):
        counts = got.count[row]
        assert int(counts.sum()) == int(expected[row].sum()), row
        if (counts <= CAP).all():
            ids = torch.cat([got.index[row, s, : counts[s]] for s in range(got.splits)])
            values = torch.cat([got.x[row, s, : counts[s]] for s in range(got.splits)])
            assert torch.equal(ids.long(), expected[row].nonzero().squeeze(-1)), row
            assert torch.equal(values, x[row, ids.long()]), row


@triton.jit
def _lower_bound_kernel(x_ptr, out_ptr, n, k, BLOCK: tl.constexpr):
    lanes = tl.arange(0, BLOCK)
    valid = lanes < n
    x = tl.load(x_ptr + lanes, mask=valid, other=-float("inf"))
    tl.store(out_ptr, kth_largest_lower_bound(x, valid, k, 16))


def check_kth_largest_lower_bound_is_within_its_slack() -> None:
    generator = torch.Generator().manual_seed(5)
    for n, k in ((256, 1), (256, 64), (200, 200), (37, 5)):
        # Values packed just below the k-th largest, where a looser bound would take many.
        x = 1.0 - torch.rand(n, generator=generator) * 2.0**-12
        x[0] = 0.0
        x[1] = 3.0
        bound = torch.empty(1)
        _lower_bound_kernel[(1,)](x, bound, n, k, BLOCK=256)
        kth = x.topk(k).values[-1]
        slack = (x.max() - x.min()) / 2**16
        assert kth - slack <= bound <= kth, (n, k, float(bound), float(kth))
    few = torch.tensor([1.0, -torch.inf, 2.0])
    bound = torch.empty(1)
    _lower_bound_kernel[(1,)](few, bound, 3, 3, BLOCK=256)
    assert bound == -torch.inf


@triton.jit
def _kth_codes_kernel(x_ptr, out_ptr, n, k, BLOCK: tl.constexpr):
    lanes = tl.arange(0, BLOCK)
    packed = lanes < n
    x = tl.load(x_ptr + lanes, mask=packed, other=-float("inf"))
    tl.store(out_ptr, kth_largest_code(code_of(x), packed, k))
    row = tl.program_id(0)  # 0: the values are the scratch of row 0
    tl.store(out_ptr + 1, kth_largest_packed_code(x, packed, x_ptr, row, BLOCK, k))


@triton.jit
def _few_candidates_kernel(x_ptr, index_ptr, count_ptr, x_out_ptr, index_out_ptr,
                           position_out_ptr, SPLITS, CAP: tl.constexpr,
                           SPLIT_BLOCK: tl.constexpr, WIDTH: tl.constexpr):  # fmt: skip
    row = tl.program_id(0)
    counts = candidate_counts(count_ptr, row, SPLITS, SPLIT_BLOCK)
    x, index, valid, position = load_few_candidates(
        x_ptr, index_ptr, counts, row, SPLITS, CAP, SPLIT_BLOCK, WIDTH
    )
    lanes = row * WIDTH + tl.arange(0, WIDTH)
    tl.store(x_out_ptr + lanes, x)
    tl.store(index_out_ptr + lanes, index)
    tl.store(position_out_ptr + lanes, tl.where(valid, position, -1))


def check_load_few_candidates_packs_the_slots_in_order() -> None:
    # A head read straight from the gather's slots (Best-of-K w = p's small heads): each
    # row's candidates in slot order, then −inf (id 0, no position), with their ids and
    # slot positions; on empty slots, a row with none, a full slot, the last slot alone,
    # exactly WIDTH in all, and a number of slots off a power of two.
    cap, splits, width = 8, 5, 16
    counts = torch.tensor(
        [[0, 0, 0, 0, 0], [3, 0, 2, 0, 1], [8, 8, 0, 0, 0], [0, 0, 0, 0, 8], [4, 4, 4, 4, 0],
         [1, 1, 1, 1, 1]], dtype=torch.int32,
    )  # fmt: skip
    rows = len(counts)
    generator = torch.Generator().manual_seed(12)
    x = torch.randn(rows, splits, cap, generator=generator)
    index = torch.randint(0, 10**6, (rows, splits, cap), generator=generator, dtype=torch.int32)
    x_out = torch.empty(rows, width)
    index_out = torch.empty(rows, width, dtype=torch.int32)
    position_out = torch.empty(rows, width, dtype=torch.int32)
    _few_candidates_kernel[(rows,)](
        x, index, counts, x_out, index_out, position_out, splits, CAP=cap, SPLIT_BLOCK=8,
        WIDTH=width,
    )  # fmt: skip
    for row in range(rows):
        kept = [(s, j) for s in range(splits) for j in range(int(counts[row, s]))]
        pad = width - len(kept)
        expected_x = torch.tensor([float(x[row, s, j]) for s, j in kept] + [-torch.inf] * pad)
        expected_index = [int(index[row, s, j]) for s, j in kept] + [0] * pad
        expected_position = [s * cap + j for s, j in kept] + [-1] * pad
        assert torch.equal(x_out[row], expected_x), (row, x_out[row], expected_x)
        assert index_out[row].tolist() == expected_index, (row, index_out[row])
        assert position_out[row].tolist() == expected_position, (row, position_out[row])


def check_kth_largest_packed_code_equals_the_bisection() -> None:
    # The head's selection over packed candidates by counts instead of a bisection: the
    # same code as the bisection and as torch's k-th largest (with multiplicity), on ties,
    # negatives, a full block, sizes off the chunk, k = 1 and k = n; and the smallest code
    # when fewer than k are packed.
    generator = torch.Generator().manual_seed(11)
    cases = [
        (torch.randn(70, generator=generator) * 3, 64),
        (torch.randn(256, generator=generator), 64),
        (torch.randn(256, generator=generator), 1),
        (torch.randn(33, generator=generator) - 5.0, 33),
        (torch.tensor([2.0] * 40 + [1.0] * 30 + [3.0] * 10), 64),  # the edge among ties
        (torch.tensor([0.5] * 100), 64),
        (torch.tensor([-0.0, 0.0, 1e-38, -1e-38, 7.0]), 3),
    ]
    for x, k in cases:
        out = torch.empty(2, dtype=torch.int64)
        _kth_codes_kernel[(1,)](x, out, len(x), k, BLOCK=256)
        kth = x.topk(k).values[-1:]
        expected = int(_codes_of(kth)[0])
        assert out.tolist() == [expected, expected], (len(x), k, out.tolist(), expected)
    few = torch.tensor([1.0, -2.0, 3.0])
    out = torch.empty(2, dtype=torch.int64)
    _kth_codes_kernel[(1,)](few, out, 3, 5, BLOCK=256)
    assert out[0] == out[1] == int(_codes_of(few.min().reshape(1))[0]), out.tolist()


def _codes_of(x: torch.Tensor) -> torch.Tensor:
    # `streaming.code_of` in torch: the bits of x + 0.0 (−0.0 made +0.0) as int32, a
    # negative's low 31 flipped, so that codes order as the floats do.
    bits = (x.float() + 0.0).view(torch.int32).long()
    return torch.where(bits < 0, -(bits & 0x7FFFFFFF) - 1, bits)


@contextlib.contextmanager
def segments_skipped(skip: bool):
    # The segment-bound gather skips segments below the bound only where the grid fills the
    # GPU and most blocks hold no candidate: forced on (no SMs, any share of live blocks) or
    # off (SMs without end).
    with (
        unittest.mock.patch.object(candidates_module, "sm_count", lambda _: 0 if skip else 10**9),
        unittest.mock.patch.object(candidates_module, "SKIP_LIVE_BLOCKS", 2.0),
    ):
        yield


def check_kth_segment_bound_keeps_the_top_m() -> None:
    # Also: skipping the segments below the bound gathers the same candidates, bit for bit,
    # on plain rows and on crowded ones (ties, −inf, a constant row).
    z = crowded_rows(6000, 1)
    m = 64
    stats = row_stats(z, kernel_rows(1.0, z), segment_size(6000, m), finish=True, bound_k=m)
    segmax = stats.segmax
    with segments_skipped(False):
        got = gather_candidates(z, segments=stats)
    for rows in (z, crowded_rows(6000, 13)):
        rows_stats = row_stats(rows, kernel_rows(1.0, rows), stats.segment, finish=True, bound_k=m)
        gathered = []
        for skip in (False, True):
            with segments_skipped(skip):
                gathered.append(gather_candidates(rows, segments=rows_stats))
        read, skipped = gathered
        assert torch.equal(read.count, skipped.count)
        kept = torch.arange(CAP) < read.count[..., None]
        assert torch.equal(read.x[kept], skipped.x[kept])
        assert torch.equal(read.index[kept], skipped.index[kept])
    # The bound lies in [m-th largest segment max − range·2⁻¹⁶, m-th largest segment max].
    kth = segmax.topk(m, -1).values[:, -1:]
    slack = (segmax.max(-1, keepdim=True).values - segmax.min(-1, keepdim=True).values) / 2**16
    found = got.count.sum(-1)
    assert (found >= (z >= kth).sum(-1)).all(), found
    assert (found <= (z >= kth - slack).sum(-1)).all(), found
    assert (found >= m).all()
    plain = got.count[0].sum()
    assert plain < 4 * m, f"{int(plain)} candidates for the top {m} of untied logits"


def check_bok_topm_and_rank_equal_reference() -> None:
    for weights in ("topm", "rank"):
        for vocab, m in ((6000, 64), (3000, 8), (200, 16)):
            z = crowded_rows(vocab, 2)
            decoder = d.BestOfK(8, 2.0, 0.2, weights=weights, top_m=m)
            c = kernel_rows(1.0 + 1.0 / 0.2, z)
            problem = TopMProblem(
                c,
                kernel_rows(16.0, z),
                kernel_rows(8.0, z),
                m,
                weights == "rank",
                decoder.outer_iterations,
                decoder.inner_iterations,
            )
            q = bok_topm_probs(z, problem)
            ref = decoder.probs(z.double())
            err = float((q.double() - ref).abs().max())
            assert err < 2e-6, f"{weights} V={vocab} M={m}: max error {err}"


def check_bok_topm_sample_draws_from_its_probs() -> None:
    # The fused draw (head or tail by a race of the head's tokens against the tail as one
    # entrant, a tail token by a draw over z's closed form) against the draw over the
    # written tail of q with the same seed: the same q, block sums and uniforms, so on every
    # row whose draw falls in the tail the two give the same token; and the head is drawn
    # about Σ_head q of the time. Rows flat enough to split the mass, with ties at the
    # head's edge and masks.
    vocab, m, draws = 3000, 8, 24
    z = crowded_rows(vocab, 4) * 0.3
    z[0] *= 4  # most of this row's mass is in the head
    decoder = d.BestOfK(8, 0.05, 1.0, weights="topm", top_m=m)
    problem = TopMProblem(
        kernel_rows(2.0, z), kernel_rows(0.4, z), kernel_rows(8.0, z), m, False,
        decoder.outer_iterations, decoder.inner_iterations,
    )  # fmt: skip
    q = bok_topm_probs(z, problem)
    head = torch.sort(z, descending=True, stable=True).indices[:, :m]
    in_head = torch.zeros_like(z, dtype=torch.bool).scatter(1, head, True)
    head_mass = (q * in_head).sum(-1)
    tail_q = torch.where(in_head, 0.0, q)
    head_draws, both_tail = 0, 0
    for seed in range(draws):
        fused = bok_topm_sample(z, problem, torch.Generator().manual_seed(seed))
        drawn_tail = draw_from_probs(tail_q, torch.Generator().manual_seed(seed))
        # The head draw inside the fused call, repeated from the same seed.
        _, draw = _head(z, problem, draw_seed(z.device, torch.Generator().manual_seed(seed)))
        from_head = draw.token >= 0
        fused_in_head = in_head.gather(1, fused[:, None]).squeeze(1)
        assert torch.equal(fused[from_head], draw.token[from_head]), (fused, draw.token)
        assert torch.equal(fused_in_head, from_head), (fused, draw.token)
        assert (q.gather(1, fused[:, None]) > 0).all(), fused
        tail = ~from_head
        assert torch.equal(fused[tail], drawn_tail[tail]), (fused, drawn_tail)
        head_draws += int(from_head.sum())
        both_tail += int(tail.sum())
    expected = float(head_mass.sum()) * draws
    spread = (float((head_mass * (1 - head_mass)).sum()) * draws) ** 0.5
    assert abs(head_draws - expected) <= 4 * spread, (head_draws, expected, head_mass)
    assert torch.allclose(q, decoder.probs(z.double()).float(), atol=2e-6)
    assert both_tail > draws, f"only {both_tail} draws compared in the tail"


def check_bok_prob_weights_equal_reference() -> None:
    # Rows 1 (constant) and 2 (800 tied maxima) overflow their slots: the whole-row solve.
    z = crowded_rows(6000, 5)
    settings = [
        dict(k=8, beta=0.02, lam=0.2),
        dict(k=8, beta=2.0, lam=0.2, temperature=0.7),
        dict(k=3, beta=0.5, lam=1.0, scores="raw"),
        dict(k=1, beta=0.3, lam=0.5),
    ]
    for setting in settings:
        for solver, steps in (("exact", 5), ("mirror", 5), ("mirror", 1)):
            decoder = d.BestOfK(**setting, weights="prob", solver=solver, steps=steps)
            q = table.BOK_PROB.probs(decoder, z)
            ref = decoder.probs(z.double())
            err = float((q.double() - ref).abs().max())
            assert err < 2e-6, f"{setting} {solver} {steps}: max error {err}"


def check_tsallis_equals_reference() -> None:
    for alpha, tau in ((2.0, 1.0), (1.5, 1.0), (1.3, 0.7), (2.0, 40.0), (1.5, 20.0)):
        z = crowded_rows(6000, 3)
        decoder = d.Sparsemax(tau) if alpha == 2.0 else d.Entmax(alpha, tau)
        q = tsallis_probs(z, kernel_rows(1.0 / tau, z), alpha)
        ref = decoder.probs(z.double())
        err = float((q.double() - ref).abs().max())
        assert err < 2e-6, f"alpha={alpha} tau={tau}: max error {err}"
        assert torch.equal(q > 0, ref > 0), f"alpha={alpha} tau={tau}: support differs"


def check_top_p_equals_reference() -> None:
    z = crowded_rows(6000, 4)
    for p, tau in ((0.9, 1.0), (0.5, 0.7), (1.0, 1.0)):
        decoder = d.TopP(p, tau)
        q = top_p_probs(z, kernel_rows(1.0 / tau, z), kernel_rows(p, z))
        ref = decoder.probs(z.double())
        err = float((q.double() - ref).abs().max())
        assert err < 2e-6, f"p={p} tau={tau}: max error {err}"
        # At p = 1 the last tokens (q ~ 1e-9) are in or out by float32 rounding of the mass.
        if p < 1.0:
            assert torch.equal(q > 0, ref > 0), f"p={p} tau={tau}: support differs"


def check_profile_pass_layouts_find_the_same_edge() -> None:
    # The edge's profile pass loads its block in its sums' layout only where the passes
    # take more programs than the GPU has SMs (`LOAD_2D`), where each threshold's mass is
    # a fused multiply-add by a 0/1 factor; each lane's sums are the other layout's masked
    # adds, bit for bit, so both find the same edge and q. Forced each way here (the
    # interpreter counts 132 SMs), for top-p's key and typical's, with one block size and one
    # gather, the atomic one (the SM count picks them too; sums over other blocks round
    # differently, and the atomic gather's are fixed point, the same in any order:
    # `check_atomic_and_scan_gathers_find_the_same_edge`): ATOMIC_GATHER_PER_SM = −1 puts
    # both runs on it, where 10⁹ had left the run with 0 SMs on it and the other on the scan.
    z = crowded_rows(6000, 4)
    cases = ((0.9, 1.0), (0.5, 0.7), (0.99, 1.3))
    results = {}
    one_block = unittest.mock.patch.object(top_p, "WIDE_GRID_BLOCK", top_p.EDGE_PASSES.block)
    one_gather = unittest.mock.patch.object(top_p, "ATOMIC_GATHER_PER_SM", -1)
    for sms in (0, 10**9):  # LOAD_2D on, then off
        with (
            one_block,
            one_gather,
            unittest.mock.patch.object(top_p, "sm_count", lambda _, sms=sms: sms),
        ):
            results[sms] = [
                probs(z, kernel_rows(1.0 / tau, z), kernel_rows(p, z))
                for probs in (top_p_probs, typical_probs)
                for p, tau in cases
            ]
    for loaded_2d, loaded_1d, (p, tau) in zip(*results.values(), cases * 2, strict=True):
        assert torch.equal(loaded_2d, loaded_1d), (p, tau, (loaded_2d - loaded_1d).abs().max())


def check_atomic_and_scan_gathers_find_the_same_edge() -> None:
    # Where more than ATOMIC_GATHER_PER_SM programs share an SM the top-p gather places its
    # tokens by atomic counts and the solve sums them in fixed point; elsewhere by a scan in
    # index order, summed in float32. Forced each way: the same support and q within float32
    # rounding of each other, both within 2e-6 of float64 for top-p, and typical's support
    # the reference's up to its edge, on crowded rows and on rows whose bracket settles after
    # one pass with many tokens in it (randn·3). The wide grid's gather launch (another
    # block, pipelined) places the same tokens, and the fixed point sums them in any order
    # to the same q.
    z = torch.cat(
        [
            crowded_rows(6000, 4),
            torch.randn(2, 6000, generator=torch.Generator().manual_seed(8)) * 3,
        ]
    )
    found = {}
    for per_sm in (-1, 10**9):  # atomic, then the scan
        with unittest.mock.patch.object(top_p, "ATOMIC_GATHER_PER_SM", per_sm):
            found[per_sm] = [
                probs(z, kernel_rows(1.0 / 0.8, z), kernel_rows(0.9, z))
                for probs in (top_p_probs, typical_probs)
            ]
    wide_gather = unittest.mock.patch.object(top_p, "GATHER", top_p.WIDE_GATHER)
    with wide_gather, unittest.mock.patch.object(top_p, "ATOMIC_GATHER_PER_SM", -1):
        wide = [
            probs(z, kernel_rows(1.0 / 0.8, z), kernel_rows(0.9, z))
            for probs in (top_p_probs, typical_probs)
        ]
    for atomic, wide_atomic in zip(found[-1], wide, strict=True):
        assert torch.equal(atomic, wide_atomic), (atomic - wide_atomic).abs().max()
    for atomic, scan in zip(*found.values(), strict=True):
        assert torch.equal(atomic > 0, scan > 0)
        assert float((atomic - scan).abs().max()) < 1e-7, (atomic - scan).abs().max()
    reference = d.TopP(0.9, 0.8).probs(z.double())
    for q in (found[-1][0], found[10**9][0]):
        assert float((q.double() - reference).abs().max()) < 2e-6
    for q in (found[-1][1], found[10**9][1]):
        assert_same_support_up_to_the_typical_edge(
            z, 0.8, 0.9, q, d.Typical(0.9, 0.8).probs(z.double())
        )


def check_edge_passes_stop_once_the_bracket_fits_the_slots() -> None:
    # A level profiles a row only where the bracket left by the level before may hold more
    # of a split's tokens than the gather's slot. A row whose top token holds the mass
    # settles after the first pass and a flat row takes more; no row's gather overflows
    # (it would read the whole row), and q matches float64, for top-p and typical.
    z = torch.randn(3, 6000, generator=torch.Generator().manual_seed(5))
    z[0] *= 3.0
    z[1] *= 0.05
    z[2] *= 0.3
    z[2, 42] = 20.0
    seen = {}
    gather = top_p._top_p_gather_kernel

    class Watched:  # the gather's launch, and its rows' last levels and slot counts after it
        def __getitem__(self, grid):
            def launch(*args, **kwargs):
                gather[grid](*args, **kwargs)
                seen["last"], seen["counts"] = args[10].clone(), args[13].clone()

            return launch

    with unittest.mock.patch.object(top_p, "_top_p_gather_kernel", Watched()):
        q = top_p_probs(z, kernel_rows(1.0, z), kernel_rows(0.9, z))
        reference = d.TopP(0.9).probs(z.double())
        assert float((q.double() - reference).abs().max()) < 2e-6
        assert torch.equal(q > 0, reference > 0), ((q > 0).sum(-1), (reference > 0).sum(-1))
        assert seen["last"][2] == 0 and seen["last"][1] > seen["last"][0], seen["last"]
        assert (seen["counts"] <= CAP).all(), seen["counts"]
        q = typical_probs(z, kernel_rows(1.0, z), kernel_rows(0.9, z))
        for reference in (d.Typical(0.9).probs(z), d.Typical(0.9).probs(z.double())):
            assert_same_support_up_to_the_typical_edge(z, 1.0, 0.9, q, reference)
        assert (seen["counts"] <= CAP).all(), seen["counts"]


def check_top_p_and_typical_keep_a_token_at_a_vanishing_mass() -> None:
    # p (typical's mass) so small that p·Σ is 0 in float32, or nearly: every code reaches
    # the target, and the edge is the largest key's code. The search must never take a code
    # above every key (the set would be empty), among the gathered codes or over the whole
    # row (the constant row's slots overflow). Top-p keeps the top token and its ties, as
    # float64 does; typical the tokens nearest E_p[x], up to its edge; q sums to 1.
    z = crowded_rows(6000, 16)
    for p in (5e-324, 1e-45, 1e-30):
        rows = (kernel_rows(1.0, z), kernel_rows(p, z))
        for probs, reference in ((top_p_probs, d.TopP(p)), (typical_probs, d.Typical(p))):
            q = probs(z, *rows)
            total = q.double().sum(-1)
            assert torch.allclose(total, torch.ones_like(total), atol=1e-5), (p, probs, total)
            expected = reference.probs(z.double())
            if probs is top_p_probs:
                assert torch.equal(q > 0, expected > 0), (p, (q > 0).sum(-1))
            else:
                assert_same_support_up_to_the_typical_edge(z, 1.0, p, q, expected)


def check_top_p_edge_at_the_top_and_among_ties() -> None:
    # The gather takes the last bracket's tokens lo ≤ key < upper and the profile's own mass
    # at or above `upper`. Rows where the largest key alone holds the mass (every pass then
    # narrows to [max, max]: the gather takes key ≥ max, nothing above it), tied maxima that
    # together hold it, and an edge among 100 tied tokens (all kept): q against float64, for
    # top-p and for typical on the same rows, and the sample inside the set.
    vocab = 6000
    tiny = torch.randn(5, vocab, generator=torch.Generator().manual_seed(3)) * 0.3
    masses = torch.full((5, vocab), 0.05 / vocab)
    masses[0, 17] = 0.95
    masses[1, [40, 4000]] = 0.46
    masses[2, [5, 2500, 5990]] = 0.3
    masses[2, 1000:1100] = 0.05 / 100
    masses[3, 3000] = 0.9999
    masses[4, [1, 2]] = 0.45
    z = (masses.log() + torch.where(masses < 1e-4, tiny, 0.0)).float()
    z[3, ::4] = -torch.inf
    p = torch.tensor([0.9, 0.5, 0.92, 0.999, 0.95])
    tau = torch.tensor([1.0, 1.0, 1.0, 1.0, 0.7])
    q = top_p_probs(z, kernel_rows(1.0 / tau[:, None], z), kernel_rows(p[:, None], z))
    reference = d.TopP(p, tau).probs(z.double())
    assert float((q.double() - reference).abs().max()) < 2e-6
    assert torch.equal(q > 0, reference > 0), (q > 0).sum(-1)
    assert (q[2, 1000:1100] > 0).all() and (q[2, 1100:2500] == 0).all()
    drawn = table.TOP_P.sample(d.TopP(p, tau), z, torch.Generator().manual_seed(2))
    assert (q.gather(1, drawn[:, None]) > 0).all(), drawn
    typical = d.Typical(p, tau)
    q_typical = table.TYPICAL.probs(typical, z)
    for reference in (typical.probs(z), typical.probs(z.double())):
        assert_same_support_up_to_the_typical_edge(z, tau, p, q_typical, reference)


def check_top_p_edge_sample_equals_the_draw_over_its_probs() -> None:
    # The rows the rejection sampler leaves (token −1) find the edge and draw from q's
    # closed form in the solve: the row's first uniform picks a split, then a block, the
    # second the token, over the same terms as the draw over the written q (up to one
    # rounding of the normaliser), so the same seed gives the same tokens; rows drawn
    # already keep their token. Then typical, every row, against its written q.
    z = crowded_rows(6000, 6) * 0.2
    for p, tau in ((0.9, 1.0), (0.5, 0.7), (1.0, 1.3)):
        rows = kernel_rows(1.0 / tau, z), kernel_rows(p, z)
        q = top_p_probs(z, *rows)
        for seed in range(3):
            tokens = torch.tensor([-1, 7, -1, -1, 11])
            source = draw_seed(z.device, torch.Generator().manual_seed(seed))
            sample_at_the_edge(z, *rows, row_stats(z, rows[0]), source, tokens, True)
            written_draw = draw_from_probs(q, torch.Generator().manual_seed(seed))
            assert tokens[1] == 7 and tokens[4] == 11, tokens
            pending = torch.tensor([0, 2, 3])
            assert torch.equal(tokens[pending], written_draw[pending]), (p, tau, seed, tokens)
    inv_tau, masses = kernel_rows(1.0, z), kernel_rows(0.9, z)
    stats, centre = _typical_centre(z, inv_tau)
    q = typical_probs(z, inv_tau, masses)
    for seed in range(3):
        tokens = torch.empty(len(z), dtype=torch.int64)
        source = draw_seed(z.device, torch.Generator().manual_seed(seed))
        sample_at_the_edge(z, inv_tau, masses, stats, source, tokens, False, centre,
                           TYPICAL.value)  # fmt: skip
        written_draw = draw_from_probs(q, torch.Generator().manual_seed(seed))
        assert torch.equal(tokens, written_draw), (seed, tokens, written_draw)
    # Codes, on the same rows (the constant row's slots overflow, so its draw runs over the
    # whole row, as every row's does at p = 1), against the coordinated draw over the
    # written q: tokens bar a code within rounding of an edge, next codes close. Also with
    # the row cut into 2 splits of 2 blocks each, so that the pass over a split sums more
    # than one block.
    codes = group_codes(1, len(z), seed=3)
    for splits in (top_p.gather_splits(z.shape[-1]), 2):
        with unittest.mock.patch.object(top_p, "gather_splits", lambda vocab, n=splits: n):
            for name, p in (("top-p", 0.9), ("top-p", 1.0), ("typical", 0.9)):
                rows = kernel_rows(1.0, z), kernel_rows(p, z)
                source = CodedDraw.of(codes, z.device)
                tokens = torch.empty(len(z), dtype=torch.int64)
                if name == "top-p":
                    q = top_p_probs(z, *rows)
                    sample_at_the_edge(z, *rows, row_stats(z, rows[0]), source, tokens)
                else:
                    q = typical_probs(z, *rows)
                    sample_at_the_edge(z, *rows, stats, source, tokens, False, centre,
                                       TYPICAL.value)  # fmt: skip
                expected, expected_new = draw_coordinated(q, codes)
                new = source.next_codes(codes.value.shape)
                assert_coded_draws_agree((name, p, splits), q, q, tokens, new, expected,
                                         expected_new, codes)  # fmt: skip


def check_accept_pass_keeps_the_first_proposal_inside_the_set() -> None:
    # The accept pass against float64 on hard rows (constant, tied blocks, ties everywhere,
    # masked tokens), p from 0.5 to 1 (0.99999: the edge among tiny masses), per row, and
    # at τ = 10⁻³ (|z|/τ in the thousands); and on rows of
    # four live tokens far apart, masses 0.3, 0.3, 0.2, 0.2, with p just below the 0.6 that
    # the two tied 0.2s have above them: they are outside, by 0.003 and by 10⁻⁴ of the mass.
    near = torch.full((5, 6000), -torch.inf)
    near[:, [10, 2000, 4000, 5999]] = torch.tensor([0.3, 0.2, 0.3, 0.2]).log()
    per_row = torch.tensor([[0.3], [0.9], [1.0], [0.5], [0.99]])
    cases = [(crowded_rows(6000, 9) * 0.5, p, tau)
             for p, tau in ((0.9, 1.0), (0.5, 0.7), (0.99999, 1.0), (1.0, 1.3), (per_row, 0.8),
                            (0.9, 1e-3))]  # fmt: skip
    for z, p, tau in [*cases, (near, 0.597, 1.0), (near, 0.5999, 1.0)]:
        rows = kernel_rows(1.0 / tau, z), kernel_rows(p, z)
        for seed in range(2):
            source = draw_seed(z.device, torch.Generator().manual_seed(seed))
            arrivals = torch.zeros(2, len(z), dtype=torch.int32)
            kept, _, proposals, _ = _propose_and_accept(z, *rows, source, arrivals)
            assert_first_proposal_inside_the_top_p_cut_kept(z, tau, p, proposals, kept)
    # Typical's set on the same hard rows: the key −|x − E_p[x]| in place of x.
    z = crowded_rows(6000, 9) * 0.5
    for mass, tau in ((0.9, 1.0), (0.5, 0.7), (1.0, 1.3)):
        inv_tau, masses = kernel_rows(1.0 / tau, z), kernel_rows(mass, z)
        _, centre = _typical_centre(z, inv_tau)
        for seed in range(2):
            source = draw_seed(z.device, torch.Generator().manual_seed(seed))
            arrivals = torch.zeros(2, len(z), dtype=torch.int32)
            kept, _, proposals, _ = _propose_and_accept(
                z, inv_tau, masses, source, arrivals, centre, TYPICAL.value
            )  # fmt: skip
            assert_first_proposal_inside_the_typical_set_kept(z, tau, mass, proposals, kept)


def check_top_p_sample_follows_probs() -> None:
    # The rejection sampler over two rows: one whose nucleus holds most of the mass (nearly
    # every row keeps its first proposal) and one whose nucleus holds ~6% (~3/4 of rows
    # find none of their 4 proposals inside and take the edge's draw), with ties at that
    # edge; with Philox's uniforms and with codes by rejection (picks chained from each
    # code).
    scipy_stats = __import__("scipy.stats").stats
    mostly_in = torch.tensor([[2.0, 1.0, 0.5, -1.0, -torch.inf, 0.0, 3.0, -4.0]])
    mostly_out = -0.01 * torch.arange(64.0)[None, :]
    mostly_out[0, 2:4] = -0.01
    draws = 240  # each row is a few interpreted programs per kernel: ~0.1 s a row
    for z, p, tau in ((mostly_in, 0.7, 1.3), (mostly_out, 0.05, 1.0)):
        q = d.TopP(p, tau).probs(z.double())[0]
        rows = z.expand(draws, -1).contiguous()
        args = kernel_rows(1.0 / tau, rows), kernel_rows(p, rows)
        coded = CodedDraw.of(group_codes(draws // 8, 8, seed=13), rows.device, True)
        for randomness in (torch.Generator().manual_seed(13), coded):
            tokens = top_p_sample(rows, *args, randomness)
            counts = torch.bincount(tokens, minlength=z.shape[-1]).double()
            assert (counts[q == 0] == 0).all(), (p, counts, q)
            live = q > 0
            expected = (q[live] * draws).numpy()
            p_value = scipy_stats.chisquare(counts[live].numpy(), expected).pvalue
            assert p_value > 1e-3, (p, randomness, counts[live], expected, p_value)
        # The codes left for the next step, by the first pick kept or the draw at the edge.
        assert scipy_stats.kstest(coded.next_value.numpy(), "uniform").pvalue > 1e-3, p


def check_softmax_equals_reference_and_samples_as_the_draw_over_its_probs() -> None:
    # q from the row's max and split sums. The sample draws from exp((z − block max)/τ) with
    # the same uniforms as the draw over exp((z − max z)/τ) written out: the same tokens,
    # bar a uniform that falls within rounding of a block's or a token's edge.
    z = crowded_rows(6000, 8) * 0.3
    for tau in (1.0, 0.7, 1e-8):  # 1e-8, the smallest τ: |z|/τ up to ~1e9
        inv_tau = kernel_rows(1.0 / tau, z)
        q = softmax_probs(z, inv_tau)
        ref = d.Softmax(tau).probs(z.double())
        err = float((q.double() - ref).abs().max())
        assert err < 2e-6, f"tau={tau}: max error {err}"
        z_max = z.amax(-1)
        written = exp_affine(z, inv_tau, z_max, torch.zeros_like(z_max))
        for seed in range(4):
            drawn = softmax_sample(z, inv_tau, torch.Generator().manual_seed(seed))
            written_draw = draw_from_probs(written, torch.Generator().manual_seed(seed))
            assert torch.equal(drawn, written_draw), (tau, seed, drawn, written_draw)
            assert (ref.gather(1, drawn[:, None]) > 0).all(), (tau, seed, drawn)


def check_softmax_sample_follows_probs() -> None:
    scipy_stats = __import__("scipy.stats").stats
    z = torch.tensor([[2.0, 1.0, 0.5, -1.0, -torch.inf, 0.0, 3.0, -4.0]])
    q = d.Softmax(1.3).probs(z.double())[0]
    draws = 800  # each row is one interpreted program: a few ms each
    tokens = softmax_sample(z.expand(draws, -1), kernel_rows(1 / 1.3, z.expand(draws, -1)),
                            torch.Generator().manual_seed(11))  # fmt: skip
    counts = torch.bincount(tokens, minlength=8).double()
    assert counts[4] == 0, counts
    live = q > 0
    p_value = scipy_stats.chisquare(counts[live].numpy(), (q[live] * draws).numpy()).pvalue
    assert p_value > 1e-3, (counts, q * draws, p_value)


@contextlib.contextmanager
def kernels_on_the_cpu():
    """The decoders' CUDA check patched to say yes, so that their kernel routes run here."""
    from decoptim.core import decoders

    saved = table.use_kernels, decoders.use_kernels
    table.use_kernels = decoders.use_kernels = lambda x: True
    try:
        yield
    finally:
        table.use_kernels, decoders.use_kernels = saved


def route_of(decoder: d.Decoder) -> table.Route:
    """The decoder's first kernel route in the table (run here without a GPU)."""
    return table.KERNELS[decoder.kernel_key()][0]


def _near_the_cut(vocab: int, log_p: float, tau: float) -> torch.Tensor:
    # One row whose tempered scores x = (z − max z)/τ crowd the floor log p: z = max z + τ·x
    # for x on the 64 float32 neighbours either side of log p, so that the torch path's
    # rounding of (z − max z)/τ puts some at, some just above and some just below the cut.
    cut = torch.tensor(log_p, dtype=torch.float32)
    steps = torch.arange(-64, 65, dtype=torch.float32)
    x = cut + steps * (torch.nextafter(cut, torch.tensor(0.0)) - cut)
    row = torch.full((vocab,), -30.0)
    row[0] = 2.0
    row[1 : 1 + len(x)] = 2.0 + tau * x
    return row


def check_row_stats_finish_equals_float64() -> None:
    # The per-row values that row_stats' last program per row combines from the split sums
    # (max z, log Σ exp(c·(z − max z)), and eta's entropy from the sums of exp(y) and
    # exp(y)·y, rescaled to the row's max): rows with ties, −inf, an empty split, the max in
    # the last split, one live token and huge |z|/τ, against float64. The arrival counters
    # are left at zero, for the next kernel that counts on them.
    z = crowded_rows(6000, 13)
    z[0, :2048] = -torch.inf  # the first split empty
    z[1, 5999] = 40.0  # the max in the last split, after the other splits' sums
    z[3] = -torch.inf
    z[3, 3000] = 1.0  # one live token: H = 0
    for c in (torch.full((5,), 1.0), torch.tensor([0.3, 2.0, 50.0, 1.0, 1e3])):
        arrivals = torch.zeros(5, dtype=torch.int32)
        stats = row_stats(z, c, moment=True, finish=True, arrivals=arrivals)
        assert stats.splits > 1, "one split: the combine is not exercised"
        assert not arrivals.any(), arrivals
        x = z.double() * c.double()[:, None]
        log_q = torch.log_softmax(x, -1)
        expected = -torch.special.xlogy(log_q.exp(), log_q.exp()).sum(-1)
        assert torch.equal(stats.z_max, z.amax(-1))
        log_sum = torch.logsumexp(x - c.double()[:, None] * z.amax(-1).double()[:, None], -1)
        assert torch.allclose(stats.log_sum.double(), log_sum, rtol=1e-6, atol=1e-6), c
        got = stats.entropy.double()
        assert torch.allclose(got, expected, rtol=1e-5, atol=1e-5), (c, got, expected)
    # Values the kernel was not asked for are refused, not read from uninitialised memory.
    plain = row_stats(z, c, finish=True)
    for name, missing in (("entropy", "moment=True"), ("bound", "bound_k=k")):
        try:
            getattr(plain, name)
        except ValueError as error:
            assert missing in str(error), error
        else:
            raise AssertionError(f"{name} was read without {missing}")
    try:
        gather_candidates(z, segments=row_stats(z, c, 64, finish=True))
    except ValueError as error:
        assert "bound_k=k" in str(error), error
    else:
        raise AssertionError("a gather without a segment bound was launched")


def check_kth_largest_equals_topk() -> None:
    # The k-th largest logit from the gathered candidates, against torch.topk with NaN read
    # as −inf: the crowded rows (a tied block larger than a slot overflows to the whole-row
    # bisection, −inf, a constant row), per-row k, k at 1 and at k_max, fewer than k finite
    # logits, and ±0.0 ties.
    z = crowded_rows(6000, 13)
    z[0, ::11] = torch.nan
    z[1, :3000], z[1, 3000:] = 0.0, -0.0  # a constant row of ±0
    few = torch.full((2, 6000), -torch.inf)  # masks: 3 tokens allowed; 100 adjacent ones
    few[0, [5, 900, 4000]] = torch.tensor([1.0, -2.0, 0.5])
    few[1, 3000:3100] = torch.randn(100, generator=torch.Generator().manual_seed(2))
    for rows, k_max, k in (
        (z, 1, torch.ones(5, dtype=torch.int64)),
        (z, 64, torch.full((5,), 64)),
        (z, 1024, torch.tensor([1024, 3, 700, 1, 999])),
        (few, 64, torch.tensor([5, 50])),
    ):
        segment = segment_size(6000, k_max)
        stats = row_stats(rows, kernel_rows(1.0, rows), segment, finish=True, bound_k=k_max)
        masked = torch.where(torch.isnan(rows), -torch.inf, rows)
        want = masked.topk(k_max, -1).values.gather(-1, (k - 1)[:, None])[:, 0]
        for skip in (False, True):  # reading every segment, then skipping those below
            with segments_skipped(skip):
                candidates = top_candidates(rows, stats)
            got = kth_largest(rows, k, candidates)
            assert torch.equal(got, want + 0.0), (k_max, skip, got, want)
    try:  # a stride-0 k would be read past its one element
        kth_largest(z, torch.tensor([64]).expand(5), candidates)
    except ValueError as error:
        assert "contiguous" in str(error)
    else:
        raise AssertionError("an expanded k was accepted")


def check_floor_routes_keep_the_torch_support_and_equal_reference() -> None:
    # Min-p and top-k keep exactly the float32 torch path's tokens (x is computed to the bit
    # as torch computes it), at the cut included; epsilon's and eta's floors carry log Σ exp(x)
    # (and eta's entropy) from split sums, so on rows without a token at the cut they keep
    # the same tokens too.
    z = crowded_rows(6000, 9) * 0.5
    for decoder in (
        d.MinP(0.1, 0.7), d.MinP(0.5, 1.0), d.MinP(1.0, 1.3), d.Epsilon(3e-4, 0.7),
        d.Epsilon(0.9, 1.0), d.Eta(3e-4, 0.7), d.Eta(0.02, 1.3), d.Eta(0.5, 1.0),
        d.Eta(torch.tensor([1e-4, 0.1, 3e-3, 0.9, 0.02]), 0.9),
        d.TopK(50, 0.7), d.TopK(1), d.TopK(7000, 1.3),
        d.TopK(torch.tensor([1, 40, 900, 3, 6000]), 0.8),
        d.TopK(torch.tensor([1, 40, 900, 3, 1024]), 0.8),
    ):  # fmt: skip
        q = route_of(decoder).probs(decoder, z)
        ref32, ref = decoder.probs(z), decoder.probs(z.double())
        err = float((q.double() - ref).abs().max())
        assert err < 2e-6, f"{decoder!r}: max error {err}"
        assert torch.equal(q > 0, ref32 > 0), f"{decoder!r}: support differs from torch's"
    # At these (p, τ) a multiply by 1/τ instead of the division keeps 1–2 tokens more or
    # fewer on this row than torch does.
    for p, tau in ((0.1, 0.45), (0.1, 1.3), (0.3, 1.1), (0.3, 2.3)):
        row = _near_the_cut(3000, float(torch.log(torch.tensor(p))), tau)[None]
        q = route_of(d.MinP(p, tau)).probs(d.MinP(p, tau), row)
        kept = d.MinP(p, tau).probs(row) > 0
        assert 0 < int(kept[0, 1:130].sum()) < 129, "the row does not straddle the cut"
        assert torch.equal(q > 0, kept), (p, tau, (q > 0).nonzero(), kept.nonzero())
    # Top-k on 200 logits one float32 step apart: rounding (z − max z)/τ merges neighbours,
    # so torch keeps every token whose x ties the k-th x, more than the k largest z.
    row = torch.full((1, 3000), -40.0)
    row[0, 0] = 2.0
    start = torch.tensor(-7.3)
    row[0, 1:201] = start + torch.arange(200) * (torch.nextafter(start, start + 1) - start)
    for k, tau in ((103, 0.7), (62, 1.3), (151, 0.45)):
        decoder = d.TopK(k, tau)
        q = route_of(decoder).probs(decoder, row)
        kept = decoder.probs(row) > 0
        assert int(kept.sum()) > k, "no tie after rounding at the k-th: the row tests nothing"
        assert torch.equal(q > 0, kept), (k, tau, int((q > 0).sum()), int(kept.sum()))


def check_top_k_intersections_keep_the_torch_support() -> None:
    # Top-k ∩ top-p (∩ min-p): top-p's cut found among the top k, whether top-k or top-p
    # binds, with ties at either edge, per-row parameters, p = 1, tiny p, p near 1, τ far
    # from 1, a large common offset, a row with fewer than k finite logits, and V ≤ 256
    # (masked lanes among the candidates). Two branches, chosen by V against 16·k_max: the
    # gathered candidates (top-p's masses as its own kernels sum them: the same tokens as
    # the torch path but at the cut, within float32 rounding) and torch.topk (masses summed
    # in float64 from the torch path's weights: exactly the float32 torch path's tokens).
    small = crowded_rows(3000, 12) * 0.6
    small[0, 40:60] = small[0].max() - 0.5  # a tied group near both edges
    large = crowded_rows(16000, 14) * 0.6
    large[0, 40:60] = large[0].max() - 0.5
    few = large.clone()
    few[1] = -torch.inf
    few[1, torch.arange(10) * 1000] = torch.linspace(-1.0, 1.0, 10)  # 10 finite, k = 50
    tiny = random_logits(3, 200, 16)
    tiny[1, ::2] = -torch.inf
    shannon = d.Shannon()
    per_row_k, per_row_p = (
        torch.tensor([3, 900, 45, 2, 1000]),
        torch.tensor([0.5, 0.95, 0.2, 1.0, 0.7]),
    )
    for z, support, tau in (
        (small, d.TopKSupport(50) & d.TopPSupport(0.9), 0.8),  # candidates
        (small, d.TopKSupport(5) & d.TopPSupport(0.99), 1.0),
        (small, d.TopKSupport(60) & d.TopPSupport(1.0), 0.7),
        (small, d.TopPSupport(0.3) & d.TopKSupport(400), 1.3),  # torch.topk: V < 16·400
        (small, d.TopKSupport(200) & d.MinPSupport(0.05), 1.1),
        (small, d.TopKSupport(200) & d.TopPSupport(0.8) & d.MinPSupport(0.3), 0.6),
        (large, d.TopPSupport(0.3) & d.TopKSupport(400), 1.3),  # candidates from here on
        (large, d.TopKSupport(per_row_k) & d.TopPSupport(per_row_p), 0.9),
        (large, d.TopKSupport(200) & d.TopPSupport(0.8) & d.MinPSupport(0.3), 0.6),
        (large, d.TopKSupport(100) & d.TopPSupport(1e-30), 0.01),
        (large + 3e7, d.TopKSupport(100) & d.TopPSupport(0.99999), 1e3),
        (few, d.TopKSupport(50) & d.TopPSupport(0.5), 1.0),
        (tiny, d.TopKSupport(8) & d.TopPSupport(0.6), 0.9),
    ):  # fmt: skip
        decoder = d.SimplexDecoder(shannon, support, tau)
        q = table.TOP_K_INTERSECTION.probs(decoder, z)
        ref32, ref = decoder.probs(z), decoder.probs(z.double())
        top_p = [part.p for part in support.parts if isinstance(part, d.TopPSupport)]
        k_max = next(part.k_max for part in support.parts if isinstance(part, d.TopKSupport))
        if top_p and z.shape[-1] < 16 * k_max:  # the torch.topk branch
            assert torch.equal(q > 0, ref32 > 0), (support, (q > 0).sum(-1), (ref32 > 0).sum(-1))
        elif top_p:
            assert_same_support_up_to_the_top_p_cut(z, tau, top_p[0], q, ref)
            assert_same_support_up_to_the_top_p_cut(z, tau, top_p[0], q, ref32)
        else:
            err = float((q.double() - ref).abs().max())
            assert err < 2e-6, f"{support!r}: max error {err}"
            assert torch.equal(q > 0, ref32 > 0), (support, (q > 0).sum(-1), (ref32 > 0).sum(-1))
        drawn = table.TOP_K_INTERSECTION.sample(decoder, z, torch.Generator().manual_seed(3))
        assert (q.gather(1, drawn[:, None]) > 0).all(), (support, drawn)
    for z in (small, large):
        z[:, ::5] = torch.nan
        masked = torch.where(torch.isnan(z), -torch.inf, z)
        support = d.TopKSupport(50) & d.TopPSupport(0.9)
        unvalidated = d.SimplexDecoder(shannon, support, 0.8, validate=False)
        q = table.TOP_K_INTERSECTION.probs(unvalidated, z)
        expected = d.SimplexDecoder(shannon, support, 0.8).probs(masked)
        assert_same_support_up_to_the_top_p_cut(masked, 0.8, 0.9, q, expected)


def check_typical_keeps_the_torch_support() -> None:
    # Typical on top-p's kernels (key −|x − E_p[x]|): the torch path's tokens but at the
    # set's edges, within float32 rounding, on hard rows (a constant row, a tied block larger
    # than a slot: the whole-row fallback, ties everywhere, masked tokens), per-row mass and
    # τ, mass = 1, large |z|/τ, and unvalidated NaN read as −inf; draws inside the set.
    z = crowded_rows(6000, 15)
    for mass, tau, scale in (
        (0.9, 1.0, 1.0),
        (0.5, 0.7, 1.0),
        (0.99, 1.3, 1.0),
        (1.0, 1.0, 1.0),
        (0.2, 0.05, 10.0),
        (torch.tensor([0.3, 0.9, 0.6, 0.95, 0.5]), torch.tensor([0.5, 1.0, 2.0, 0.8, 1.2]), 1.0),
    ):
        decoder = d.Typical(mass, tau)
        logits = z * scale
        q = table.TYPICAL.probs(decoder, logits)
        for reference in (decoder.probs(logits), decoder.probs(logits.double())):
            assert_same_support_up_to_the_typical_edge(logits, tau, mass, q, reference)
        drawn = table.TYPICAL.sample(decoder, logits, torch.Generator().manual_seed(4))
        assert (q.gather(1, drawn[:, None]) > 0).all(), (mass, tau, drawn)
    z[:, ::5] = torch.nan
    masked = torch.where(torch.isnan(z), -torch.inf, z)
    unvalidated = d.Typical(0.9, 0.8, validate=False)
    q = table.TYPICAL.probs(unvalidated, z)
    assert not torch.isnan(q).any()
    expected = d.Typical(0.9, 0.8).probs(masked)
    assert_same_support_up_to_the_typical_edge(masked, 0.8, 0.9, q, expected)


def check_top_k_floor_reads_nan_as_minus_inf() -> None:
    # Unvalidated NaN logits drop out as −inf: torch.topk would rank a NaN first.
    z = crowded_rows(3000, 11)
    z[:, ::7] = torch.nan
    masked = torch.where(torch.isnan(z), -torch.inf, z)
    decoder = d.TopK(30, 0.8, validate=False)
    q = route_of(decoder).probs(decoder, z)
    assert not torch.isnan(q).any()
    assert torch.equal(q > 0, d.TopK(30, 0.8).probs(masked) > 0)
    drawn = route_of(decoder).sample(decoder, z, torch.Generator().manual_seed(1))
    assert (q.gather(1, drawn[:, None]) > 0).all(), drawn


def check_closed_form_samples_equal_the_draw_over_their_probs() -> None:
    # The floor routes (exp(x) on the floor) draw from their closed form with the same
    # uniforms as the draw over q written out: the same tokens, bar q's normalisation (one
    # rounding more per q_v than the closed form), which may move a uniform across an edge,
    # so count. (Sparsemax and entmax pick among their candidates with one uniform: see
    # check_closed_form_samples_follow_probs and the coordinated checks.)
    z = crowded_rows(6000, 10) * 0.3
    for decoder in (
        d.MinP(0.1, 1.0), d.MinP(0.02, 0.6), d.Epsilon(1e-3, 1.3), d.Eta(1e-3, 1.1),
        d.TopK(40, 0.9),
    ):  # fmt: skip
        q = route_of(decoder).probs(decoder, z)
        for seed in range(4):
            drawn = route_of(decoder).sample(decoder, z, torch.Generator().manual_seed(seed))
            written_draw = draw_from_probs(q, torch.Generator().manual_seed(seed))
            assert (q.gather(1, drawn[:, None]) > 0).all(), (decoder, seed, drawn)
            same = int((drawn == written_draw).sum())
            assert same >= len(z) - 1, (decoder, seed, drawn, written_draw)


def check_closed_form_samples_follow_probs() -> None:
    scipy_stats = __import__("scipy.stats").stats
    z = torch.tensor([[2.0, 1.0, 0.5, -1.0, -torch.inf, 0.0, 3.0, -4.0]])
    draws = 800  # each row is one interpreted program: a few ms each
    # Sparsemax's pick among its candidates; entmax's is the same code (its coded draws
    # are checked against the torch path below, its distribution on the GPU).
    for decoder in (d.MinP(0.1, 1.3), d.TopK(4, 0.8), d.Sparsemax(3.0)):
        q = decoder.probs(z.double())[0]
        generator = torch.Generator().manual_seed(12)
        tokens = route_of(decoder).sample(decoder, z.expand(draws, -1), generator)
        counts = torch.bincount(tokens, minlength=8).double()
        assert (counts[q == 0] == 0).all(), (decoder, counts, q)
        live = q > 0
        p_value = scipy_stats.chisquare(counts[live].numpy(), (q[live] * draws).numpy()).pvalue
        assert p_value > 1e-3, (decoder, counts, q * draws, p_value)


def check_tsallis_sample_over_an_overflowing_row() -> None:
    # More tied candidates than a gather slot holds (CAP), so the solve draws over the row's
    # blocks: one token in the first block, two and the ties in the second, so that the
    # block is picked first. Coded draws pick the torch path's tokens; Philox draws follow
    # q (the tied tokens counted as one category; few draws: each row is an interpreted
    # program that bisects over the whole row).
    scipy_stats = __import__("scipy.stats").stats
    from decoptim.core.kernels.candidates import CAP
    from decoptim.core.kernels.tsallis import BLOCK

    spots = [0, BLOCK + 904, BLOCK + 1808]
    ties = torch.arange(BLOCK + 2000, BLOCK + 2000 + CAP + 44)
    row = torch.full((2 * BLOCK,), -torch.inf)
    row[spots] = torch.tensor([1.0, 0.6, 0.3])
    row[ties] = 0.0
    for decoder in (d.Sparsemax(4.0), d.Entmax(1.5, 3.0)):
        alpha, inv_tau = decoder.regularizer.alpha, 1.0 / decoder.temperature
        q = decoder.probs(row.double()[None])[0]
        assert (q[ties] > 0).all(), (decoder, q)  # the tied tokens are in the support
        draws = 240
        z = row.expand(draws, -1).contiguous()
        tokens = tsallis_sample(z, kernel_rows(inv_tau, z), alpha, torch.Generator().manual_seed(5))
        head = z[:16]  # a row's uniforms depend on the seed and the row only
        again = tsallis_sample(
            head, kernel_rows(inv_tau, head), alpha, torch.Generator().manual_seed(5)
        )
        assert torch.equal(tokens[:16], again), decoder
        category = (tokens[:, None] == torch.tensor(spots)).int().argmax(-1)
        category[tokens >= ties[0]] = 3
        counts = torch.bincount(category, minlength=4).double()
        expected = torch.cat([q[spots], q[ties].sum()[None]]) * draws
        p_value = scipy_stats.chisquare(counts.numpy(), expected.numpy()).pvalue
        assert p_value > 1e-3, (decoder, counts, expected, p_value)
        codes = group_codes(4, 4, seed=8)
        z = row.expand(16, -1).contiguous()
        source = CodedDraw.of(codes, z.device)
        tokens = tsallis_sample(z, kernel_rows(inv_tau, z), alpha, source)
        expected, expected_codes = coordinated_sample(decoder.probs(z.double()), codes)
        assert int((tokens == expected).sum()) >= len(z) - 1, (decoder, tokens, expected)
        assert (q[tokens] > 0).all(), (decoder, tokens)
        new = source.next_codes(codes.value.shape)
        same = tokens == expected
        gap = (new.value - expected_codes.value).abs()[same]
        assert (gap <= 1e-6 / q[tokens[same]]).all(), (decoder, gap)


def check_table_routes_equal_reference() -> None:
    """Every kernel route of the kernel table, reached through the decoders' own `probs` and
    `sample` (with the CUDA check patched to say yes), against the float64 torch path."""
    z = crowded_rows(3000, 7)
    routed = [
        (d.Softmax(0.8), "softmax"),
        (d.Softmax(torch.tensor([0.5, 1.0, 2.0, 1e-3, 1.0])), "softmax"),
        (d.Sparsemax(), "tsallis"),
        (d.Entmax(1.5, 0.7), "tsallis"),
        (d.TopP(0.9, 0.8), "top_p"),
        (d.MinP(0.1, 0.8), "floor"),
        (d.MinP(torch.tensor([0.1, 0.3, 0.05, 0.5, 1.0]), 1.2), "floor"),
        (d.Epsilon(3e-4, 0.9), "floor"),
        (d.Eta(3e-4, 0.9), "floor"),
        (d.TopK(50, 0.7), "floor"),
        (d.TopK(torch.tensor([1, 7, 300, 2999, 3000]), 1.1), "floor"),
        (d.BestOfK(8, 0.5, 0.3), "bok_prob"),
        (d.BestOfK(8, 0.5, 0.3, solver="mirror"), "bok_prob"),
        (d.BestOfK(8, 2.0, 0.2, weights="rank", top_m=16), "bok_topm"),
        (d.BestOfK(8, 2.0, 0.2, support=d.TopKSupport(40)), "torch"),
    ]
    with kernels_on_the_cpu():
        for decoder, name in routed:
            assert table.route_name(decoder, z) == name, (decoder, table.route_name(decoder, z))
            q = decoder.probs(z)
            ref = decoder.probs(z.double())
            err = float((q.double() - ref).abs().max())
            assert err < 2e-6, f"{decoder!r}: max error {err}"
            drawn = decoder.sample(z, generator=torch.Generator().manual_seed(0))
            assert (ref.gather(1, drawn[:, None]) > 0).all(), (decoder, drawn)


def check_draw_combines_its_programs_blocks() -> None:
    # Rows split over several programs; the row's token is drawn by whichever program
    # finishes last. One-hot rows must return their token wherever it sits (the last one in
    # the row's short last block); a row with mass 0.3 early and 0.7 late must pick the late
    # token about 70% of the time.
    vocab, draws = 9000, 60
    spots = torch.tensor([0, 1500, 4100, 8999])
    q = torch.zeros(len(spots) + 1, vocab)
    q[torch.arange(len(spots)), spots] = 1.0
    q[-1, 10], q[-1, 8800] = 0.3, 0.7
    late = 0
    for seed in range(draws):
        drawn = draw_from_probs(q, torch.Generator().manual_seed(seed))
        assert torch.equal(drawn[:-1], spots), (seed, drawn)
        assert int(drawn[-1]) in (10, 8800), (seed, drawn)
        late += int(drawn[-1]) == 8800
    spread = (draws * 0.3 * 0.7) ** 0.5
    assert abs(late - 0.7 * draws) <= 4 * spread, late


@triton.jit
def _pick_kernel(weight_ptr, u_ptr, out_ptr, low_ptr, width_ptr, n, draws, BLOCK: tl.constexpr):
    lanes = tl.arange(0, BLOCK)
    weights = tl.load(weight_ptr + lanes, mask=lanes < n, other=0.0)
    total = tl.sum(weights.to(tl.float64), axis=0)
    for i in range(draws):
        chosen, low, width = pick(weights, lanes, tl.load(u_ptr + i) * total)
        tl.store(out_ptr + i, chosen)
        tl.store(low_ptr + i, low)
        tl.store(width_ptr + i, width)


def check_pick_follows_running_sums_and_never_a_weight_of_zero() -> None:
    # Targets u·Σ at the edges of [0, 1) and of each weight's interval: u·Σ on an edge goes
    # to the next positive weight; u = 1 − 2⁻⁵³ (u·Σ may round up to Σ) to the last positive
    # weight, never to the zeros after it; Σ = 0 gives 0. The bucket returned is the chosen
    # weight's: its running sum before it and its width.
    cases = [
        ([0.0, 0.25, 0.0, 0.75, 0.0, 0.0], [0.0, 0.25 - 2**-40, 0.25, 0.9, 1 - 2**-53],
         [1, 1, 3, 3, 3]),
        ([3.0, 1.0, 0.0, 4.0], [0.375, 0.5 - 2**-40, 0.5, 1 - 2**-53], [1, 1, 3, 3]),
        ([0.0, 0.0, 0.0], [0.0, 0.5, 1 - 2**-53], [0, 0, 0]),
        ([2.0**-149, 0.0, 1.0], [0.0, 2**-150, 2**-100], [0, 0, 2]),
    ]  # fmt: skip
    for weights, us, expected in cases:
        out = torch.empty(len(us), dtype=torch.int32)
        low, width = (
            torch.empty(len(us), dtype=torch.float64),
            torch.empty(len(us), dtype=torch.float64),
        )
        _pick_kernel[(1,)](torch.tensor(weights), torch.tensor(us, dtype=torch.float64), out,
                           low, width, len(weights), len(us), BLOCK=16)  # fmt: skip
        assert out.tolist() == expected, (weights, us, out.tolist(), expected)
        w = torch.tensor(weights, dtype=torch.float64)
        assert torch.equal(width, w[out.long()]), (weights, width)
        assert torch.equal(low, (w.cumsum(0) - w)[out.long()]), (weights, low)


def check_draw_many_picks_each_proposal_with_its_own_uniforms() -> None:
    # draw_many_from_logits picks a row's proposals one after another in its last program.
    # Each must be the draw's two steps with Philox's uniforms at offset row·draws + d, in
    # float64: over four blocks (their maxima differ), on the crowded rows (constant, tied,
    # masked) and on a row whose one live token is in the short last block, for three
    # seeds. The block maxima returned are the blocks'.
    vocab, tau, draws = 3 * DRAW_BLOCK + 77, 0.8, 4
    z = torch.cat([crowded_rows(vocab), torch.full((1, vocab), -torch.inf)])
    z[-1, 3 * DRAW_BLOCK + 70] = 0.5
    z[0, 2 * DRAW_BLOCK + 5] += 9.0  # the row's max far from its first block
    rows = z.shape[0]
    for seed in range(3):
        source = draw_seed(z.device, torch.Generator().manual_seed(seed))
        arrivals = torch.zeros(rows, dtype=torch.int32)
        tokens, tops = draw_many_from_logits(z, kernel_rows(1 / tau, z), source, arrivals, draws)
        first, second = philox_pairs(source, rows * draws)
        assert_draws_are_the_two_step_picks(z, tau, tokens, first, second, DRAW_BLOCK)
    assert (tokens[-1] == 3 * DRAW_BLOCK + 70).all(), tokens[-1]
    padded = torch.nn.functional.pad(z, (0, 4 * DRAW_BLOCK - vocab), value=-torch.inf)
    assert torch.equal(tops, padded.view(rows, 4, DRAW_BLOCK).max(2).values)


def check_coded_picks_pass_their_place_on() -> None:
    # draw_many_from_logits with codes chains its picks as `coordinated_sample_in_set` does:
    # the first is the start code's pick over softmax, each next one the pick of the code
    # the one before passed on, its place inside its bucket (the stored next code differs
    # from it only below its grain: other hashed bits) against float64 buckets, bar a code
    # within rounding of an edge; the last slot holds the code the last pick passed on.
    vocab, tau, rows = 3 * DRAW_BLOCK + 77, 0.8, 16
    z = random_logits(rows, vocab, 5) * 0.7
    z[3, :500] = -torch.inf  # masked tokens before the row's first live one
    codes = group_codes(rows // 4, 4, seed=9)
    picks = torch.empty(rows, PROPOSALS + 1, dtype=torch.float64)
    source = CodedDraw.of(codes, z.device)._replace(next_value=picks)
    arrivals = torch.zeros(rows, dtype=torch.int32)
    tokens, _ = draw_many_from_logits(z, kernel_rows(1 / tau, z), source, arrivals, PROPOSALS)
    cumulative = torch.softmax(z.double() / tau, -1).cumsum(-1)
    code, agree = codes.value, 0
    for draw in range(PROPOSALS):
        expected = torch.searchsorted(cumulative, (code * cumulative[:, -1])[:, None], right=True)
        agree += int((tokens[:, draw] == expected[:, 0]).sum())
        code = picks[:, draw]
    assert agree >= rows * PROPOSALS - 1, (tokens, agree)
    gap = (picks[:, -1] - picks[:, -2]).abs()
    gap = torch.minimum(gap, 1 - gap)  # codes are mod 1
    # Other bits below the grain: they differ unless the grain is within the code's last bit.
    assert (gap < 1e-8).all() and int((gap > 0).sum()) >= rows - 2, gap


def check_graph_seeds_advance_the_stream_and_clear_the_counters() -> None:
    # A CUDA graph's seeds (`draw.next_graph_seeds`): Philox4x32-10's first two words at
    # (the stream's key, its count), the count one more per launch, the counters zeroed in
    # the same launch and nothing past them (1,500 over two programs of 1,024).
    assert philox_words(0, 0) == (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)  # Random123's
    key = 0x9E3779B97F4A7C15 % 2**63
    stream = torch.tensor([key, 2**32 - 1], dtype=torch.int64)
    buffer = torch.full((2048,), 7, dtype=torch.int32)
    seen = set()
    for count in range(2**32 - 1, 2**32 + 2):  # the count's carry into its high word
        seeds = next_graph_seeds(stream, clear=buffer[:1500] if count % 2 else None)
        assert seeds.tolist() == list(philox_words(key, count)[:2]), (count, seeds)
        assert int(stream[1]) == count + 1 and int(stream[0]) == key
        seen.add(tuple(seeds.tolist()))
    assert len(seen) == 3
    assert (buffer[:1500] == 0).all() and (buffer[1500:] == 7).all()


def check_manual_seed_restarts_the_graph_seed_streams() -> None:
    # decoptim.manual_seed restarts each device's stream in place: the seeds the launches
    # take after it are Philox's words at (the seed's key, 0, 1, ...), again after the same
    # seed, and others after another seed. Streams on the CPU stand in for two devices'.
    from decoptim.core.kernels import draw

    streams = {0: torch.tensor([3, 40], dtype=torch.int64), 1: torch.tensor([8, 2])}
    saved, draw._graph_seed_streams = draw._graph_seed_streams, streams
    try:

        def seeds_after(seed: int, index: int) -> list:
            d.manual_seed(seed)
            return [next_graph_seeds(streams[index], None).tolist() for _ in range(3)]

        for index in streams:
            key = draw.graph_seed_key(5, index)
            expected = [list(philox_words(key, count)[:2]) for count in range(3)]
            assert seeds_after(5, index) == expected, (index, expected)
            assert seeds_after(5, index) == expected
            assert seeds_after(6, index) != expected
        assert seeds_after(5, 0) != seeds_after(5, 1)
    finally:
        draw._graph_seed_streams = saved


def check_draw_from_logits_follows_probs_across_blocks() -> None:
    # Four blocks whose own maxima differ by up to 1.8 (2.6 nats at τ = 0.7): each block's
    # mass is taken relative to its own max, so the draw is right only if the blocks are
    # rescaled to the row's max (unscaled, a block's odds would be off by up to e^2.6). Two
    # live tokens in the first block, one in each other, and in the last block a token 40
    # nats below its max (dead). A row of +inf (validate=False) draws only its +inf tokens;
    # the same seed gives the same tokens.
    scipy_stats = __import__("scipy.stats").stats
    block, tau = DRAW_BLOCK, 0.7
    vocab = 3 * block + 100
    z = torch.full((vocab,), -torch.inf)
    spots = torch.tensor([5, block - 1, block, 2 * block + 4, 3 * block + 99])
    z[spots] = torch.tensor([1.0, 1.2, 0.4, -0.6, 0.8])
    z[3 * block + 56] = 0.8 - 40.0 * tau
    q = d.Softmax(tau).probs(z.double())
    rows = 300
    batch = z.expand(rows, -1).contiguous()
    tokens = softmax_sample(batch, kernel_rows(1 / tau, batch), torch.Generator().manual_seed(3))
    again = softmax_sample(batch, kernel_rows(1 / tau, batch), torch.Generator().manual_seed(3))
    assert torch.equal(tokens, again)
    live = torch.nonzero(q > 1e-12).squeeze(1)
    assert torch.isin(tokens, live).all(), tokens[~torch.isin(tokens, live)]
    counts = (tokens[:, None] == live).sum(0).double()
    expected = q[live] / q[live].sum() * rows
    assert scipy_stats.chisquare(counts.numpy(), expected.numpy()).pvalue > 1e-3, (
        counts, expected
    )  # fmt: skip
    infinite = torch.zeros(2, vocab)
    infinite[:, [70, 5000]] = torch.inf
    drawn = softmax_sample(infinite, kernel_rows(1.0, infinite), torch.Generator().manual_seed(0))
    assert torch.isin(drawn, torch.tensor([70, 5000])).all(), drawn


@triton.jit
def _exponential_kernel(word_ptr, fine_ptr, out_ptr, n, BLOCK: tl.constexpr):
    lanes = tl.arange(0, BLOCK)
    valid = lanes < n
    word = tl.load(word_ptr + lanes, mask=valid, other=0)
    fine = tl.load(fine_ptr + lanes, mask=valid, other=0)
    tl.store(out_ptr + lanes, exponential(word, fine), mask=valid)


def check_exponentials_are_exact_at_every_edge() -> None:
    # Forced random words at the edges of the uniform's range. A small E is what lets a
    # token win a race: computing −log(1 − u) in float32 returned E = 0 for u < 2⁻²⁵ (the
    # GPU sampler then drew near-zero-probability tokens ~20,000× too often), and tl.rand's
    # u = 0 had a mass of 2⁻³⁰. Every E must match −log1p(−v) in float64, v = (w + ½)·2⁻³²
    # (v = (f + ½)·2⁻⁶⁴ in the cell w = 0), to float32 rounding, and be finite and > 0.
    edges = [1, 2, 3, 255, 2**20, 2**24 - 1, 2**24, 2**24 + 1, 2**25 + 7, 2**31 - 1, 2**31,
             2**31 + 1, 2**32 - 2**8, 2**32 - 3, 2**32 - 2, 2**32 - 1]  # fmt: skip
    spread = torch.randint(0, 2**32, (200,), generator=torch.Generator().manual_seed(0))
    words = [0, 0, 0, 0, *edges, *spread.tolist()]
    fines = [0, 1, 2**31, 2**32 - 1] + [12345] * (len(words) - 4)
    as_int32 = lambda xs: torch.tensor(xs, dtype=torch.int64).to(torch.int32)  # noqa: E731
    out = torch.empty(len(words))
    _exponential_kernel[(1,)](as_int32(words), as_int32(fines), out, len(words), BLOCK=256)
    w = torch.tensor(words, dtype=torch.float64)
    v = torch.where(
        w == 0, (torch.tensor(fines, dtype=torch.float64) + 0.5) * 2.0**-64, (w + 0.5) * 2.0**-32
    )
    expected = -torch.log1p(-v)
    assert torch.isfinite(out).all() and (out > 0).all(), out
    error = ((out.double() - expected).abs() / expected).max()
    assert error < 4e-7, f"relative error {float(error):.3g}"
    assert float(out[0]) < 2.0**-64, "the cell w = 0 is not split by the fine word"


@triton.jit
def _hash_kernel(seed_ptr, index_ptr, step_ptr, out_ptr, n, STREAM: tl.constexpr,
                 BLOCK: tl.constexpr):  # fmt: skip
    lanes = tl.arange(0, BLOCK)
    valid = lanes < n
    seed = tl.load(seed_ptr + lanes, mask=valid, other=0)
    index = tl.load(index_ptr + lanes, mask=valid, other=0)
    step = tl.load(step_ptr + lanes, mask=valid, other=0)
    out = uniforms.hashed_uniform(seed, index, step, STREAM)
    tl.store(out_ptr + lanes, out, mask=valid)


def check_coordinated_hash_equals_the_torch_path() -> None:
    generator = torch.Generator().manual_seed(0)
    n = 300
    seed = torch.randint(0, 2**62, (n,), generator=generator)
    seed[:3] = torch.tensor([0, 2**32 - 1, 2**62 + 12345])
    index = torch.randint(0, 64, (n,), generator=generator)
    step = torch.randint(0, 2**33, (n,), generator=generator)
    out = torch.empty(n, dtype=torch.float64)
    _hash_kernel[(1,)](seed, index, step, out, n, STREAM=0x5EED0002, BLOCK=512)
    assert torch.equal(out, hashed_uniform(seed, index, step, 0x5EED0002))


def check_coordinated_kernel_equals_the_torch_path() -> None:
    # Rows with masked tokens, a long flat tail, a single live token and a code pushed to
    # the end of its row; several chunks per row.
    vocab, groups, k = 9000, 6, 4
    z = random_logits(groups * k, vocab, 9)
    z[1, ::2] = -torch.inf
    z[2, 10:] -= 30.0
    z[3] = -torch.inf
    z[3, 8500] = 0.0
    q = torch.softmax(z, -1)
    codes = group_codes(groups, k, seed=4)
    codes = codes._replace(value=codes.value.clone())
    codes.value[5] = 1.0 - 2.0**-53
    # Each step from the same codes (the two paths sum in different orders, and a code's
    # rounding differences grow by 1/q_t per step, so chained runs part after a while).
    for _ in range(3):
        expected, expected_codes = coordinated_sample(q, codes)
        tokens, new = draw_coordinated(q, codes)
        assert torch.equal(tokens, expected), (tokens, expected)
        # Float64 sums in another order: bucket edges differ by up to V·2⁻⁵² of the mass, so
        # a code by up to that over the chosen token's share q_t.
        share = (q.double() / q.double().sum(-1, keepdim=True)).gather(1, tokens[:, None])[:, 0]
        gap = (new.value - expected_codes.value).abs()
        assert (gap <= vocab * 2.0**-52 / share).all(), (gap, share)
        assert torch.equal(new.step, expected_codes.step)
        assert int(tokens[3]) == 8500
        codes = expected_codes


def check_coordinated_draw_over_the_closed_form_equals_the_written_draw() -> None:
    # A route's own draw with the codes as its randomness against the coordinated draw over
    # the written q: the same tokens bar a code within rounding of a bucket's edge (the
    # closed form and the written q differ by one rounding of the normaliser), next codes
    # close where the tokens agree, steps advanced. Then top-p and typical `by_rejection`
    # against the torch path's `coordinated_sample_in_set` over the written softmax and q:
    # tokens and next codes compared where the first pick was kept (a rejected pick
    # magnifies the float32 rounding of its bucket by 1/p of its token).
    z = random_logits(12, 5000, 13) * 0.5
    codes = group_codes(3, 4, seed=6)
    with kernels_on_the_cpu():
        for decoder in (d.Softmax(0.8), d.TopP(0.9, 1.2), d.MinP(0.05, 0.7), d.Typical(0.9),
                        d.TopK(40, 0.9), d.Sparsemax(0.7), d.Entmax(1.5, 0.5),
                        d.Entmax(1.3)):  # fmt: skip
            assert table.route_name(decoder, z) != "torch" and route_of(decoder).codes, decoder
            tokens, new = decoder.sample_coordinated(z, codes)
            q = decoder.probs(z)
            expected, expected_new = draw_coordinated(q, codes)
            assert_coded_draws_agree(decoder, q, q, tokens, new, expected, expected_new, codes)
        for decoder in (d.TopP(0.9, 1.2), d.Typical(0.9)):
            tokens, new = decoder.sample_coordinated(z, codes, by_rejection=True)
            q, p = decoder.probs(z), d.Softmax(decoder.temperature).probs(z)
            expected, expected_new = coordinated_sample_in_set(p, q, codes)
            first_pick, _ = coordinated_sample(p, codes)
            kept = q.gather(1, first_pick[:, None])[:, 0] > 0
            assert int(kept.sum()) >= len(z) // 2, (decoder, kept)
            assert_coded_draws_agree(decoder, q, p, tokens, new, expected, expected_new, codes,
                                     kept)  # fmt: skip


def assert_coded_draws_agree(decoder, q, bucket, tokens, new, expected, expected_new, codes,
                             compared=None) -> None:  # fmt: skip
    # Tokens equal bar one, next codes within 1e-5 of their token's share of `bucket` (the
    # q or p whose buckets the codes were read in), on the rows `compared` (default: all).
    compared = torch.ones_like(tokens, dtype=torch.bool) if compared is None else compared
    same = tokens == expected
    assert int((same | ~compared).sum()) >= len(tokens) - 1, (decoder, tokens, expected)
    compared = compared & same
    share = (bucket / bucket.sum(-1, keepdim=True)).gather(1, tokens[:, None])[:, 0]
    gap = (new.value - expected_new.value).abs()[compared]
    assert (gap <= 1e-5 / share.double()[compared]).all(), (decoder, gap, share)
    assert torch.equal(new.step, codes.step + 1) and torch.equal(new.seed, codes.seed)
    assert (q.gather(1, tokens[:, None]) > 0).all(), (decoder, tokens)


def check_bok_topm_coordinated_draw_is_the_torch_path_in_head_order() -> None:
    # Best-of-K's top-M route draws a code over its head's tokens (in the head's order),
    # then over the tail in token order: the torch path's coordinated draw over q permuted
    # that way picks the same tokens bar a code within rounding of an edge, and next codes
    # agree where the tokens do; both the head and the tail are drawn from.
    from decoptim.core.kernels.bok_topm import _head

    z = random_logits(16, 3000, 21) * 0.7
    codes = group_codes(4, 4, seed=3)
    with kernels_on_the_cpu():
        for decoder in (
            d.BestOfK(8, 0.05, 1.0, weights="topm", top_m=4),
            d.BestOfK(8, 0.5, 1.0, weights="rank", top_m=6, temperature=2.0),
        ):
            assert table.route_name(decoder, z) == "bok_topm", table.route_name(decoder, z)
            assert table.kernel_route(decoder, z).codes
            tokens, new = decoder.sample_coordinated(z, codes)
            q = decoder.probs(z).double()
            head, _ = _head(z, table._bok_topm_problem(decoder, z))
            in_head = torch.zeros_like(q, dtype=torch.bool).scatter_(1, head.index, True)
            tail = torch.arange(z.shape[1]).expand_as(q)[~in_head].reshape(len(z), -1)
            order = torch.cat([head.index, tail], 1)
            place, expected_codes = coordinated_sample(q.gather(1, order), codes)
            expected = order.gather(1, place[:, None])[:, 0]
            same = tokens == expected
            assert int(same.sum()) >= len(z) - 1, (decoder, tokens, expected)
            assert 0 < int(in_head.gather(1, tokens[:, None]).sum()) < len(z), (decoder, tokens)
            share = (q / q.sum(-1, keepdim=True)).gather(1, tokens[:, None])[:, 0]
            gap = (new.value - expected_codes.value).abs()[same]
            assert (gap <= 1e-5 / share[same]).all(), (decoder, gap, share)
            assert torch.equal(new.step, codes.step + 1)


def prob_head_and_overflow(decoder, z):
    # Best-of-K w = p's head (the tokens its gather kept, by the same predicate on the row
    # terms it stored) and its rows that overflowed the slots (q written in full).
    _, candidates, _, terms, _, _ = _solve(z, *table._bok_prob_args(decoder, z))
    terms = terms[:, :, None]
    slope = terms[:, INV_TAU_P.value] + terms[:, C_TERM.value]
    in_head = slope * (z - terms[:, Z_MAX.value]) >= terms[:, GAP.value]
    return in_head, (candidates.count > CAP).any(-1)


# β and λ that leave a few hundred head tokens on prob_rows' rows (a fifth to a half of
# the mass) and their bulk in the tail.
PROB_SAMPLED = [
    d.BestOfK(4, 0.01, 10.0, weights="prob"),
    d.BestOfK(4, 0.01, 10.0, weights="prob", solver="mirror", steps=3),
    d.BestOfK(4, 0.01, 5.0, weights="prob", solver="mirror", steps=1, temperature=1.3),
]


def prob_rows(seed: int) -> torch.Tensor:
    # crowded_rows, flatter, with 16 tokens raised above the rest: row 2's 800 tied maxima
    # overflow the slots.
    z = crowded_rows(3000, seed) * 0.4
    z[:, :16] += 3.0
    return z


def fused_draws_off_the_head(decoder, z, seeds):
    # Best-of-K w = p's fused draw (head or tail by a race in the head's solve, a tail token
    # over the tail's closed form, an overflowing row over its written q) against the draw
    # over the written q with the same seed, the head masked out: the same q and uniforms,
    # so every row whose draw is not in the head gives the same token, inside q's support.
    # Returns the head (overflowing rows have none), the overflowing rows, the head's mass
    # per row and the number of draws from the head.
    args = table._bok_prob_args(decoder, z)
    q = table.BOK_PROB.probs(decoder, z)
    assert torch.allclose(q.double(), decoder.probs(z.double()), atol=2e-6), decoder
    in_head, overflowed = prob_head_and_overflow(decoder, z)
    in_head &= ~overflowed[:, None]
    rest = torch.where(in_head, 0.0, q)
    head_draws = 0
    for seed in seeds:
        fused = bok_prob_sample(z, *args, torch.Generator().manual_seed(seed))
        drawn = draw_from_probs(rest, torch.Generator().manual_seed(seed))
        from_head = in_head.gather(1, fused[:, None])[:, 0]
        assert (q.gather(1, fused[:, None]) > 0).all(), (decoder, fused)
        assert torch.equal(fused[~from_head], drawn[~from_head]), (decoder, fused, drawn)
        head_draws += int(from_head.sum())
    return in_head, overflowed, (q * in_head).sum(-1).double(), head_draws


def check_bok_prob_sample_draws_from_its_probs() -> None:
    # The fused draw off the head (above); the head comes up about Σ_head q of the time.
    z = prob_rows(5)
    draws = 8
    for decoder in PROB_SAMPLED:
        _, overflowed, head_mass, head_draws = fused_draws_off_the_head(decoder, z, range(draws))
        assert overflowed.tolist() == [False, False, True, False, False], overflowed
        solved = head_mass[~overflowed]
        assert float(solved.min()) > 0.05 and float(solved.max()) < 0.95, head_mass
        expected = float(head_mass.sum()) * draws
        spread = (float((head_mass * (1 - head_mass)).sum()) * draws) ** 0.5
        assert abs(head_draws - expected) <= 4 * spread, (decoder, head_draws, expected)


def check_bok_prob_sample_with_per_row_parameters() -> None:
    # Per-row K, β and λ, with K = 1 and β = 0 rows (no head: the gap is +inf, every token
    # in the tail's closed form, which is then exact): the fused draw off the head, masked
    # tokens included.
    z = prob_rows(6)
    z[3, :40] = -torch.inf
    decoder = d.BestOfK(
        k=torch.tensor([1, 4, 8, 4, 2]), beta=torch.tensor([0.3, 0.0, 0.01, 0.01, 0.02]),
        lam=torch.tensor([1.0, 2.0, 10.0, 5.0, 10.0]), weights="prob",
    )  # fmt: skip
    in_head, _, _, _ = fused_draws_off_the_head(decoder, z, range(4))
    assert not in_head[:2].any(), "K = 1 and β = 0 rows have no head"


def check_bok_prob_heads_of_every_size() -> None:
    # A head of each size that takes a path of its own: at most SMALL_HEAD tokens (the
    # small-head kernel), at most COMPACT (packed, in the head kernel), more with no slot
    # overflowing (over all slots), and an overflowing row (the whole-row solve). q equals
    # float64's and the fused draw off the head the draw over the written q, for the exact
    # solver, mirror ascent and its first step.
    z = torch.randn(4, 6000, generator=torch.Generator().manual_seed(11)) * 0.5
    for row, raised in enumerate((30, 150, 400)):
        z[row, torch.arange(raised) * (6000 // raised)] += 4.0
    z[3, :800] = z[3].max() + 1.0
    for solver, steps in (("exact", 5), ("mirror", 3), ("mirror", 1)):
        decoder = d.BestOfK(4, 0.05, 10.0, weights="prob", solver=solver, steps=steps)
        in_head, overflowed, _, _ = fused_draws_off_the_head(decoder, z, range(4))
        sizes = in_head.sum(-1)
        assert overflowed.tolist() == [False, False, False, True], overflowed
        assert 0 < sizes[0] <= SMALL_HEAD.value < sizes[1] <= COMPACT.value < sizes[2], sizes


def check_bok_prob_mirror_first_step_weighs_each_tail_token() -> None:
    # Mirror's first step from q₀ = p weighs a tail token by (1 − p_v)^{K−1}, which the
    # ratio bound ρ_v < ε does not make 1 when r = softmax(A) is much sharper than p (here
    # c = 1/τ_p + 1/λ = 6): the mid tokens below (p_v ≈ 0.02–0.03, r_v ≈ 1e-8) are in the
    # tail, and their factor moves q_v by ~0.3%. The tail's mass is taken as Σ exp(A + b)
    # (within ε of the total, bok_prob's docstring), but each token's q keeps its factor.
    # Their q is ~1e-8, so q is compared with float64 token by token, relative.
    z = torch.full((3, 6000), -10.0)
    z[:, 7] = 3.0
    for row, mids in enumerate((20, 40, 60)):
        z[row, 100 : 100 + mids * 50 : 50] = torch.linspace(-0.2, 0.2, mids)
    for steps in (1, 3):
        decoder = d.BestOfK(8, 0.1, 0.2, weights="prob", solver="mirror", steps=steps)
        q = table.BOK_PROB.probs(decoder, z).double()
        reference = decoder.probs(z.double())
        seen = reference > 1e-30
        relative = ((q - reference).abs() / reference)[seen].max()
        assert relative < 1e-4, (steps, float(relative))


def check_bok_prob_coordinated_draw_is_the_torch_path_in_head_order() -> None:
    # With codes, Best-of-K w = p draws over its head's tokens in id order, then the tail
    # in id order; an overflowing row, over its written q in id order: the torch path's
    # coordinated draw over q permuted that way picks the same tokens bar a code within
    # rounding of an edge, and next codes agree where the tokens do.
    z = torch.cat([prob_rows(8), prob_rows(9)[:3]])
    codes = group_codes(2, 4, seed=4)
    for decoder in PROB_SAMPLED:
        with kernels_on_the_cpu():
            assert table.kernel_route(decoder, z).codes
            tokens, new = decoder.sample_coordinated(z, codes)
        q = table.BOK_PROB.probs(decoder, z).double()
        in_head, overflowed = prob_head_and_overflow(decoder, z)
        in_head &= ~overflowed[:, None]
        ids = torch.arange(z.shape[1]).expand_as(q)
        # Head first, each part in id order: a stable sort on "not in the head".
        order = torch.sort((~in_head).int(), dim=1, stable=True).indices
        order = torch.where(overflowed[:, None], ids, order)
        place, expected_codes = coordinated_sample(q.gather(1, order), codes)
        expected = order.gather(1, place[:, None])[:, 0]
        same = tokens == expected
        assert int(same.sum()) >= len(z) - 1, (decoder, tokens, expected)
        from_head = in_head.gather(1, tokens[:, None])[:, 0]
        assert 0 < int(from_head.sum()) < len(z), (decoder, tokens)
        share = (q / q.sum(-1, keepdim=True)).gather(1, tokens[:, None])[:, 0]
        gap = (new.value - expected_codes.value).abs()[same]
        assert (gap <= 1e-5 / share[same]).all(), (decoder, gap, share)
        assert torch.equal(new.step, codes.step + 1)


CHECKS = {name: fn for name, fn in globals().items() if name.startswith("check_")}

if __name__ == "__main__":
    if os.environ.get("DECOPTIM_KERNEL_LAUNCHES"):  # for the compile check (launches.py)
        from tests.core.kernels.launches import record

        record(os.environ["DECOPTIM_KERNEL_LAUNCHES"])
    failed = []
    for name in sys.argv[1:] or CHECKS:
        try:
            CHECKS[name]()
            print(f"ok {name}", flush=True)
        except AssertionError as error:
            failed.append(name)
            print(f"FAILED {name}: {error}", flush=True)
    sys.exit(1 if failed else 0)
