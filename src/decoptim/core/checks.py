"""Input validation shared by every decoder.

Errors name the parameter and the offending value. Parameter checks run once, in
constructors; logits checks run per call and cost one host sync on an accelerator,
which `validate=False` skips for hot loops whose inputs are already trusted.
"""

from __future__ import annotations

import inspect
import math
import threading
from collections import OrderedDict
from collections.abc import Callable

import torch
from torch import Tensor

FLOAT_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)

Param = float | int | Tensor


def compute_dtype(logits: Tensor) -> torch.dtype:
    """float64 inputs stay float64 (references); everything else is computed in float32."""
    return torch.float64 if logits.dtype == torch.float64 else torch.float32


def check_logits(logits: Tensor, validate: bool = True, name: str = "logits") -> Tensor:
    """Return `logits` upcast to the compute dtype after checking type, shape and values."""
    if not isinstance(logits, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(logits).__name__}")
    if logits.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"{name} must be float16, bfloat16, float32 or float64, got dtype={logits.dtype}"
        )
    if logits.dim() == 0:
        raise ValueError(f"{name} must have shape [..., V], got a 0-d tensor")
    if logits.shape[-1] == 0:
        raise ValueError(f"{name} has an empty last dimension (V = 0), shape={tuple(logits.shape)}")
    x = logits.to(compute_dtype(logits))
    if validate:
        nan_rows = torch.isnan(x).any(-1)
        posinf_rows = (x == math.inf).any(-1)
        empty_rows = (x == -math.inf).all(-1)
        bad = torch.stack([nan_rows.any(), posinf_rows.any(), empty_rows.any()]).tolist()
        if bad[0]:
            row = _first_row(nan_rows)
            raise ValueError(f"{name} contain NaN (first at row {row})")
        if bad[1]:
            row = _first_row(posinf_rows)
            raise ValueError(f"{name} contain +inf (first at row {row})")
        if bad[2]:
            row = _first_row(empty_rows)
            raise ValueError(f"{name} row {row} is all -inf: no token can be sampled")
    return x


def _first_row(flags: Tensor) -> tuple[int, ...] | int:
    index = tuple(int(i) for i in torch.nonzero(flags)[0].tolist())
    return index[0] if len(index) == 1 else index


def shown(value: object, limit: int = 60) -> str:
    """`repr(value)` for an error message, shortened to about `limit` characters with the
    full length said (never raises: an int too long for `repr` is shown by its size)."""
    if isinstance(value, str):
        if len(value) <= limit:
            return repr(value)
        return f"{value[:limit]!r}... ({len(value)} characters)"
    if isinstance(value, Tensor):
        items = [repr(v) for v in value.flatten()[:8].tolist()]
        text = f"tensor([{', '.join(items + ['...'] * (value.numel() > 8))}])"
    else:
        try:
            text = repr(value)
        except ValueError:  # an int beyond Python's str conversion limit
            text = f"<int of {value.bit_length()} bits>" if isinstance(value, int) else "<?>"
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def constructor_repr(obj: object) -> str:
    """`Name(param=value, ...)` from the parameters of `type(obj).__init__` that `obj` keeps
    under the same names (as every support and regulariser here does, and as a user's own
    may), so that a decoder's repr, and a run's manifest, show its parts without each part
    writing a `__repr__`. Tensors show their values (`tensor[...]`)."""
    names = list(inspect.signature(type(obj).__init__).parameters)[1:]
    parts = []
    for name in names:
        if hasattr(obj, name):
            value = getattr(obj, name)
            text = f"tensor{value.tolist()}" if isinstance(value, Tensor) else repr(value)
            parts.append(f"{name}={text}")
    return f"{type(obj).__name__}({', '.join(parts)})"


def _as_float(value: int | float) -> float:
    try:
        return float(value)
    except OverflowError:  # an int beyond float64
        return math.inf if value > 0 else -math.inf


