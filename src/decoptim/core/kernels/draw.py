"""The draw every sampling kernel ends with: inverse transform sampling over block sums.

q is read from memory (`draw_from_probs`) or computed from z in registers: an affine
closed form exp(c·(z − max z) − shift), optionally on a floor or off a head (top-p,
typical, the floor routes, Best-of-K top-M's tail: `draw_affine`), Best-of-K w = p's tail
(`draw_prob_tail`), or raw logits exp(c·z) (softmax: `draw_from_logits`). Sparsemax and
entmax draw from the candidates that their solve holds in registers instead, with the same
`uniforms.pick` (`tsallis.tsallis_sample`).

A row is cut into blocks of BLOCK tokens. The row's programs stream it block by block and
store each block's mass Σ q (for raw logits also the block's max z, which that mass is
relative to: no row max is needed first). The row's last program to finish then
1. picks a block: the first whose float64 running sum of block masses exceeds u₁·Σ;
2. reloads that block and picks the token the same way, with u₂, over its q.

So a draw reads the row once, with one exp per token and no random number per token (an
exponential race spends a Philox word and a log on every token), and writes nothing of size
[rows, V]; u₁ and u₂ are 53-bit uniforms from one Philox call per row.

Exactness: token v of block b comes up with probability (m_b / Σ m)·(q_v / Σ_{w∈b} q_w),
where m_b is the float32 sum of the same float32 q that step 2 sums in float64: q_v / Σ q up
to float32 rounding of q_v and of a BLOCK-term sum, for every token whose mass is above the
uniforms' grain, 2⁻⁵³ of its block's (and of the row's) mass. A token of weight 0 is never
drawn, not even when u·Σ rounds up to Σ.

A coordinated draw (`CodedDraw`, see `decoptim.core.coordinated`) takes each row's code in
place of u₁ and u₂: the block whose bucket holds code·Σ (float64 block sums, as the torch
path's), then the token whose bucket holds the code's place inside the block, and the next
code is that place inside the token's bucket, refilled below its grain with the torch
path's hashed bits. So a coordinated sample reads q's closed form as a plain one does.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import triton
import triton.language as tl

from ..coordinated import Codes
from .bok_terms import tail_q
from .launch import kernel
from .streaming import (
    affine_q,
    cdiv,
    chunk_for,
    finite_or_zero,
    floor_mode,
    load_logits,
    pow2_at_least,
    program_position,
    split_bounds,
    splits_for,
)
from .uniforms import REDRAW, REFILL, TWO_POW_M52, next_code, philox_uniforms, pick

BLOCK = 2048
SEED_BLOCK = 1024  # counters a seed launch's program zeroes
PER_SM = 8  # programs per SM the grid aims at
WARPS = 4  # with PER_SM and BLOCK, the fastest of a sweep on an H200 (B = 64 and 256)

# What the draw's q is: read from memory, `streaming.affine_q` of z, exp(c·z) of raw
# logits (blocks relative to their own max z), or Best-of-K w = p's tail (`bok_terms.tail_q`)
# on rows whose token is −1 and q read from memory on rows whose token is OVERFLOWED.
WRITTEN = tl.constexpr(0)
AFFINE = tl.constexpr(1)
LOGITS = tl.constexpr(2)
COVERAGE = tl.constexpr(3)
# A row's token before a COVERAGE draw: its q is written in full, not in closed form.
OVERFLOWED = tl.constexpr(-2)


@triton.jit
def _block_q(x_ptr, offs, end, c, z_max, shift, floor, edge_code, edge_id, terms_ptr,
             written_ptr, row, overflowed, MODE: tl.constexpr, FLOOR: tl.constexpr,
             HEAD: tl.constexpr, FIRST_STEP: tl.constexpr):  # fmt: skip
    # One block's q (0 past `end`), and with LOGITS the block's max z that q is relative to.
    if MODE == COVERAGE:
        if overflowed:
            q = tl.load(written_ptr + offs, mask=offs < end, other=0.0)
        else:
            q = tail_q(load_logits(x_ptr + offs, offs < end), terms_ptr, row, FIRST_STEP)
        return q, 0.0
    if MODE == LOGITS:
        z = load_logits(x_ptr + offs, offs < end)
        top = tl.max(z, axis=0)
        # 1 at the max itself, also where it is +inf; exp(−inf) = 0 below it.
        q = tl.where(z == top, 1.0, tl.exp(c * (z - finite_or_zero(top))))
        return tl.where(z > -float("inf"), q, 0.0), top
    if MODE == WRITTEN:
        q = tl.load(x_ptr + offs, mask=offs < end, other=0.0)
    else:
        q = affine_q(x_ptr, offs, end, c, z_max, shift, floor, edge_code, edge_id, FLOOR, HEAD)
    return q, 0.0


@kernel
def _draw_kernel(x_ptr, c_ptr, zmax_ptr, shift_ptr, floor_ptr, edge_code_ptr, edge_id_ptr,
                 terms_ptr, written_ptr, seed_ptr, code_ptr, group_ptr, index_ptr, step_ptr,
                 next_code_ptr, code_scale_ptr, mass_ptr, top_ptr, arrivals_ptr, out_ptr, V,
                 CHUNK, BLOCKS,
                 BLOCK: tl.constexpr, BLOCKS_POW2: tl.constexpr, MODE: tl.constexpr,
                 FLOOR: tl.constexpr, HEAD: tl.constexpr, PENDING: tl.constexpr,
                 CODED: tl.constexpr, SCALED: tl.constexpr, DRAWS: tl.constexpr,
                 CHAINED: tl.constexpr, FIRST_STEP: tl.constexpr):  # fmt: skip
    # With PENDING, rows whose token is already drawn (out[row] ≥ 0) do nothing. With CODED
    # the row's code (code, group seed, index, step) replaces the Philox uniforms, block
    # masses are float64 sums, and the row's next code goes to next_code[row]; with SCALED
    # the code's refill grain is code_scale[row] times this draw's (a code remapped onto a
    # tail). DRAWS > 1: that many tokens per row, out[row, :]: independent (Philox), or
    # CHAINED (codes) as `coordinated.coordinated_sample_in_set`'s picks, each from the code
    # the one before passes on: next_code[row, :DRAWS] holds each pick's next code,
    # next_code[row, DRAWS] the code the last passes on. COVERAGE: terms_ptr holds the rows'
    # `bok_terms` and written_ptr the q of rows whose token is OVERFLOWED.
    row, split, splits = program_position()
    marker = tl.load(out_ptr + row) if PENDING else 0
    pending = marker < 0 if PENDING else True
    if pending:
        # Only the parameters this mode reads are loaded: the others' pointers may be anything.
        c = tl.load(c_ptr + row) if (MODE == AFFINE) | (MODE == LOGITS) else 0.0
        z_max = tl.load(zmax_ptr + row) if MODE == AFFINE else 0.0
        shift = tl.load(shift_ptr + row) if MODE == AFFINE else 0.0
        floor = tl.load(floor_ptr + row) if MODE == AFFINE else 0.0
        edge_code = tl.load(edge_code_ptr + row) if HEAD else 0
        edge_id = tl.load(edge_id_ptr + row) if HEAD else 0
        base = x_ptr + row.to(tl.int64) * V
        written = written_ptr + row.to(tl.int64) * V
        overflowed = marker == OVERFLOWED
        lane = tl.arange(0, BLOCK)
        begin, end = split_bounds(split, CHUNK, V)
        for start in range(begin, end, BLOCK):
            q, top = _block_q(base, start + lane, end, c, z_max, shift, floor, edge_code,
                              edge_id, terms_ptr, written, row, overflowed, MODE, FLOOR, HEAD,
                              FIRST_STEP)  # fmt: skip
            slot = row * BLOCKS + start // BLOCK
            tl.store(mass_ptr + slot, tl.sum(q.to(tl.float64) if CODED else q, axis=0))
            if MODE == LOGITS:
                tl.store(top_ptr + slot, top)
        # The barrier and the count's release put this program's stores before its
        # arrival; the last program's acquire puts its loads after every arrival. ".cg"
        # reads from L2, past any stale line in this SM's L1.
        tl.debug_barrier()
        if tl.atomic_add(arrivals_ptr + row, 1, sem="acq_rel", scope="gpu") == splits - 1:
            blocks = tl.arange(0, BLOCKS_POW2)
            present = blocks < BLOCKS
            mass = tl.load(mass_ptr + row * BLOCKS + blocks, mask=present, other=0.0,
                           cache_modifier=".cg")  # fmt: skip
            if MODE == LOGITS:
                tops = tl.load(top_ptr + row * BLOCKS + blocks, mask=present,
                               other=-float("inf"), cache_modifier=".cg")  # fmt: skip
                row_top = tl.max(tops, axis=0)
                weight = tl.exp(c * (tops - finite_or_zero(row_top)))
                mass = tl.where(tops == row_top, mass, mass * weight)
            total = tl.sum(mass.to(tl.float64), axis=0)
            code = tl.load(code_ptr + row) if CODED else 0.0
            for draw in tl.static_range(DRAWS):
                if CODED:
                    target = code * total
                else:
                    first, second = philox_uniforms(seed_ptr, row * DRAWS + draw)
                    target = first * total
                block, before, block_mass = pick(mass, blocks, target)
                start = block * BLOCK
                q, _ = _block_q(base, start + lane, tl.minimum(start + BLOCK, V), c, z_max,
                                shift, floor, edge_code, edge_id, terms_ptr, written, row,
                                overflowed, MODE, FLOOR, HEAD, FIRST_STEP)  # fmt: skip
                in_block = tl.sum(q.to(tl.float64), axis=0)
                # The target's place inside the block's bucket, mapped onto the block's own
                # sums (a code's); a fresh uniform (Philox's).
                position = tl.minimum((target - before) / block_mass, 1.0) if CODED else second
                token, low, width = pick(q, lane, position * in_block)
                tl.store(out_ptr + row * DRAWS + draw, (start + token).to(tl.int64))
                if CODED:
                    grain = TWO_POW_M52 * total * in_block / (width * block_mass)
                    if SCALED:
                        grain *= tl.load(code_scale_ptr + row)
                    place = position * in_block
                    code_slot = next_code_ptr + row * (DRAWS + CHAINED) + draw
                    tl.store(code_slot, next_code(place, low, width, grain, group_ptr,
                                                  index_ptr, step_ptr, row, REFILL))  # fmt: skip
                    if CHAINED:
                        # The code this pick passes on if its token is rejected
                        # (`coordinated.coordinated_sample_in_set`); after the last pick,
                        # for the draw at the set's edge.
                        code = next_code(place, low, width, grain, group_ptr, index_ptr,
                                         step_ptr, row, REDRAW + draw)  # fmt: skip
                        if draw == DRAWS - 1:
                            tl.store(code_slot + 1, code)


class CodedDraw(NamedTuple):
    """A coordinated draw's randomness (`decoptim.core.coordinated`) in place of Philox's:
    per row its code (float64), group seed, index and step (int64), flat on the device, and
    the buffer the draw writes each row's next code to. `by_rejection`: top-p and typical
    pick from softmax's buckets and keep a token inside their set
    (`coordinated.coordinated_sample_in_set`) instead of picking over q's."""

    value: torch.Tensor
    seed: torch.Tensor
    index: torch.Tensor
    step: torch.Tensor
    next_value: torch.Tensor
    by_rejection: bool = False

    @classmethod
    def of(cls, codes: Codes, device: torch.device, by_rejection: bool = False) -> CodedDraw:
        value, seed, index, step = (part.reshape(-1).to(device).contiguous() for part in codes)
        return cls(value, seed, index, step, torch.empty_like(value), by_rejection)

    def next_codes(self, shape: torch.Size) -> Codes:
        """The codes after this draw, in the samples' shape."""
        parts = (self.next_value, self.seed, self.index, self.step + 1)
        return Codes(*(part.reshape(shape) for part in parts))


