"""Coordinated K-sample decoding in vLLM (see decoptim.core.coordinated and docs/vllm.md).

vLLM runs the n samples of a request as n child requests, and a logits processor sees no
sibling ids. Arithmetic codes need only (group seed, index i, K) per sample, and vLLM gives
child i of a request with seed S the seed S + i. So a request opts in with two keys next
to its decoder,

    extra_args = {"decoptim": "topp:p=0.9",
                  "decoptim_group_size": K, "decoptim_group_seed": S}

(flat values: the OpenAI server's `vllm_xargs` takes them as they are) and `seed = S`:
with `n = K` the K children are the K samples of one group; K requests with `n = 1` and
seeds S, S + 1, ..., S + K − 1 form the same group. `coordinated_sampling_params` builds
them.

Each sample's code is kept per batch row and keyed by the number of tokens the request has
accepted: a draw whose token vLLM discards (the last chunk of a chunked prefill samples and
throws its token away) leaves the code for that step in place, so the accepted tokens use
each code once, in order. A request that joins with tokens already generated (resumed
after preemption) starts fresh codes at that step: its samples stay exact, but it is no
longer stratified against its group.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from ..core.checks import shown
from ..core.coordinated import (
    Codes,
    coordinated_sample,
    group_seeds,
    resumed_codes,
    start_codes,
)
from ..core.specs import DecoderSpec, parse_spec

GROUP_SIZE_KEY = "decoptim_group_size"
GROUP_SEED_KEY = "decoptim_group_seed"
GROUP_KEYS = (GROUP_SIZE_KEY, GROUP_SEED_KEY)
# A group's rows are forced tokens chosen together; the bound keeps a request's fan-out sane.
MAX_GROUP_SIZE = 4096
MAX_SEED = 2**62


@dataclass(frozen=True)
class Membership:
    """A sample's place in its group: K, the group's seed and its index i < K."""

    size: int
    seed: int
    index: int


def request_membership(params) -> Membership | None:
    """The sample's group from `SamplingParams` (None without group keys); ValueError
    names a bad field. The request's `seed` must be the group seed plus its index, which
    vLLM's children of a request with `n = K` and `seed = S` are."""
    extra = params.extra_args or {}
    present = [key for key in GROUP_KEYS if key in extra]
    if not present:
        return None
    if len(present) == 1:
        missing = GROUP_KEYS[1 - GROUP_KEYS.index(present[0])]
        raise ValueError(f"extra_args[{present[0]!r}] needs extra_args[{missing!r}] as well")
    size, seed = extra[GROUP_SIZE_KEY], extra[GROUP_SEED_KEY]
    if isinstance(size, bool) or not isinstance(size, int) or not 1 <= size <= MAX_GROUP_SIZE:
        raise ValueError(
            f"extra_args[{GROUP_SIZE_KEY!r}] must be an int in [1, {MAX_GROUP_SIZE}], got "
            f"{shown(size)}"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < MAX_SEED:
        raise ValueError(
            f"extra_args[{GROUP_SEED_KEY!r}] must be an int in [0, 2**62), got {shown(seed)}"
        )
    if params.seed is None:
        raise ValueError(
            f"a coordinated request needs seed={seed} (its group seed; vLLM gives the n "
            f"samples of the request seeds {seed}, {seed} + 1, ...), got seed=None"
        )
    index = params.seed - seed
    n = params.n or 1
    if not index >= 0 or index + n > size:
        raise ValueError(
            f"seed={params.seed} with n={n} gives samples {index}..{index + n - 1} of a group "
            f"of {GROUP_SIZE_KEY}={size} with {GROUP_SEED_KEY}={seed}: use seed = "
            f"{GROUP_SEED_KEY} + i with 0 <= i and i + n <= {size}"
        )
    return Membership(size, seed, index)


def coordinated_extra_args(spec: DecoderSpec | str | Mapping[str, object], size: int,
                           seed: int) -> dict:  # fmt: skip
    """`extra_args` for the samples of one group of `size` with group seed `seed`; pair
    them with `SamplingParams(seed=seed, n=size, ...)`."""
    from .vllm import decoptim_extra_args

    return {**decoptim_extra_args(spec), GROUP_SIZE_KEY: size, GROUP_SEED_KEY: seed}


def coordinated_sampling_params(
    spec: DecoderSpec | str,
    temperature: float,
    n: int,
    group_size: int,
    seed: int,
    first_group: int,
    **fields: object,
) -> list:
    """One `SamplingParams` (n = 1) per sample of a prompt's n samples, group-major: n /
    group_size groups, group g numbered first_group + g with the seed
    `group_seeds(seed, first_group + g)`, as `generate(coordinated=True)` numbers them."""
    from vllm import SamplingParams

    if isinstance(spec, str):
        spec = parse_spec(spec)
    for name, value in (("n", n), ("group_size", group_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {name}={value!r}")
    if n % group_size:
        raise ValueError(f"n={n} is not a multiple of group_size={group_size}")
    ids = torch.arange(first_group, first_group + n // group_size)
    seeds = group_seeds(seed, ids).tolist()
    return [
        SamplingParams(
            n=1,
            temperature=temperature,
            seed=group_seed + i,
            extra_args=coordinated_extra_args(spec, group_size, group_seed),
            **fields,
        )
        for group_seed in seeds
        for i in range(group_size)
    ]


@dataclass
class _Slot:
    """A coordinated row of the batch, host-side: its request's membership, vLLM's list of
    the tokens it has accepted (it grows as the request runs), and the step its current
    code is for."""

    membership: Membership
    outputs: list[int]
    step: int


class CodeBook:
    """The codes of the coordinated rows of vLLM's persistent batch, on its device.

    Per batch slot, host-side a `_Slot`; on the device the slot's group seed and index, its
    current code (for step s) and the code its last draw produced (for step s + 1). A step
    compares how many tokens each row has accepted with s to pick one of the two, draws,
    and stores the new codes: one host-to-device copy per step, no host sync.
    """

    def __init__(self, device: torch.device):
        self.device = device
        self.slots: dict[int, _Slot] = {}
        self.current = torch.zeros(0, dtype=torch.float64, device=device)
        self.following = torch.zeros(0, dtype=torch.float64, device=device)
        self.seed = torch.zeros(0, dtype=torch.int64, device=device)
        self.index = torch.zeros(0, dtype=torch.int64, device=device)

    def add(self, row: int, membership: Membership, outputs: list[int]) -> None:
        self._grow(row + 1)
        step = len(outputs)
        seed, index = torch.tensor([membership.seed]), torch.tensor([membership.index])
        if step:  # joined late (resumed): a fresh uniform code for this step
            value = resumed_codes(seed, index, step).value
        else:
            value = start_codes(seed, index, membership.size).value
        self.current[row] = value.to(self.device)[0]
        self.seed[row], self.index[row] = membership.seed, membership.index
        self.slots[row] = _Slot(membership, outputs, step)

    def remove(self, row: int) -> None:
        self.slots.pop(row, None)

    def move(self, source: int, target: int, swap: bool) -> None:
        if source not in self.slots and target not in self.slots:
            return  # neither row is coordinated: no code to carry, no kernel to launch
        self._grow(max(source, target) + 1)
        moving, staying = self.slots.pop(source, None), self.slots.pop(target, None)
        for tensor in self._device_state():
            values = tensor[[source, target]].clone()
            tensor[target] = values[0]
            if swap:
                tensor[source] = values[1]
        if moving is not None:
            self.slots[target] = moving
        if swap and staying is not None:
            self.slots[source] = staying

    def draw(self, rows: list[int], q: torch.Tensor) -> torch.Tensor:
        """Tokens for batch `rows` (whose q is given row for row), advancing their codes.

        A row whose request accepted its last draw moves on to the code that draw left; a
        row whose last draw was discarded (same count) draws again with the same code; a
        row that accepted tokens it was not drawn for (several at once) gets a fresh code."""
        took, steps = [], []
        # Stays a loop: the counts exist only as len() of vLLM's per-request Python lists.
        for row in rows:
            slot = self.slots[row]
            accepted = len(slot.outputs)
            if accepted > slot.step + 1:
                self.add(row, slot.membership, slot.outputs)
                slot = self.slots[row]
            took.append(int(accepted == slot.step + 1))
            steps.append(accepted)
            slot.step = accepted
        host = torch.tensor([rows, took, steps], dtype=torch.int64)  # one copy to the device
        index, took_code, step = host.to(self.device, non_blocking=True)
        value = torch.where(took_code.bool(), self.following[index], self.current[index])
        codes = Codes(value, self.seed[index], self.index[index], step)
        tokens, following = coordinated_sample(q, codes, validate=False)
        self.current[index] = value
        self.following[index] = following.value
        return tokens

    def _device_state(self) -> tuple[torch.Tensor, ...]:
        return self.current, self.following, self.seed, self.index

    def _grow(self, size: int) -> None:
        if size <= self.current.numel():
            return
        extra = max(size, 2 * self.current.numel()) - self.current.numel()
        self.current, self.following, self.seed, self.index = (
            torch.cat([tensor, tensor.new_zeros(extra)]) for tensor in self._device_state()
        )
