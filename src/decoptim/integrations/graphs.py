"""A decode step replayed as a CUDA graph.

At language-model batch sizes a decoder's step on the GPU is mostly host time: a handful of
kernel launches, each with its Python work (docs/performance.md). Captured once per input
shape and replayed, the step costs one graph launch plus copying the logits in and the
result out, and runs the very same kernels.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch import Tensor


class _Captured(NamedTuple):
    graph: torch.cuda.CUDAGraph
    input: Tensor
    output: Tensor


class GraphedStep:
    """`step(x)`, captured as a CUDA graph per (shape, dtype, device) of x and replayed.

    `step` must be capturable: no host syncs and the same kernels for every input of a
    shape. One that syncs (found by an eager run in torch's sync-debug "error" mode) or
    fails to capture warns once and runs eagerly from then on. Each call
    copies x into the graph's input buffer and returns a copy of its output, so results
    stay valid across calls. CPU inputs run `step` directly. At most `max_graphs` shapes
    are kept (least recently used first out).
    """

    def __init__(self, step: Callable[[Tensor], Tensor], max_graphs: int = 4):
        if not callable(step):
            raise TypeError(f"step must be callable, got {type(step).__name__}")
        if not isinstance(max_graphs, int) or max_graphs < 1:
            raise ValueError(f"max_graphs must be an int >= 1, got max_graphs={max_graphs!r}")
        self.step = step
        self.max_graphs = max_graphs
        self.eager = False
        self._graphs: OrderedDict[tuple, _Captured] = OrderedDict()

    def __call__(self, x: Tensor) -> Tensor:
        if not x.is_cuda or self.eager:
            return self.step(x)
        key = (tuple(x.shape), x.dtype, x.device)
        captured = self._graphs.get(key)
        if captured is None:
            captured = self._capture(x, key)
            if captured is None:
                return self.step(x)
        self._graphs.move_to_end(key)
        captured.input.copy_(x)
        captured.graph.replay()
        return captured.output.clone()

    def _capture(self, x: Tensor, key: tuple) -> _Captured | None:
        static = x.clone()
        side = torch.cuda.Stream(x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        # Eager runs first, off the capture: kernels compile and caches fill in the first;
        # the second raises on any host sync. A capture that fails midway can leave
        # torch's default generator in its capture state, so steps that sync never reach it.
        previous_mode = torch.cuda.get_sync_debug_mode()
        try:
            with torch.cuda.stream(side), warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Synchronization debug mode is a prototype")
                self.step(static)
                torch.cuda.set_sync_debug_mode("error")
                self.step(static)
        except RuntimeError as error:
            return self._run_eagerly_from_now(error)
        finally:
            torch.cuda.set_sync_debug_mode(previous_mode)
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                output = self.step(static)
        except RuntimeError as error:
            return self._run_eagerly_from_now(error)
        while len(self._graphs) >= self.max_graphs:
            self._graphs.popitem(last=False)
        captured = _Captured(graph, static, output)
        self._graphs[key] = captured
        return captured

    def _run_eagerly_from_now(self, error: RuntimeError) -> None:
        self.eager = True
        warnings.warn(
            f"step could not be captured as a CUDA graph; running it eagerly ({error})",
            RuntimeWarning,
            stacklevel=4,
        )
