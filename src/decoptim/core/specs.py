"""Decoders by name: `DecoderSpec` builds any decoder from a name and plain parameters.

This is what engines and configuration files hand across process boundaries: a spec is
hashable, serialisable (`as_dict`) and built into a `Decoder` for a given temperature.
The text form is `name[:key=value,...]`, for example `topk:k=50` or
`bok:k=8,beta=0.02,lam=0.2,solver=mirror`. Names:

    greedy  softmax  topk(k)  topp(p)  minp(p)  typical(mass)  epsilon(epsilon)  eta(epsilon)
    sparsemax  entmax(alpha)  bok(k, beta, lam, weights, top_m, solver, steps, step_size,
    scores, reference, outer_iterations, inner_iterations)  bok-beta0(...)  bok-tau(...)

`bok-beta0` is BoK's β = 0 control and `bok-tau` plain sampling at BoK's matched effective
temperature; both take the same parameters as the `bok` they control.

Specs arrive from untrusted clients (a shared vLLM server), so they are read strictly:

- at most `MAX_SPEC_LENGTH` (512) characters, printable ASCII only (a full-width `３` is
  not a digit here);
- each key once, and only the decoder's own parameters (not `temperature`, which the caller
  gives, nor `validate`);
- values: integers (`8`, `-3`), decimal floats (`0.02`, `1e-3`, and `inf`/`nan`, which the
  decoder then rejects by name), `true`/`false`, or words (`mirror`); a mapping's values
  must be numbers, booleans or strings;
- the parameters' ranges are the decoder constructors' (which bound every size that drives
  the cost of a step, see `decoptim.core.checks` and `BestOfK`).

Error messages name the parameter and its value and quote a long spec shortened.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache

from .bok import BestOfK
from .checks import shown, tsallis_alpha
from .decoders import (
    Decoder,
    Entmax,
    Epsilon,
    Eta,
    Greedy,
    MinP,
    Softmax,
    Sparsemax,
    TopK,
    TopP,
    Typical,
)

BUILDERS: dict[str, type[Decoder]] = {
    "softmax": Softmax,
    "topk": TopK,
    "topp": TopP,
    "minp": MinP,
    "typical": Typical,
    "epsilon": Epsilon,
    "eta": Eta,
    "sparsemax": Sparsemax,
    "entmax": Entmax,
}
BOK_NAMES = ("bok", "bok-beta0", "bok-tau")
NAMES = ("greedy", *BUILDERS, *BOK_NAMES)
# The longest spec (text form) accepted: the longest real one, every BoK parameter spelled
# out, is about 200 characters.
MAX_SPEC_LENGTH = 512
# Given by the caller (the temperature) or an option of `build` (validate), never by a spec.
NOT_PARAMETERS = ("temperature", "validate")

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(
    r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:inf|infinity|nan)",
    re.IGNORECASE,
)
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")


@cache
def parameters(name: str) -> tuple[str, ...]:
    """The parameters a spec of decoder `name` may set."""
    builder = Greedy if name == "greedy" else BestOfK if name in BOK_NAMES else BUILDERS[name]
    return tuple(
        p
        for p in inspect.signature(builder.__init__).parameters
        if p not in ("self", *NOT_PARAMETERS)
    )


@dataclass(frozen=True)
class DecoderSpec:
    """A decoder's name and parameters, without its temperature.

    Construction checks the structure (a known name, each key once and one of the decoder's
    parameters, plain values, at most `MAX_SPEC_LENGTH` characters as text); `build` checks
    the values.
    """

    name: str
    params: tuple[tuple[str, object], ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or self.name not in NAMES:
            raise ValueError(f"unknown decoder {shown(self.name)}; known: {', '.join(NAMES)}")
        seen = set()
        for key, value in self.params:
            if not isinstance(key, str) or _KEY.fullmatch(key) is None:
                raise ValueError(f"decoder {self.name!r}: bad parameter name {shown(key)}")
            if key in seen:
                raise ValueError(f"decoder {self.name!r}: parameter {key!r} is given twice")
            seen.add(key)
            if key in NOT_PARAMETERS:
                raise ValueError(
                    f"decoder {self.name!r}: {key!r} cannot be set in a spec"
                    + (" (the caller gives the temperature)" if key == "temperature" else "")
                )
            if key not in parameters(self.name):
                raise ValueError(
                    f"decoder {self.name!r}: unexpected keyword {key!r}; its parameters: "
                    + (", ".join(parameters(self.name)) or "none")
                )
            if isinstance(value, int) and value.bit_length() > 1024:  # beyond any float64
                raise ValueError(
                    f"decoder {self.name!r}: parameter {key!r} is out of range, got {shown(value)}"
                )
            if not isinstance(value, (bool, int, float, str)):
                raise ValueError(
                    f"decoder {self.name!r}: parameter {key!r} must be a number, a boolean or a "
                    f"string, got {type(value).__name__} {shown(value)}"
                )
        text = self.text
        if len(text) > MAX_SPEC_LENGTH:
            raise ValueError(
                f"decoder spec {shown(text)} is longer than the limit of {MAX_SPEC_LENGTH} "
                "characters"
            )

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, object], name_key: str = "name") -> DecoderSpec:
        """`{name_key: "bok", "k": 8, ...}` → spec; parameters keep the mapping's order."""
        if not isinstance(mapping, Mapping):
            raise ValueError(f"a decoder spec must be a mapping, got {shown(mapping)}")
        params = dict(mapping)
        name = params.pop(name_key, None)
        if not isinstance(name, str):
            raise ValueError(f"decoder spec {shown(mapping)} has no string {name_key!r}")
        return cls(name, tuple(params.items()))

    @property
    def label(self) -> str:
        if not self.params:
            return self.name
        return f"{self.name}(" + ",".join(f"{k}={v}" for k, v in self.params) + ")"

    @property
    def text(self) -> str:
        """The `name:key=value,...` form that `parse_spec` reads back."""
        if not self.params:
            return self.name
        return self.name + ":" + ",".join(f"{k}={v}" for k, v in self.params)

    def uses_temperature(self) -> bool:
        return self.name != "greedy"

    def build(self, temperature: float, **options: object) -> Decoder:
        """The decoder at `temperature`; `options` (e.g. validate=False) go to its constructor.

        Raises ValueError naming the spec, the parameter and the value for a bad value.
        """
        kwargs = {**dict(self.params), **options}
        try:
            if self.name == "greedy":
                return Greedy(**kwargs)
            if self.name in BOK_NAMES:
                bok = BestOfK(temperature=temperature, **kwargs)
                if self.name == "bok-beta0":
                    return bok.beta_zero_control()
                return bok.matched_temperature_control() if self.name == "bok-tau" else bok
            if self.name == "entmax" and "alpha" in kwargs:
                # Entmax itself only asks for 1 < α < inf; this range is what float32 computes.
                tsallis_alpha("alpha", kwargs["alpha"])
            return BUILDERS[self.name](temperature=temperature, **kwargs)
        except (TypeError, ValueError) as error:
            raise ValueError(f"decoder spec {shown(self.text)}: {error}") from None

    def as_dict(self) -> dict:
        return {"name": self.name, **dict(self.params)}


