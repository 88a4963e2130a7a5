"""Shannon on a support that is a floor on the tempered score: min-p, epsilon, eta, top-k,
and top-k intersected with top-p or min-p.

On each of these supports q ∝ exp(x) on {x ≥ floor}, x = (z − max z)/τ:

- min-p keeps x ≥ log p;
- epsilon keeps x − log Σ exp(x) ≥ log ε and the most probable tokens, i.e.
  x ≥ min(log ε + log Σ exp(x), 0) (x ≤ 0, with 0 at the row's max);
- eta is epsilon with log ε replaced by min(log ε, ½·log ε − H), H the entropy of
  softmax(x), from the same pass's Σ exp(x)·x;
- top-k keeps x ≥ the k-th largest x, which is x of the k-th largest z (x is
  non-decreasing in z), found from the gathered candidates (`candidates.kth_largest`: one
  pass for the segment maxima, one to gather, one program per row) for k ≤ 1024 and
  V ≥ 16·k, else by `torch.topk`;
- an intersection keeps x ≥ the largest of its parts' floors. Top-p's floor, the x at which
  the cumulative mass (by decreasing x) first reaches p·Σ exp(x), is found among the top k
  when top-k is a part: a top-p cut below the k-th keeps all of top-k anyway. On the
  candidates' branch the same program-per-row bisects it over the gathered top k
  (`top_p.top_p_in_top_k`); on torch.topk's, a cumulative sum runs down the sorted list.

`*_terms` find max z and the floor per row; `floor_sample` then draws from exp(x) on the
floor in one read of z (`draw.draw_affine`, tempered), writing nothing of size [rows, V];
`floor_probs` writes q.

x is computed as the torch path does, (z − max z) then an IEEE division by τ (see
`streaming.affine_q`), so min-p and top-k keep exactly the tokens the float32 torch path
keeps, at the cut included. Top-p's masses inside top-k: on torch.topk's branch summed in
float64 from the same float32 weights as the torch path's, in another order; on the
candidates' branch, as top-p's own kernels sum them (float32 split sums of the kernels'
exp), so a token whose upper mass lies within float32 rounding of p·Σ may be in one
support and not the other. Epsilon's floor holds log Σ exp(x) from
split sums, which agrees with torch's log_softmax to float32 rounding (eta's entropy too):
a token within that rounding of the cut may be in one support and not the other.
"""

from __future__ import annotations

import torch

from .candidates import kth_largest, top_candidates
from .draw import Randomness, draw_affine, seeded_targets
from .streaming import cdiv, exp_affine, row_stats, segment_size
from .top_p import top_p_in_top_k

# The largest k whose floor comes from the gathered candidates (as Best-of-K's top-M); a
# larger k takes torch.topk.
KTH_FROM_CANDIDATES = 1024