Randomness = torch.Generator | CodedDraw | None


def randomness_args(source: torch.Tensor | CodedDraw | None, filler: torch.Tensor) -> tuple:
    """The six randomness arguments of a sampling kernel, in order: the Philox seed tensor,
    then a code, its group seed, index and step, and where the next code goes. `source` is
    `draw_seed`'s result (or None when the kernel does not sample); `filler`, any tensor,
    stands in the places the kernel does not read."""
    if isinstance(source, CodedDraw):
        return (filler, source.value, source.seed, source.index, source.step, source.next_value)
    return (filler if source is None else source,) + (filler,) * 5


def draw_seed(
    device: torch.device, randomness: Randomness, clear: torch.Tensor | None = None
) -> torch.Tensor | CodedDraw:
    """The draw's source of randomness: two Philox seeds in a device tensor (the draw uses
    the first, Best-of-K's head the second), so that nothing waits on the host; or the codes
    of a coordinated draw. `clear` (int32, optional): arrival counters to zero as well.

    Seeds come from `randomness` (a generator, or torch's default one when None) through
    `torch.randint`, so seeded draws repeat. Inside a CUDA graph capture with the default
    generator they come from the device's `graph_seed_stream` instead (see there), once an
    eager call on that device has made it: the counters are zeroed in the same launch."""
    if isinstance(randomness, CodedDraw):
        source = randomness
    else:
        if randomness is None and device.type == "cuda":
            if not torch.cuda.is_current_stream_capturing():
                graph_seed_stream(device)  # made here, outside any capture, for those to come
            elif (stream := _graph_seed_streams.get(_device_index(device))) is not None:
                return next_graph_seeds(stream, clear)
        source = torch.randint(0, 2**31 - 1, (2,), device=device, generator=randomness)
    if clear is not None:
        clear.zero_()
    return source


