"""Decoders by name: `DecoderSpec` builds any decoder from a name and plain parameters.

This is what engines and configuration files hand across process boundaries: a spec is
hashable, serialisable (`as_dict`) and built into a `Decoder` for a given temperature.
The text form is `name[:key=value,...]`, for example `topk:k=50` or
`bok:k=8,beta=0.02,lam=0.2,solver=mirror`. Names:

    greedy  softmax  topk(k)  topp(p)  minp(p)  typical(mass)  epsilon(epsilon)  eta(epsilon)
    sparsemax  entmax(alpha)  bok(k, beta, lam, weights, top_m, solver, steps, step_size,
    scores, reference)  bok-beta0(...)  bok-tau(...)

`bok-beta0` is BoK's β = 0 control and `bok-tau` plain sampling at BoK's matched effective
temperature; both take the same parameters as the `bok` they control.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from .bok import BestOfK
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


@dataclass(frozen=True)
class DecoderSpec:
    """A decoder's name and parameters, without its temperature."""

    name: str
    params: tuple[tuple[str, object], ...] = ()

    def __post_init__(self) -> None:
        if self.name not in NAMES:
            raise ValueError(f"unknown decoder {self.name!r}; known: {', '.join(NAMES)}")

    @classmethod
    def from_mapping(cls, mapping: Mapping[str, object], name_key: str = "name") -> DecoderSpec:
        """`{name_key: "bok", "k": 8, ...}` → spec; parameters keep the mapping's order."""
        if not isinstance(mapping, Mapping):
            raise ValueError(f"a decoder spec must be a mapping, got {mapping!r}")
        params = dict(mapping)
        name = params.pop(name_key, None)
        if not isinstance(name, str):
            raise ValueError(f"decoder spec {mapping!r} has no string {name_key!r}")
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
        """The decoder at `temperature`; `options` (e.g. validate=False) go to its constructor."""
        kwargs = {**dict(self.params), **options}
        try:
            if self.name == "greedy":
                return Greedy(**kwargs)
            if self.name in BOK_NAMES:
                bok = BestOfK(temperature=temperature, **kwargs)
                if self.name == "bok-beta0":
                    return bok.beta_zero_control()
                return bok.matched_temperature_control() if self.name == "bok-tau" else bok
            return BUILDERS[self.name](temperature=temperature, **kwargs)
        except TypeError as error:
            raise ValueError(f"decoder spec {self.label!r}: {error}") from None

    def as_dict(self) -> dict:
        return {"name": self.name, **dict(self.params)}


def _value(text: str) -> object:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_spec(text: str) -> DecoderSpec:
    """Parse `name[:key=value,...]` and build it once, so bad parameters fail now."""
    name, _, rest = text.strip().partition(":")
    if name not in NAMES:
        raise ValueError(f"unknown decoder {name!r} in spec {text!r}; known: {', '.join(NAMES)}")
    params = []
    for item in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"decoder spec {text!r}: expected key=value, got {item!r}")
        params.append((key.strip(), _value(value.strip())))
    spec = DecoderSpec(name, tuple(params))
    spec.build(1.0)
    return spec