def min_p_terms(
    flat: torch.Tensor, tau: torch.Tensor, log_p: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """max z and the floor log p, per row of flat [rows, V] (tau, log_p: float32 [rows])."""
    return row_stats(flat, 1.0 / tau, finish=True).z_max, log_p


def epsilon_terms(
    flat: torch.Tensor, tau: torch.Tensor, log_epsilon: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """max z and the floor min(log ε + log Σ exp(x), 0), per row of flat [rows, V]."""
    stats = row_stats(flat, 1.0 / tau, finish=True)
    return stats.z_max, torch.clamp(log_epsilon + stats.log_sum, max=0.0)


def eta_terms(
    flat: torch.Tensor, tau: torch.Tensor, log_epsilon: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """max z and the floor min(min(log ε, ½·log ε − H) + log Σ exp(x), 0), per row of flat
    [rows, V], H the entropy of softmax(x)."""
    stats = row_stats(flat, 1.0 / tau, moment=True, finish=True)
    cutoff = torch.minimum(log_epsilon, 0.5 * log_epsilon - stats.entropy)
    return stats.z_max, torch.clamp(cutoff + stats.log_sum, max=0.0)


def top_k_terms(
    flat: torch.Tensor,
    tau: torch.Tensor,
    k: torch.Tensor,
    k_max: int,
    may_hold_nan: bool,
    top_p: torch.Tensor | None = None,
    log_min_p: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """max z and the floor x(k-th largest z), per row of flat [rows, V] (k: int64 [rows],
    each ≤ k_max ≤ V), raised to top-p's cut (p: float32 [rows]) and/or min-p's floor
    (log p) for an intersection. The k-th largest z comes from the gathered candidates
    where they are cheap (k_max ≤ 1024, V ≥ 16·k_max), else from torch.topk.
    NaN counts as −inf, as the kernels read it; with `may_hold_nan` (unvalidated logits)
    the torch.topk branch masks it first, since torch.topk would rank it first."""
    vocab = flat.shape[-1]
    segment = segment_size(vocab, k_max)
    # Fewer segments than k_max (V < 16·k_max) would leave no bound: every row would take
    # the candidates' whole-row fallback.
    if k_max <= KTH_FROM_CANDIDATES and cdiv(vocab, segment) >= k_max:
        inv_tau = 1.0 / tau
        stats = row_stats(flat, inv_tau, segment=segment, finish=True, bound_k=k_max)
        z_max = stats.z_max
        candidates = top_candidates(flat, stats)
        z_floor = kth_largest(flat, k, candidates)
        if top_p is not None:
            z_floor = top_p_in_top_k(flat, inv_tau, top_p, stats, candidates, z_floor)
        floor = (z_floor - z_max) / tau  # as x_top below
        return z_max, floor if log_min_p is None else torch.maximum(floor, log_min_p)
    if may_hold_nan:
        flat = torch.where(flat == flat, flat, -torch.inf)
    top = torch.topk(flat, k_max, dim=-1).values
    z_max = top[:, 0].contiguous()  # kernels read [rows] vectors with stride 1
    x_top = (top - z_max[:, None]) / tau[:, None]  # descending; as the torch path's x
    floor = x_top.gather(-1, (k - 1)[:, None])[:, 0]
    if log_min_p is not None:
        floor = torch.maximum(floor, log_min_p)
    if top_p is not None:
        # The torch path's weights exp(x − max x) = exp(x), summed in float64.
        total = torch.exp((flat - z_max[:, None]) / tau[:, None]).sum(-1, dtype=torch.float64)
        mass = top_p.double().clamp_min(torch.finfo(torch.float64).tiny) * total
        # The first position whose cumulative mass reaches p·Σ: its x is the cut (a tie group
        # shares one x, so the whole group is kept wherever inside it the mass is reached).
        reached = torch.exp(x_top).double().cumsum(-1) >= mass[:, None]
        cut = x_top.gather(-1, reached.int().argmax(-1, keepdim=True))[:, 0]
        everything = (top_p >= 1) | ~reached.any(-1)
        floor = torch.maximum(floor, torch.where(everything, -torch.inf, cut))
    return z_max, floor


def floor_probs(
    flat: torch.Tensor, tau: torch.Tensor, z_max: torch.Tensor, floor: torch.Tensor
) -> torch.Tensor:
    """q ∝ exp(x) on x ≥ floor, per row of flat [rows, V] on CUDA, as float32."""
    q = exp_affine(flat, tau, z_max, torch.zeros_like(z_max), floor, tempered=True)
    return q / q.sum(-1, keepdim=True)


def floor_sample(
    flat: torch.Tensor,
    tau: torch.Tensor,
    z_max: torch.Tensor,
    floor: torch.Tensor,
    randomness: Randomness = None,
) -> torch.Tensor:
    """One token per row of flat drawn from `floor_probs(flat, tau, z_max, floor)`, without
    writing q."""
    seed, targets = seeded_targets(flat.shape[0], flat.device, randomness)
    shift = torch.zeros_like(z_max)
    return draw_affine(flat, tau, z_max, shift, seed, targets, floor=floor, tempered=True)
