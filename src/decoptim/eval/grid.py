"""Decoder grids: specs from the command line or a TOML file, and named presets.

A spec is `name[:key=value,...]`, for example `topk:k=50` or
`bok:k=8,beta=0.02,lam=0.2,solver=mirror`. The temperature comes from the grid. Names:

    greedy  softmax  topk(k)  topp(p)  minp(p)  typical(mass)  epsilon(epsilon)  eta(epsilon)
    sparsemax  entmax(alpha)  bok(k, beta, lam, weights, top_m, solver, steps, step_size,
    scores, reference)  bok-beta0(...)  bok-tau(...)

`bok-beta0` is BoK's β = 0 control and `bok-tau` plain sampling at BoK's matched effective
temperature; both take the same parameters as the `bok` they control.

A TOML grid holds `temperatures = [...]` and either `decoders = ["spec", ...]` or
`[[decoder]]` tables with a `name` key and the parameters.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from .. import core as d

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PAPER_BOK = [(0.01, 0.1), (0.02, 0.2), (0.05, 0.5)]
PAPER_TEMPERATURES = [0.1, 0.25, 0.5, 0.7, 0.9]


@dataclass(frozen=True)
class DecoderSpec:
    name: str
    params: tuple[tuple[str, object], ...] = ()

    @property
    def label(self) -> str:
        if not self.params:
            return self.name
        return f"{self.name}(" + ",".join(f"{k}={v}" for k, v in self.params) + ")"

    def uses_temperature(self) -> bool:
        return self.name != "greedy"

    def build(self, temperature: float) -> d.Decoder:
        kwargs = dict(self.params)
        try:
            if self.name == "greedy":
                return d.Greedy(**kwargs)
            if self.name in ("bok", "bok-beta0", "bok-tau"):
                bok = d.BestOfK(temperature=temperature, **kwargs)
                if self.name == "bok-beta0":
                    return bok.beta_zero_control()
                return bok.matched_temperature_control() if self.name == "bok-tau" else bok
            return BUILDERS[self.name](temperature=temperature, **kwargs)
        except TypeError as error:
            raise ValueError(f"decoder spec {self.label!r}: {error}") from None

    def as_dict(self) -> dict:
        return {"name": self.name, **dict(self.params)}


BUILDERS = {
    "softmax": d.Softmax,
    "topk": d.TopK,
    "topp": d.TopP,
    "minp": d.MinP,
    "typical": d.Typical,
    "epsilon": d.Epsilon,
    "eta": d.Eta,
    "sparsemax": d.Sparsemax,
    "entmax": d.Entmax,
}
NAMES = ("greedy", *BUILDERS, "bok", "bok-beta0", "bok-tau")


def _value(text: str) -> object:
    for cast in (int, float):
        try:
            return cast(text)
        except ValueError:
            pass
    return {"true": True, "false": False}.get(text.lower(), text)


def parse_spec(text: str) -> DecoderSpec:
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
    spec.build(1.0)  # reject bad parameters now, not hours into a run
    return spec


@dataclass(frozen=True)
class Grid:
    decoders: tuple[DecoderSpec, ...]
    temperatures: tuple[float, ...]

    def configs(self) -> list[tuple[str, DecoderSpec, float]]:
        """(config id, spec, temperature) for every cell; greedy appears once."""
        cells = []
        for spec in self.decoders:
            temps = self.temperatures if spec.uses_temperature() else (1.0,)
            for tau in temps:
                cells.append(
                    (f"{spec.label}@{tau:g}" if spec.uses_temperature() else spec.label, spec, tau)
                )
        return cells


def make_grid(decoders: list[str], temperatures: list[float]) -> Grid:
    if not decoders:
        raise ValueError("the grid has no decoders")
    if not temperatures or any(t <= 0 for t in temperatures):
        raise ValueError(f"temperatures must be positive, got {temperatures}")
    return Grid(tuple(parse_spec(s) for s in decoders), tuple(float(t) for t in temperatures))


def load_grid_file(path: str | Path) -> Grid:
    with open(path, "rb") as handle:
        try:
            config = tomllib.load(handle)
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"{path}: {error}") from None
    specs = list(config.get("decoders", []))
    for table in config.get("decoder", []):
        table = dict(table)
        name = table.pop("name", None)
        if name is None:
            raise ValueError(f"{path}: a [[decoder]] table has no name")
        specs.append(name + (":" + ",".join(f"{k}={v}" for k, v in table.items()) if table else ""))
    return make_grid(specs, list(config.get("temperatures", [1.0])))


def paper_table1(k: int = 8) -> Grid:
    """The paper's Table 1 grid plus, for each BoK, its β = 0, τ_eff and exact-solver rows."""
    specs = ["softmax", "topk:k=50"]
    for beta, lam in PAPER_BOK:
        common = f"k={k},beta={beta},lam={lam}"
        specs += [
            f"bok:{common},solver=mirror,steps=5",
            f"bok-beta0:{common},solver=mirror,steps=5",
            f"bok-tau:{common}",
            f"bok:{common},solver=exact",
        ]
    return make_grid(specs, PAPER_TEMPERATURES)


def demo_grid() -> Grid:
    """A handful of decoders at a low and a high temperature (what `decoptim demo` runs)."""
    return make_grid(
        [
            "softmax",
            "topp:p=0.9",
            "minp:p=0.1",
            "bok:k=8,beta=0.05,lam=0.5",
            "bok-beta0:k=8,beta=0.05,lam=0.5",
            "bok-tau:k=8,beta=0.05,lam=0.5",
        ],
        [0.7, 1.5],
    )


PRESETS = {"paper-table1": paper_table1, "demo": demo_grid}