# Seeds inside CUDA graphs. `torch.randint` in a capture registers torch's generator with
# the graph, and each replay then launches kernels from the host to set the generator's
# seed and offset: on an H200 that put about 16 µs on every replayed softmax step
# (performance.md, "Where a replayed softmax step's time goes"). A counter of our own on the
# device, advanced by the kernel that reads it, gives each replay fresh seeds without them.
_graph_seed_streams: dict[int, torch.Tensor] = {}


def _device_index(device: torch.device) -> int:
    return torch.cuda.current_device() if device.index is None else device.index


def graph_seed_key(seed: int, index: int) -> int:
    """The Philox key of device `index`'s graph seed stream started at `seed`."""
    return (seed * 0x9E3779B97F4A7C15 + index) % 2**63


def graph_seed_stream(device: torch.device) -> torch.Tensor:
    """The device's seed stream for CUDA graphs: int64 [Philox key, seeds handed out],
    made on first use (outside a capture) with a key from the default generator's initial
    seed, which it does not advance. Replays of any graph on the device share it: each
    takes the next count, so no two draw the same seeds. `torch.manual_seed` does not
    reach it; `decoptim.manual_seed` restarts it (`restart_graph_seed_streams`)."""
    index = _device_index(device)
    stream = _graph_seed_streams.get(index)
    if stream is None:
        seed = torch.cuda.default_generators[index].initial_seed()
        stream = torch.zeros(2, dtype=torch.int64, device=torch.device("cuda", index))
        stream[0] = graph_seed_key(seed, index)
        _graph_seed_streams[index] = stream
    return stream


