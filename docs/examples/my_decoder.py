"""A decoder of one's own: softmax on the k most likely tokens within `width` of the best."""

import torch

import decoptim as d


class Band(d.Support):  # a new support: tempered logits x (max x = 0) within `width` of the max
    def __init__(self, width: float):
        self.width = width

    def _mask(self, x: torch.Tensor) -> torch.Tensor:
        return x >= -self.width


def mine(temperature: float = 1.0, k: int = 5, width: float = 3.0) -> d.Decoder:
    return d.SimplexDecoder(d.Shannon(), d.TopKSupport(k) & Band(width), temperature)


d.register_decoder("mine", mine)
