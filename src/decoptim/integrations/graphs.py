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

# A step's arguments and result: tensors, or tuples (NamedTuples such as `Codes` included) of
# them, nested. Flattened into their tensors and a hashable spec that rebuilds the structure
# (torch.utils._pytree does this for more types, but is private to torch).
Tensors = Tensor | tuple
Spec = None | tuple  # None: a tensor; (tuple type, child specs)


def _flatten(tree: Tensors, what: str) -> tuple[list[Tensor], Spec]:
    if isinstance(tree, Tensor):
        return [tree], None
    if isinstance(tree, tuple):
        tensors: list[Tensor] = []
        specs = []
        for item in tree:
            leaves, spec = _flatten(item, what)
            tensors += leaves
            specs.append(spec)
        return tensors, (type(tree), tuple(specs))
    raise TypeError(
        f"{what} must be tensors or tuples of tensors, got {type(tree).__name__}: bind other "
        "arguments into the step (a lambda or functools.partial)"
    )


def _unflatten(spec: Spec, tensors: list[Tensor]) -> Tensors:
    # Rebuilds from the front of `tensors`, consuming them.
    if spec is None:
        return tensors.pop(0)
    kind, children = spec
    items = [_unflatten(child, tensors) for child in children]
    return kind(*items) if hasattr(kind, "_fields") else kind(items)


class _Captured(NamedTuple):
    graph: torch.cuda.CUDAGraph
    inputs: list[Tensor]
    outputs: list[Tensor]
    output_spec: Spec
    # Per output, the argument it is, unchanged (returned as is), or None (copied out).
    passed_through: list[int | None]


def _passed_through(outputs: list[Tensor], inputs: list[Tensor], arguments: list[Tensor]
                    ) -> list[int | None]:  # fmt: skip
    # Which outputs are an input buffer as a whole, left as the argument copied into it (a
    # coordinated step returns its codes' group seeds and indices so): a replay's result
    # there is the caller's own argument, as the eager step returns it, and copying it out
    # would cost a copy (about 6.5 µs of host time each on an H200, performance.md).
    def same_view(a: Tensor, b: Tensor) -> bool:
        return (a.data_ptr(), a.shape, a.stride(), a.dtype) == (b.data_ptr(), b.shape,
                                                                b.stride(), b.dtype)  # fmt: skip

    found: list[int | None] = []
    for out in outputs:
        index = next((i for i, static in enumerate(inputs) if same_view(out, static)), None)
        if index is not None and not torch.equal(inputs[index], arguments[index]):
            index = None  # the step writes into it
        found.append(index)
    return found


class GraphedStep:
    """`step(*args)`, captured as a CUDA graph per shape, dtype and device of its tensors
    and replayed.

    The arguments and the result are tensors or tuples of them (a `Codes` too), so a
    coordinated step, `lambda x, codes: decoder.sample_coordinated(x, codes)`, is graphed
    as a plain one is. `step` must be capturable: no host syncs and the same kernels for
    every input of a shape. One that syncs (found by an eager run in torch's sync-debug
    "error" mode) or fails to capture warns once and runs eagerly from then on. Each call
    copies the arguments into the graph's input buffers and returns a copy of its result,
    so results stay valid across calls; a result that is one of the arguments, unchanged
    (a coordinated step's group seeds and indices), is that argument itself, as the eager
    step returns it. Calls with a tensor off CUDA run `step` directly.
    At most `max_graphs` shapes are kept (least recently used first out).
    """

    def __init__(self, step: Callable[..., Tensors], max_graphs: int = 4):
        if not callable(step):
            raise TypeError(f"step must be callable, got {type(step).__name__}")
        if not isinstance(max_graphs, int) or max_graphs < 1:
            raise ValueError(f"max_graphs must be an int >= 1, got max_graphs={max_graphs!r}")
        self.step = step
        self.max_graphs = max_graphs
        self.eager = False
        self._graphs: OrderedDict[tuple, _Captured] = OrderedDict()

    def __call__(self, *args: Tensors) -> Tensors:
        tensors, spec = _flatten(args, "the step's arguments")
        if self.eager or not tensors or not all(t.is_cuda for t in tensors):
            return self.step(*args)
        key = (spec, tuple((tuple(t.shape), t.dtype, t.device) for t in tensors))
        captured = self._graphs.get(key)
        if captured is None:
            captured = self._capture(tensors, spec, key)
            if captured is None:
                return self.step(*args)
        self._graphs.move_to_end(key)
        for static, tensor in zip(captured.inputs, tensors, strict=True):
            static.copy_(tensor)
        captured.graph.replay()
        results = [
            out.clone() if index is None else tensors[index]
            for out, index in zip(captured.outputs, captured.passed_through, strict=True)
        ]
        return _unflatten(captured.output_spec, results)

    def _capture(self, tensors: list[Tensor], spec: Spec, key: tuple) -> _Captured | None:
        device = tensors[0].device
        statics = [t.clone() for t in tensors]
        args = _unflatten(spec, list(statics))
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        # Eager runs first, off the capture: kernels compile and caches fill in the first;
        # the second raises on any host sync. A capture that fails midway can leave
        # torch's default generator in its capture state, so steps that sync never reach it.
        previous_mode = torch.cuda.get_sync_debug_mode()
        try:
            with torch.cuda.stream(side), warnings.catch_warnings():
                warnings.filterwarnings("ignore", "Synchronization debug mode is a prototype")
                _flatten(self.step(*args), "the step's result")
                torch.cuda.set_sync_debug_mode("error")
                self.step(*args)
        except RuntimeError as error:
            return self._run_eagerly_from_now(error)
        finally:
            torch.cuda.set_sync_debug_mode(previous_mode)
        torch.cuda.current_stream(device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                outputs, output_spec = _flatten(self.step(*args), "the step's result")
        except RuntimeError as error:
            return self._run_eagerly_from_now(error)
        while len(self._graphs) >= self.max_graphs:
            self._graphs.popitem(last=False)
        passed_through = _passed_through(outputs, statics, tensors)
        captured = _Captured(graph, statics, outputs, output_spec, passed_through)
        self._graphs[key] = captured
        return captured

    def _run_eagerly_from_now(self, error: RuntimeError) -> None:
        self.eager = True
        warnings.warn(
            f"step could not be captured as a CUDA graph; running it eagerly ({error})",
            RuntimeWarning,
            stacklevel=4,
        )