def _value(text: str) -> object:
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_spec(text: str) -> DecoderSpec:
    """Parse `name[:key=value,...]` and build it once (at temperature 1), so that bad
    parameters fail now. The rules are in the module docstring."""
    if not isinstance(text, str):
        raise ValueError(f"a decoder spec must be a string like 'topk:k=50', got {shown(text)}")
    if len(text) > MAX_SPEC_LENGTH:
        raise ValueError(
            f"decoder spec {shown(text)} is longer than the limit of {MAX_SPEC_LENGTH} characters"
        )
    name, _, rest = text.partition(":")
    # Checked before any stripping: str.strip() would drop a trailing no-break space.
    if _PRINTABLE_ASCII.fullmatch(name) is None or name.strip() not in NAMES:
        raise ValueError(
            f"unknown decoder {shown(name.strip())} in spec {shown(text)}; known: "
            + ", ".join(NAMES)
        )
    params: dict[str, object] = {}
    for item in rest.split(","):
        key, sep, value = (part.strip() for part in item.partition("="))
        where = f"decoder spec {shown(text)}: parameter {shown(key)}"
        odd = _PRINTABLE_ASCII.match(item).end()
        if odd < len(item):
            char = item[odd]
            raise ValueError(
                f"{where} has the character {char!r} (U+{ord(char):04X}); specs are printable "
                f"ASCII (in {shown(item)})"
            )
        if not item.strip():
            continue
        if not sep or not key:
            raise ValueError(f"decoder spec {shown(text)}: expected key=value, got {shown(item)}")
        if key in params:
            raise ValueError(f"{where} is given twice")
        params[key] = _value(value)
    try:
        spec = DecoderSpec(name.strip(), tuple(params.items()))
    except ValueError as error:
        raise ValueError(f"decoder spec {shown(text)}: {error}") from None
    spec.build(1.0)
    return spec
