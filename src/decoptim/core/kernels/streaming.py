"""Row-streaming kernels, each row split over several programs so that small batches still
fill the GPU; the kernel that reads the per-split partial results next combines them."""

from __future__ import annotations

import functools
from typing import NamedTuple

import torch
import triton
import triton.language as tl

from .launch import kernel, wait_for_the_kernel_before

BLOCK = 2048


def cdiv(a: int, b: int) -> int:
    # Plain Python on the host: `triton.cdiv` is a constexpr function, and each host call
    # of one costs microseconds, several times per decode step.
    return -(-a // b)


def pow2_at_least(n: int, floor: int = 1) -> int:
    """The smallest power of two ≥ max(n, floor)."""
    return max(floor, 1 << max(n - 1, 0).bit_length())


def chunk_for(vocab: int, splits: int, block: int) -> int:
    """Tokens per split of a row: whole blocks, `splits` chunks covering `vocab`."""
    return cdiv(cdiv(vocab, splits), block) * block


@functools.cache
def sm_count(device: torch.device) -> int:
    if device.type != "cuda":  # Triton's interpreter (TRITON_INTERPRET=1), in tests
        return 132
    return torch.cuda.get_device_properties(device).multi_processor_count


def splits_for(
    rows: int, vocab: int, device: torch.device, per_sm: int = 4, block: int = BLOCK
) -> int:
    """Programs per row: enough for ~`per_sm` programs per SM, each over at least one block."""
    return max(1, min(cdiv(per_sm * sm_count(device), rows), cdiv(vocab, block)))


@triton.jit
def program_position():
    """(row, split, splits) of this program: every streaming kernel launches on a
    (rows, splits) grid, one program per row and CHUNK-long split of it."""
    return tl.program_id(0), tl.program_id(1), tl.num_programs(1)


@triton.jit
def split_bounds(split, CHUNK, V):
    """The tokens [begin, end) of a row that program `split` covers: CHUNK each (whole blocks,
    from `chunk_for`), the last split cut at V."""
    return split * CHUNK, tl.minimum((split + 1) * CHUNK, V)


@triton.jit
def load_logits(ptr, mask):
    """Logits as every kernel reads them: masked lanes and NaN as −inf, so that a NaN (only
    possible with validate=False) drops out of the support as on the CPU."""
    z = tl.load(ptr, mask=mask, other=-float("inf"))
    return tl.where(z == z, z, -float("inf"))


@triton.jit
def finite_or_zero(top):
    """A max of −inf (nothing live) as 0, so that −inf − max is −inf, not NaN."""
    return tl.where(top == -float("inf"), 0.0, top)


@triton.jit
def code_of(x):
    """Order-preserving int64 code of a float32 (-0.0 made +0.0 first, so ties share codes)."""
    bits = (x + 0.0).to(tl.int32, bitcast=True)
    return tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(tl.int64)


@triton.jit
def float_of_code(code):
    """The float32 whose `code_of` is `code` (the inverse map)."""
    bits = code.to(tl.int32)
    return tl.where(bits < 0, bits ^ 0x7FFFFFFF, bits).to(tl.float32, bitcast=True)


def segment_size(vocab: int, k: int) -> int:
    """Segment length for `row_stats`: about 4k segments per row (k-th largest segment max
    then leaves ~k candidates on untied logits), at most 4096 segments, a power of two
    that divides BLOCK."""
    size = 16
    while size < 256 and (size * 2) * 4 * k <= vocab:
        size *= 2
    while cdiv(vocab, size) > 4096:
        size *= 2
    return min(size, BLOCK)


@triton.jit
def kth_largest_lower_bound(x, valid, k, PASSES: tl.constexpr):
    """A value lo with #{valid x ≥ lo} ≥ k, at most (max − min)/2^PASSES below the k-th
    largest valid x; −inf when fewer than k valid x are finite."""
    finite = valid & (x > -float("inf"))
    lo = tl.min(tl.where(finite, x, float("inf")), axis=0)
    hi = tl.max(tl.where(finite, x, -float("inf")), axis=0)
    for _ in range(PASSES):
        mid = lo + 0.5 * (hi - lo)
        enough = tl.sum((finite & (x >= mid)).to(tl.int32), axis=0) >= k
        lo = tl.where(enough, mid, lo)
        hi = tl.where(enough, hi, mid)
    return tl.where(tl.sum(finite.to(tl.int32), axis=0) >= k, lo, -float("inf"))


# Halvings of the segment bound's search: as good as the exact k-th largest segment max,
# since every consumer selects exactly; 16 leave a few extra candidates at most (a 16-way
# search in 4 passes was slower: 52 against 44 µs on an H100, as a kernel of its own).
BOUND_PASSES = tl.constexpr(16)


@kernel
def _row_stats_kernel(
    z_ptr,
    c_ptr,
    c2_ptr,
    max_ptr,
    sum_ptr,
    sum2_ptr,
    moment_ptr,
    segmax_ptr,
    arrivals_ptr,
    row_out_ptr,
    V,
    stride,
    CHUNK,
    NSEG,
    rows,
    k,
    BLOCK: tl.constexpr,
    SEG: tl.constexpr,
    SEGMENTS: tl.constexpr,
    TWO_SCALES: tl.constexpr,
    MOMENT: tl.constexpr,
    FINISH: tl.constexpr,
    BOUND: tl.constexpr,
    SPLIT_BLOCK: tl.constexpr,
    SEG_BLOCK: tl.constexpr,
    DEPENDENT: tl.constexpr,
):
    # Per (row, split): running max m of z and Σ exp(c·(z − m)) over the split's chunk;
    # with TWO_SCALES also Σ exp(c2·(z − m)); with MOMENT also Σ exp(y)·y, y = c·(z − m)
    # (the entropy's sum); with SEGMENTS the max of every SEG-long segment. FINISH: see
    # `_finish_row`.
    wait_for_the_kernel_before(DEPENDENT)
    row, split, splits = program_position()
    c = tl.load(c_ptr + row)
    c2 = tl.load(c2_ptr + row)
    base = z_ptr + row.to(tl.int64) * stride
    begin, end = split_bounds(split, CHUNK, V)
    m = -float("inf")
    # The sums are kept per lane, relative to the running max m of the whole chunk, and
    # reduced once after the loop: a reduction per block is an exchange through shared
    # memory and a barrier (only the max needs one, for m).
    s = tl.zeros((BLOCK,), tl.float32)
    s2 = tl.zeros((BLOCK,), tl.float32)
    s1 = tl.zeros((BLOCK,), tl.float32)
    for start in range(begin, end, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        z = load_logits(base + offs, offs < end)
        new_m = tl.maximum(m, tl.max(z, axis=0))
        safe = finite_or_zero(new_m)
        d = c * (m - safe)  # the running sums move from m to the new max: a factor e^d
        y = c * (z - safe)
        if MOMENT:  # Σ e^(y + d)·(y + d) = e^d·(s1 + d·s)
            carried = tl.where(s > 0.0, (s1 + d * s) * tl.exp(d), 0.0)  # s = 0: m is −inf
            s1 = carried + tl.where(y > -float("inf"), tl.exp(y) * y, 0.0)
        s = s * tl.exp(d) + tl.exp(y)
        if TWO_SCALES:
            s2 = s2 * tl.exp(c2 * (m - safe)) + tl.exp(c2 * (z - safe))
        m = new_m
        if SEGMENTS:
            seg = start // SEG + tl.arange(0, BLOCK // SEG)
            seg_max = tl.max(tl.reshape(z, (BLOCK // SEG, SEG)), axis=1)
            tl.store(segmax_ptr + row * NSEG + seg, seg_max, mask=seg < NSEG)
    tl.store(max_ptr + row * splits + split, m)
    tl.store(sum_ptr + row * splits + split, tl.sum(s, axis=0))
    if TWO_SCALES:
        tl.store(sum2_ptr + row * splits + split, tl.sum(s2, axis=0))
    if MOMENT:
        tl.store(moment_ptr + row * splits + split, tl.sum(s1, axis=0))
    if FINISH:
        # The row's last program to arrive combines the splits into per-row values, where
        # torch ops on [rows, splits] would each be a launch (and, eagerly, host time): the
        # barrier and the count's release put this program's stores before its arrival, the
        # last one's acquire its loads after every arrival; ".cg" reads from L2.
        tl.debug_barrier()
        if tl.atomic_add(arrivals_ptr + row, 1, sem="acq_rel", scope="gpu") == splits - 1:
            _finish_row(max_ptr, sum_ptr, moment_ptr, segmax_ptr, row_out_ptr, row, splits,
                        rows, NSEG, c, k, MOMENT, BOUND, SPLIT_BLOCK, SEG_BLOCK)  # fmt: skip
            tl.store(arrivals_ptr + row, 0)  # zero again, for the step's next counting kernel


@triton.jit
def _finish_row(max_ptr, sum_ptr, moment_ptr, segmax_ptr, out_ptr, row, splits, rows, NSEG,
                c, k, MOMENT: tl.constexpr, BOUND: tl.constexpr, SPLIT_BLOCK: tl.constexpr,
                SEG_BLOCK: tl.constexpr):  # fmt: skip
    # out [4, rows]: max z; log Σ exp(c·(z − max z)); with MOMENT the entropy of softmax(c·z),
    # H = log S − S1/S (S = Σ e^y, S1 = Σ e^y·y, y = c·(z − max z)); with BOUND a
    # bound a little below the k-th largest segment max. Each split's sums are relative to
    # its own max m: they move to the row's as e^d·S and e^d·(S1 + d·S), d = c·(m − max z).
    offs = tl.arange(0, SPLIT_BLOCK)
    present = offs < splits
    maxes = tl.load(max_ptr + row * splits + offs, mask=present, other=-float("inf"),
                    cache_modifier=".cg")  # fmt: skip
    sums = tl.load(sum_ptr + row * splits + offs, mask=present, other=0.0, cache_modifier=".cg")
    z_max = tl.max(maxes, axis=0)
    live = maxes > -float("inf")
    d = tl.where(live, c * (maxes - z_max), 0.0)
    rescale = tl.where(live, tl.exp(d), 0.0)
    total = tl.sum(sums * rescale, axis=0)
    log_sum = tl.log(total)
    tl.store(out_ptr + row, z_max)
    tl.store(out_ptr + rows + row, log_sum)
    if MOMENT:
        moments = tl.load(moment_ptr + row * splits + offs, mask=present, other=0.0,
                          cache_modifier=".cg")  # fmt: skip
        moment = tl.sum((moments + d * sums) * rescale, axis=0)
        tl.store(out_ptr + 2 * rows + row, log_sum - moment / total)
    if BOUND:
        lanes = tl.arange(0, SEG_BLOCK)
        valid = lanes < NSEG
        segmax = tl.load(segmax_ptr + row * NSEG + lanes, mask=valid, other=-float("inf"),
                         cache_modifier=".cg")  # fmt: skip
        bound = kth_largest_lower_bound(segmax, valid, k, BOUND_PASSES)
        tl.store(out_ptr + 3 * rows + row, bound)


@triton.jit
def row_lse(max_ptr, sum_ptr, row, SPLITS, c, SPLIT_BLOCK: tl.constexpr):
    """A row's split partials from `row_stats` combined: max z and log Σ exp(c·(z − max z))."""
    offs = tl.arange(0, SPLIT_BLOCK)
    present = offs < SPLITS
    maxes = tl.load(max_ptr + row * SPLITS + offs, mask=present, other=-float("inf"))
    sums = tl.load(sum_ptr + row * SPLITS + offs, mask=present, other=0.0)
    z_max = tl.max(maxes, axis=0)
    scale = tl.where(maxes > -float("inf"), tl.exp(c * (maxes - z_max)), 0.0)
    return z_max, tl.log(tl.sum(sums * scale, axis=0))


class RowStats(NamedTuple):
    maxes: torch.Tensor  # [rows, splits]
    sums: torch.Tensor  # [rows, splits]: Σ exp(c·(z − max)) over each split
    sums2: torch.Tensor | None  # the same for the second scale c2, if given
    segmax: torch.Tensor | None  # [rows, NSEG], if asked for
    moments: torch.Tensor | None = None  # Σ exp(y)·y, y = c·(z − max), if asked for
    per_row: torch.Tensor | None = None  # [4, rows], with `finish`: see the properties
    segment: int = 0  # the length of segmax's segments
    bound_k: int = 0  # the k of the segment bound, if asked for

    @property
    def splits(self) -> int:
        return self.maxes.shape[1]

    def _finished(self, what: int, asked: bool = True, how: str = "") -> torch.Tensor:
        # per_row's rows that the kernel did not write hold whatever torch.empty left.
        if self.per_row is None or not asked:
            raise ValueError(f"this value needs row_stats(..., finish=True{how})")
        return self.per_row[what]

    @property
    def z_max(self) -> torch.Tensor:
        """max z per row [rows]."""
        return self._finished(0)

    @property
    def log_sum(self) -> torch.Tensor:
        """log Σ exp(c·(z − max z)) per row [rows]."""
        return self._finished(1)

    @property
    def entropy(self) -> torch.Tensor:
        """The entropy of softmax(c·z) per row [rows] (row_stats with `moment`)."""
        return self._finished(2, self.moments is not None, ", moment=True")

    @property
    def bound(self) -> torch.Tensor:
        """Per row [rows], a value at most the k-th largest segment max and at most
        (max − min of the segment maxima)/2^16 below it, −inf where fewer than k segment
        maxima are finite (row_stats with `bound_k` = k)."""
        return self._finished(3, self.bound_k > 0, ", bound_k=k")


def row_stats(
    z: torch.Tensor,
    c: torch.Tensor,
    segment: int = 0,
    c2: torch.Tensor | None = None,
    moment: bool = False,
    *,
    finish: bool = False,
    bound_k: int = 0,
    arrivals: torch.Tensor | None = None,
    dependent: bool = False,
) -> RowStats:
    """Per (row, split) of z [rows, V]: the max m of z and Σ exp(c·(z − m)) over the split
    (and Σ exp(c2·(z − m)) with `c2`, Σ exp(y)·y with y = c·(z − m) with `moment`); with
    `segment` > 0 also the max of each `segment`-long piece of each row [rows, NSEG].

    With `finish` the same launch also combines the splits into per-row values (`RowStats`'
    properties; with `bound_k` > 0 the segment bound too), counting each row's programs on
    `arrivals` (int32 [rows], zero; zeroed here when not given), which it leaves at zero.
    With `dependent` (where `dependent_launch` allows it), the launch overlaps the end of
    the kernel before it."""
    rows, vocab = z.shape
    if bound_k > 0 and not (segment and finish):
        raise ValueError(f"bound_k={bound_k} needs segment > 0 and finish=True")
    splits = splits_for(rows, vocab, z.device)
    chunk = chunk_for(vocab, splits, BLOCK)
    maxes = torch.empty(rows, splits, device=z.device, dtype=torch.float32)
    sums = torch.empty_like(maxes)
    sums2 = None if c2 is None else torch.empty_like(maxes)
    moments = torch.empty_like(maxes) if moment else None
    nseg = cdiv(vocab, segment) if segment else 0
    segmax = torch.empty(rows, nseg, device=z.device, dtype=torch.float32) if segment else None
    per_row = torch.empty(4, rows, device=z.device, dtype=torch.float32) if finish else None
    if finish and arrivals is None:
        arrivals = torch.zeros(rows, device=z.device, dtype=torch.int32)
    _row_stats_kernel[(rows, splits)](
        z,
        c,
        c if c2 is None else c2,
        maxes,
        sums,
        sums if sums2 is None else sums2,
        sums if moments is None else moments,
        maxes if segmax is None else segmax,
        maxes if arrivals is None else arrivals,
        maxes if per_row is None else per_row,
        vocab,
        vocab,
        chunk,
        nseg,
        rows,
        bound_k,
        BLOCK=BLOCK,
        SEG=segment or BLOCK,
        SEGMENTS=segment > 0,
        TWO_SCALES=c2 is not None,
        MOMENT=moment,
        FINISH=finish,
        BOUND=bound_k > 0,
        SPLIT_BLOCK=pow2_at_least(splits, 2),
        SEG_BLOCK=pow2_at_least(nseg, 16) if bound_k > 0 else 16,
        DEPENDENT=dependent,
        launch_pdl=dependent,
        num_warps=4,
    )
    return RowStats(maxes, sums, sums2, segmax, moments, per_row, segment, bound_k)


# How `affine_q` cuts q below a floor (its FLOOR argument).
NO_FLOOR = tl.constexpr(0)
SCALED_FLOOR = tl.constexpr(1)  # keep c·z ≥ floor
TEMPERED_FLOOR = tl.constexpr(2)  # c holds τ; keep x ≥ floor, x = (z − max z)/τ


@triton.jit
def affine_q(z_ptr, offs, end, c, z_max, shift, floor, edge_code, edge_id, FLOOR: tl.constexpr,
             HEAD: tl.constexpr):  # fmt: skip
    """q_v = exp(c·(z_v − max z) − shift) for v in offs below `end` (else 0). With
    FLOOR = SCALED_FLOOR, 0 where c·z_v < floor. With FLOOR = TEMPERED_FLOOR, c is τ and
    q_v = exp(x_v − shift) on x_v ≥ floor, x_v = (z_v − max z)/τ rounded as an IEEE
    division: the tempered score the torch path computes, to the bit, so a cut on it keeps
    exactly the torch path's tokens. With HEAD, 0 on the head: tokens whose (code, id) is at
    or above the head's edge (higher z, or the edge's z and an id ≤ the edge's)."""
    z = load_logits(z_ptr + offs, offs < end)
    if FLOOR == TEMPERED_FLOOR:
        x = tl.math.div_rn(z - z_max, c)
        q = tl.where(x >= floor, tl.exp(x - shift), 0.0)
    else:
        q = tl.exp(c * (z - z_max) - shift)
        if FLOOR == SCALED_FLOOR:
            q = tl.where(z * c >= floor, q, 0.0)
    if HEAD:
        codes = code_of(z)
        in_head = (codes > edge_code) | ((codes == edge_code) & (offs <= edge_id))
        q = tl.where(in_head, 0.0, q)
    return q


def floor_mode(floor: torch.Tensor | None, tempered: bool) -> int:
    """The FLOOR argument of `affine_q` for a floor (or None) on c·z or on (z − max z)/τ."""
    if floor is None:
        return NO_FLOOR.value
    return (TEMPERED_FLOOR if tempered else SCALED_FLOOR).value


@kernel
def _exp_affine_kernel(
    z_ptr, c_ptr, m_ptr, shift_ptr, floor_ptr, edge_code_ptr, edge_id_ptr, q_ptr, V, CHUNK,
    BLOCK: tl.constexpr, FLOOR: tl.constexpr, HEAD: tl.constexpr,
):  # fmt: skip
    row, split, _ = program_position()
    c = tl.load(c_ptr + row)
    m = tl.load(m_ptr + row)
    shift = tl.load(shift_ptr + row)
    floor = tl.load(floor_ptr + row)
    edge_code = tl.load(edge_code_ptr + row) if HEAD else 0
    edge_id = tl.load(edge_id_ptr + row) if HEAD else 0
    base = row.to(tl.int64) * V
    begin, end = split_bounds(split, CHUNK, V)
    for start in range(begin, end, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        q = affine_q(z_ptr + base, offs, end, c, m, shift, floor, edge_code, edge_id, FLOOR,
                     HEAD)  # fmt: skip
        tl.store(q_ptr + base + offs, q, mask=offs < end)


def exp_affine(
    z: torch.Tensor,
    c: torch.Tensor,
    m: torch.Tensor,
    shift: torch.Tensor,
    floor: torch.Tensor | None = None,
    tempered: bool = False,
    head_edge: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> torch.Tensor:
    """q = exp(c·(z − m) − shift) per row of z [rows, V] (c, m, shift, floor: [rows]); with
    `floor`, q = 0 where c·z < floor. With `tempered`, c holds τ, q = exp(x − shift) and
    q = 0 where x < floor, for x = (z − m)/τ. With `head_edge` (code, id per row), q = 0 on
    the head above that edge (see `affine_q`)."""
    rows, vocab = z.shape
    splits = splits_for(rows, vocab, z.device)
    q = torch.empty_like(z)
    edge = (shift, shift) if head_edge is None else head_edge
    _exp_affine_kernel[(rows, splits)](
        z, c, m, shift, shift if floor is None else floor, *edge, q, vocab,
        chunk_for(vocab, splits, BLOCK), BLOCK=BLOCK, FLOOR=floor_mode(floor, tempered),
        HEAD=head_edge is not None, num_warps=4,
    )  # fmt: skip
    return q