def check_param(
    name: str,
    value: Param,
    valid: Callable[[Tensor], Tensor],
    rule: str,
    integer: bool = False,
) -> Param:
    """Check a scalar or per-row tensor parameter once, at construction.

    `valid` maps a float64 tensor to a boolean tensor; `rule` words the constraint for the
    error message, for example "k >= 1".
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a number or a tensor, got bool {value!r}")
    if isinstance(value, Tensor):
        if value.dtype == torch.bool or value.is_complex():
            raise TypeError(f"{name} must be a real tensor, got dtype={value.dtype}")
        if integer and value.is_floating_point() and not bool((value == value.round()).all()):
            raise TypeError(f"{name} must hold whole numbers, got {shown(value)}")
        values = value.detach().to(torch.float64)
        if values.numel() == 0:
            raise ValueError(f"{name} is an empty tensor")
        ok = valid(values) & ~torch.isnan(values)
        if not bool(ok.all()):
            bad = values[~ok].flatten()[0].item()
            raise ValueError(f"{name} must satisfy {rule}, got {bad!r} in {name}={shown(value)}")
        return value.to(torch.int64) if integer else value
    if integer:
        if not isinstance(value, int):
            raise TypeError(f"{name} must be an int, got {type(value).__name__} {shown(value)}")
    elif not isinstance(value, (int, float)):
        raise TypeError(
            f"{name} must be a float or a tensor, got {type(value).__name__} {shown(value)}"
        )
    number = _as_float(value)
    if math.isnan(number) or not bool(valid(torch.tensor(number, dtype=torch.float64))):
        raise ValueError(f"{name} must satisfy {rule}, got {name}={shown(value)}")
    return value


# Scale parameters (temperatures, BoK's λ and step size) lie in [MIN_SCALE, MAX_SCALE] and
# BoK's β in [0, MAX_SCALE]: that is what float32 computes. Beyond, z/τ and s/λ overflow to
# inf near τ, λ ≈ 1e-38 (then inf − inf = NaN), a float32 τ above 3.4e38 is inf, and a huge
# β or step size overflows the coverage term or the mirror step. Inside, every decoder gives
# finite distributions for logits up to 1e4 in magnitude (tests/core/test_specs.py).
MIN_SCALE = 1e-8
MAX_SCALE = 1e8
# Counts (top-k's k, BoK's K and top_m) are at most int32's maximum: far beyond any
# vocabulary (sizes above V act as V), and safe in every int64 and float32 computation.
MAX_COUNT = 2**31 - 1


def positive(name: str, value: Param) -> Param:
    """A scale parameter, in [MIN_SCALE, MAX_SCALE]."""
    rule = f"{MIN_SCALE:g} <= {name} <= {MAX_SCALE:g}"
    return check_param(name, value, lambda v: (v >= MIN_SCALE) & (v <= MAX_SCALE), rule)


def nonnegative(name: str, value: Param) -> Param:
    """A weight, in [0, MAX_SCALE]."""
    rule = f"0 <= {name} <= {MAX_SCALE:g}"
    return check_param(name, value, lambda v: (v >= 0) & (v <= MAX_SCALE), rule)


def tsallis_alpha(name: str, value: Param) -> Param:
    """Entmax's α in [1 + MIN_SCALE, MAX_SCALE]: closer to 1, (α − 1)·x underflows the
    float32 threshold search; near 1e38 the exponent 1/(α − 1) does (NaN rows)."""
    low = 1.0 + MIN_SCALE
    return check_param(
        name, value, lambda v: (v >= low) & (v <= MAX_SCALE), f"{low!r} <= {name} <= {MAX_SCALE:g}"
    )


def unit_interval(name: str, value: Param) -> Param:
    """A probability-like threshold in (0, 1]."""
    return check_param(name, value, lambda v: (v > 0) & (v <= 1), f"0 < {name} <= 1")


def count(name: str, value: Param, upper: int = MAX_COUNT) -> Param:
    """A whole number in [1, upper] (default MAX_COUNT): the bound on the work it drives."""
    value = check_param(name, value, lambda v: v >= 1, f"{name} >= 1", integer=True)
    return check_param(name, value, lambda v: v <= upper, f"{name} <= {upper}", integer=True)


def per_row(name: str, value: Param, x: Tensor) -> Tensor:
    """Broadcast a scalar or per-row parameter against rows of `x` ([..., V]) as [..., 1].

    Per-row tensors must have shape `x.shape[:-1]` (or a single element).
    """
    if not isinstance(value, Tensor):
        dtype = torch.int64 if isinstance(value, int) else x.dtype
        return DEVICE_CONSTANTS.get((), value, dtype, x.device)
    rows = x.shape[:-1]
    if value.numel() != 1 and tuple(value.shape) != tuple(rows):
        raise ValueError(
            f"per-row parameter {name} has shape {tuple(value.shape)}, but the logits have "
            f"{tuple(rows)} rows (shape {tuple(x.shape)})"
        )
    dtype = value.dtype if not value.is_floating_point() else x.dtype
    value = value.to(device=x.device, dtype=dtype)
    return value.reshape(()) if value.numel() == 1 else value.unsqueeze(-1)


def kernel_rows(value: float | Tensor, x: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """A per-row value (a Python number, or a 0-d / [..., 1] tensor) as the flat, contiguous
    [rows] tensor of `dtype` that kernels read. Numbers give a cached tensor: no work per
    step."""
    rows = x.numel() // x.shape[-1]
    if isinstance(value, Tensor):
        shape = (*x.shape[:-1], 1)
        value = value.to(device=x.device, dtype=dtype)
        return torch.broadcast_to(value, shape).reshape(rows).contiguous()
    return DEVICE_CONSTANTS.get((rows,), value, dtype, x.device)


class DeviceConstants:
    """Tensors filled with a Python number, one per (shape, value, dtype, device), shared
    between calls: kernels and ops only read them, so a decode step does no work to make
    its parameters' tensors.

    A CUDA graph reads, on every replay, the addresses it was captured with, so a constant
    read during a capture is kept for the rest of the process (were it dropped, a replay
    would read whatever the allocator put there next); the others are kept for the `size`
    most recently used keys. One not yet made when a capture asks for it comes from a fill
    inside the capture, uncached: a capture runs no kernels, so that tensor holds its value
    only during replays."""

    def __init__(self, size: int = 1024):
        self.size = size
        self._recent: OrderedDict[tuple, Tensor] = OrderedDict()
        self._captured: dict[tuple, Tensor] = {}
        self._lock = threading.Lock()

    def get(
        self, shape: tuple[int, ...], value: float | int, dtype: torch.dtype, device: torch.device
    ) -> Tensor:
        key = (shape, value, dtype, device)
        capturing = device.type == "cuda" and torch.cuda.is_current_stream_capturing()
        with self._lock:
            tensor = self._captured.get(key)
            if tensor is not None:
                return tensor
            tensor = self._recent.get(key)
            if capturing:
                if tensor is None:
                    return torch.full(shape, value, dtype=dtype, device=device)
                self._captured[key] = self._recent.pop(key)
                return tensor
            if tensor is not None:
                self._recent.move_to_end(key)
                return tensor
            # A fill on the device, not a copy from host memory (which would stall the step).
            tensor = torch.full(shape, value, dtype=dtype, device=device)
            self._recent[key] = tensor
            if len(self._recent) > self.size:
                self._recent.popitem(last=False)
            return tensor


DEVICE_CONSTANTS = DeviceConstants()


def max_int(value: Param) -> int:
    """Largest value of an integer parameter (tensor maxima are read once, at construction)."""
    return int(value.max().item()) if isinstance(value, Tensor) else int(value)
