"""Kernel launches that spend less host time than Triton's JIT.

Every launch through `JITFunction.run` binds each argument, specialises it (its type; a
pointer's or an int's divisibility by 16; an int equal to 1), formats a cache key and checks
the kernel's global constants, before the compiled launcher runs. On an H200's host (Triton
3.6) a launch of 24 arguments took 34–40 µs that way, against 7 µs for the launcher alone
with pointers given as integers; an eager decode step makes 3 to 7 launches, and under
cProfile they were 57% of an eager top-p step's host time.

`kernel` makes a launched kernel whose later launches skip that work: it computes its own
key, at least as fine as Triton's specialisation (a tensor's dtype and whether its address
is divisible by 16; an int's type range, divisibility by 16 and whether it is 1; a bool's
value; every constexpr and launch option as given), keeps the compiled variant per key (the
first launch of a key goes through Triton's JIT, which compiles it) and calls its launcher
with the addresses. Not checked again after the first launch of a key, as Triton does on
every launch: that a global constant the kernel reads has not been reassigned (decoptim's
are constants). Launch hooks (a profiler's), pre-run hooks, callable grids and argument
types other than these take Triton's own path, as do Triton builds without `triton.knobs`
(before 3.4). The launcher is called as `CompiledKernel`'s own runner calls it, which reads
the same in Triton 3.4, 3.5, 3.6 and 3.9; a launcher that refuses the call (a TypeError)
turns the cache off for the process. Under Triton's interpreter, `kernel` is `triton.jit`.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any

import torch
import triton
import triton.language as tl
from triton.runtime.jit import JITFunction

try:
    from triton import knobs
except ImportError:  # Triton < 3.4: launchers with another signature; Triton's own path
    knobs = None

try:
    from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait
except ImportError:  # no griddepcontrol in this Triton: kernels launch as before
    gdc_launch_dependents = gdc_wait = None

# Whether launchers take addresses as integers; cleared for good if one refuses them.
_ADDRESSES_ACCEPTED = knobs is not None
_ENABLED = True

_INT32 = (-(2**31), 2**31)


class CachedLaunchFunction(JITFunction):
    """A JITFunction whose launches reuse the compiled variant of their specialisation key
    (the module's docstring says what the key holds and what is not checked again)."""

    def __init__(self, fn, **options) -> None:
        super().__init__(fn, **options)
        self._variants: dict[tuple, Any] = {}
        self._params = tuple((p.name, p.is_constexpr, p.default) for p in self.params)
        self._names = frozenset(p.name for p in self.params)

    def bind(self, args: tuple, kwargs: dict) -> tuple[tuple, list] | None:
        """The launch's key and the launcher's arguments (every parameter in order,
        tensors as their addresses), or None where this launch takes Triton's own path.
        Parameters given by keyword are keyed as positional ones are: a tensor by its dtype
        and alignment, never by the object (which would keep it alive in the cache)."""
        if len(args) > len(self._params):
            return None
        key: list = [tuple(item for item in kwargs.items() if item[0] not in self._names)]
        values: list = []
        for position, (name, constexpr, default) in enumerate(self._params):
            if position < len(args):
                value = args[position]
            elif name in kwargs:
                value = kwargs[name]
            elif default is not inspect.Parameter.empty:
                value = default
            else:
                return None  # a missing argument: Triton's path says which
            kind = type(value)
            if constexpr:
                key.append(value)
            elif isinstance(value, torch.Tensor):
                address = value.data_ptr()
                key.append((value.dtype, address % 16 == 0))
                value = address
            elif kind is int:
                key.append((value == 1, value % 16 == 0, _INT32[0] <= value < _INT32[1],
                            value < 2**63))  # fmt: skip
            elif kind is bool:
                key.append(value)
            elif kind is float:
                key.append(float)
            elif value is None:
                key.append(None)
            else:
                return None
            values.append(value)
        return tuple(key), values

    def hooked(self) -> bool:
        """Whether a hook watches launches: a pre-run hook of this kernel, or a launch hook
        (Triton ≥ 3.5 keeps those in chains that are never None, empty when unused)."""
        launch_hooks = (knobs.runtime.launch_enter_hook, knobs.runtime.launch_exit_hook)
        return bool(self.pre_run_hooks) or any(
            hook is not None and bool(getattr(hook, "calls", True)) for hook in launch_hooks
        )

    def run(self, *args, grid, warmup, **kwargs):
        global _ADDRESSES_ACCEPTED
        bound = None
        cached = _ENABLED and _ADDRESSES_ACCEPTED and not warmup
        if cached and isinstance(grid, tuple) and not self.hooked():
            bound = self.bind(args, kwargs)
        if bound is None:
            return super().run(*args, grid=grid, warmup=warmup, **kwargs)
        key, values = bound
        device = triton.runtime.driver.active.get_current_device()
        try:
            compiled = self._variants.get((device, key))
        except TypeError:  # an unhashable constexpr or option
            return super().run(*args, grid=grid, warmup=warmup, **kwargs)
        if compiled is None:
            compiled = super().run(*args, grid=grid, warmup=warmup, **kwargs)
            self._variants[(device, key)] = compiled
            return compiled
        stream = triton.runtime.driver.active.get_current_stream(device)
        grid_1 = grid[1] if len(grid) > 1 else 1
        grid_2 = grid[2] if len(grid) > 2 else 1
        try:
            compiled.run(grid[0], grid_1, grid_2, stream, compiled.function,
                         compiled.packed_metadata, None, None, None, *values)  # fmt: skip
        except TypeError:  # a launcher that does not take addresses as integers
            _ADDRESSES_ACCEPTED = False
            return super().run(*args, grid=grid, warmup=warmup, **kwargs)
        return compiled


def set_cached_launches(enabled: bool) -> None:
    """Launch every kernel through Triton's own path (False), or through the cached
    variants again (True): to time one against the other (`bench/eager_host.py`), or to
    rule this layer out."""
    global _ENABLED
    _ENABLED = bool(enabled)


def kernel(fn):
    """`triton.jit` for a kernel launched from the host (`name[grid](...)`), with the cached
    launch of `CachedLaunchFunction`; device functions called from kernels stay
    `triton.jit`."""
    if knobs is None or knobs.runtime.interpret:
        return triton.jit(fn)
    return CachedLaunchFunction(fn)


@functools.cache
def dependent_launch(device: torch.device) -> bool:
    """Whether kernels on `device` launch as programmatic dependents of the kernel before
    them in the stream (Hopper's griddepcontrol, sm_90 and later): the launch of one
    overlaps the end of the one before, and each waits for it in
    `wait_for_the_kernel_before`. Launches that take it pass `launch_pdl` and DEPENDENT."""
    if device.type != "cuda" or gdc_wait is None:
        return False
    return torch.cuda.get_device_capability(device)[0] >= 9


@triton.jit
def wait_for_the_kernel_before(DEPENDENT: tl.constexpr):
    """The first statement of a kernel launched by `dependent_launch`: until the kernel
    before it in the stream has finished and its writes are visible, nothing of it may read
    or write (nor exit: a kernel that finishes without waiting would let the next one pass
    both). Then the next kernel may launch, and wait in turn."""
    if DEPENDENT:
        gdc_wait()
        gdc_launch_dependents()