def restart_graph_seed_streams(seed: int) -> None:
    """Start every device's graph seed stream again at `seed` (its key, count 0), in place:
    graphs captured already read the same tensor, so their next replays repeat the seeds
    they drew after the stream was made at `seed`."""
    for index, stream in _graph_seed_streams.items():
        stream.copy_(torch.tensor([graph_seed_key(seed, index), 0], dtype=torch.int64))


@kernel
def _next_seeds_kernel(stream_ptr, seeds_ptr, clear_ptr, count, CLEAR: tl.constexpr,
                       BLOCK: tl.constexpr):  # fmt: skip
    # Program 0 takes the stream's next count (atomically: graphs replayed on several CUDA
    # streams at once still take distinct counts) and writes Philox's first two words for
    # it; with CLEAR every program zeroes its block of `count` int32 counters.
    block = tl.program_id(0)
    if block == 0:
        taken = tl.atomic_add(stream_ptr + 1, 1)
        words = tl.randint4x(tl.load(stream_ptr), taken)
        tl.store(seeds_ptr, words[0].to(tl.int64))
        tl.store(seeds_ptr + 1, words[1].to(tl.int64))
    if CLEAR:
        offs = block * BLOCK + tl.arange(0, BLOCK)
        tl.store(clear_ptr + offs, tl.zeros((BLOCK,), tl.int32), mask=offs < count)


