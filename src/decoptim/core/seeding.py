"""One seed for every source of randomness decoptim's samplers draw from."""

from __future__ import annotations

import operator
import sys

import torch


def manual_seed(seed: int) -> None:
    """Seed torch's generators (eager sampling draws its seeds from them) and restart the
    seed streams that sampling inside CUDA graphs draws from (`torch.manual_seed` does not
    reach those): after `manual_seed(s)`, eager calls and graph replays repeat what they
    drew after an earlier `manual_seed(s)`."""
    try:
        if isinstance(seed, bool):
            raise TypeError
        seed = operator.index(seed)  # ints, and integer types such as numpy's
    except TypeError:
        raise TypeError(f"seed must be an int, got seed={seed!r}") from None
    torch.manual_seed(seed)
    draw = sys.modules.get("decoptim.core.kernels.draw")  # no streams unless it was imported
    if draw is not None:
        draw.restart_graph_seed_streams(seed)