def next_graph_seeds(stream: torch.Tensor, clear: torch.Tensor | None = None) -> torch.Tensor:
    """Two seeds (int64 [2]) from `stream` (`graph_seed_stream`'s layout), advancing it by
    one, in one launch that also zeroes `clear` (int32) where given."""
    seeds = torch.empty(2, dtype=torch.int64, device=stream.device)
    count = 1 if clear is None else clear.numel()
    _next_seeds_kernel[(cdiv(count, SEED_BLOCK),)](
        stream, seeds, seeds if clear is None else clear, count, CLEAR=clear is not None,
        BLOCK=SEED_BLOCK,
    )  # fmt: skip
    return seeds


def seeded_targets(
    rows: int, device: torch.device, randomness: Randomness
) -> tuple[torch.Tensor | CodedDraw, tuple[torch.Tensor, torch.Tensor]]:
    """`draw_seed`'s source and `draw_targets` zeroed, for a draw that starts the step."""
    targets = draw_targets(rows, device)
    return draw_seed(device, randomness, clear=targets[1]), targets


def draw_targets(rows: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """The tokens a draw writes (int64 [rows]) and its arrival counters (int32 [rows]), which
    must be zero when the draw starts: by `seeded_targets`, or by the per-row kernel that
    runs before `draw_affine` (top-p's solve, Best-of-K's head)."""
    return (
        torch.empty(rows, device=device, dtype=torch.int64),
        torch.empty(rows, device=device, dtype=torch.int32),
    )


def _launch(x: torch.Tensor, params: tuple[torch.Tensor, ...], source: torch.Tensor | CodedDraw,
            targets: tuple[torch.Tensor, torch.Tensor], mode: int, floor: int = 0,
            head: bool = False, pending: bool = False, code_scale: torch.Tensor | None = None,
            draws: int = 1, coverage: tuple[torch.Tensor, torch.Tensor] | None = None,
            first_step: bool = False) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    # The grid (about PER_SM programs per SM, each over whole blocks), the per-block masses
    # (float64 for codes; and the blocks' maxima, for raw logits), one launch. Returns the
    # tokens and the blocks' maxima [rows, blocks] (raw logits only; else the masses).
    # `coverage`: COVERAGE's row terms and written q.
    rows, vocab = x.shape
    splits = splits_for(rows, vocab, x.device, per_sm=PER_SM, block=BLOCK)
    blocks = cdiv(vocab, BLOCK)
    coded = isinstance(source, CodedDraw)
    mass_type = torch.float64 if coded else torch.float32
    mass = torch.empty(rows, blocks, device=x.device, dtype=mass_type)
    tops = torch.empty(rows, blocks, device=x.device) if mode == LOGITS.value else mass
    tokens, arrivals = targets
    _draw_kernel[(rows, splits)](
        x, *params, *(coverage or (mass, mass)), *randomness_args(source, mass),
        mass if code_scale is None else code_scale, mass, tops, arrivals, tokens, vocab,
        chunk_for(vocab, splits, BLOCK), blocks, BLOCK=BLOCK,
        BLOCKS_POW2=pow2_at_least(blocks, 16), MODE=mode, FLOOR=floor, HEAD=head,
        PENDING=head or pending, CODED=coded, SCALED=code_scale is not None, DRAWS=draws,
        CHAINED=coded and draws > 1, FIRST_STEP=first_step, num_warps=WARPS,
    )  # fmt: skip
    return tokens, tops


def draw_from_probs(q: torch.Tensor, randomness: Randomness = None) -> torch.Tensor:
    """One index per row of q ([..., V], CUDA, ≥ 0, any positive scale), distributed as q."""
    flat = q.reshape(-1, q.shape[-1]).float().contiguous()
    source, targets = seeded_targets(flat.shape[0], q.device, randomness)
    tokens, _ = _launch(flat, (flat,) * 6, source, targets, WRITTEN.value)
    return tokens.reshape(q.shape[:-1])


def draw_coordinated(q: torch.Tensor, codes: Codes) -> tuple[torch.Tensor, Codes]:
    """`coordinated.coordinated_sample` for q with one row per sample ([..., V], float32 on
    CUDA): the tokens and the next codes. Its sums are float64 as the torch path's, in
    another order (V·2⁻⁵² of the mass at most), so the tokens agree unless a code falls that
    close to a bucket's edge."""
    source = CodedDraw.of(codes, q.device)
    tokens = draw_from_probs(q, source)
    return tokens.reshape(codes.value.shape), source.next_codes(codes.value.shape)


def draw_affine(
    z: torch.Tensor,
    c: torch.Tensor,
    z_max: torch.Tensor,
    shift: torch.Tensor,
    source: torch.Tensor | CodedDraw,
    targets: tuple[torch.Tensor, torch.Tensor],
    floor: torch.Tensor | None = None,
    head_edge: tuple[torch.Tensor, torch.Tensor] | None = None,
    tempered: bool = False,
    code_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """One token per row of z [rows, V] from q ∝ exp(c·(z − z_max) − shift) ([rows] each),
    with the randomness `source` from `draw_seed`: with `floor`, only over c·z ≥ floor (with
    `tempered`, c holds τ and the floor is on (z − z_max)/τ, see `streaming.affine_q`); with
    `head_edge` (code, id per row), only over the tail below that edge and only on rows
    whose token (in `targets`) is still −1. `code_scale` (float64 [rows], with a coded
    `source` whose codes were remapped onto this draw's q from a row holding more, as
    Best-of-K's head does): Σ_row / Σ q, so that the next codes' refill grain is the
    row's."""
    edge = (shift, shift) if head_edge is None else head_edge
    params = (c, z_max, shift, shift if floor is None else floor, *edge)
    return _launch(z, params, source, targets, AFFINE.value, floor_mode(floor, tempered),
                   head_edge is not None, code_scale=code_scale)[0]  # fmt: skip


def draw_from_logits(
    z: torch.Tensor, c: torch.Tensor, randomness: Randomness = None
) -> torch.Tensor:
    """One token per row of z [rows, V] (CUDA, float32) from q ∝ exp(c·z) (c: float32
    [rows], > 0), reading z once: no max z first, nothing of size [rows, V] written. NaN
    logits count as −inf."""
    source, targets = seeded_targets(z.shape[0], z.device, randomness)
    return _launch(z, (c,) * 6, source, targets, LOGITS.value)[0]


def draw_many_from_logits(
    z: torch.Tensor,
    c: torch.Tensor,
    source: torch.Tensor | CodedDraw,
    arrivals: torch.Tensor,
    draws: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """`draws` tokens per row of z [rows, V] from q ∝ exp(c·z), as `draw_from_logits` draws
    one, and zeroed `arrivals` (int32 [rows]): independent from a Philox seed (`draw_seed`'s),
    or from a `CodedDraw` whose next_value is float64 [rows, draws + 1], picks chained as
    `coordinated.coordinated_sample_in_set` chains them (each pick's next code and, last,
    the code the last pick passes on go to next_value). Returns the tokens [rows, draws] and
    each row's block maxima [rows, blocks] (their max is the row's max z, −inf on a row with
    nothing finite)."""
    tokens = torch.empty(z.shape[0], draws, device=z.device, dtype=torch.int64)
    return _launch(z, (c,) * 6, source, (tokens, arrivals), LOGITS.value, draws=draws)


def draw_prob_tail(
    z: torch.Tensor,
    terms: torch.Tensor,
    written: torch.Tensor,
    source: torch.Tensor | CodedDraw,
    targets: tuple[torch.Tensor, torch.Tensor],
    first_step: bool,
    code_scale: torch.Tensor | None = None,
) -> torch.Tensor:
    """Best-of-K w = p's draw (`bok_prob.bok_prob_sample`) on the rows its head left: over
    the tail's closed form (`bok_terms.tail_q`, from `terms`, float32 [rows, ROW_TERMS]) on
    rows whose token in `targets` is −1, over `written` q on rows marked OVERFLOWED.
    `first_step`: the tail of a single mirror step. `code_scale`: as in `draw_affine`."""
    return _launch(z, (terms,) * 6, source, targets, COVERAGE.value, pending=True,
                   code_scale=code_scale, coverage=(terms, written),
                   first_step=first_step)[0]  # fmt: skip
