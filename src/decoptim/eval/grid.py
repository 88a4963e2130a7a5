"""Decoder grids: specs from the command line or a TOML file, and named presets.

A spec is `name[:key=value,...]` (see `decoptim.core.specs`, for example `topk:k=50` or
`bok:k=8,beta=0.02,lam=0.2,solver=mirror`); the temperature comes from the grid.

A TOML grid holds `temperatures = [...]` and either `decoders = ["spec", ...]` or
`[[decoder]]` tables with a `name` key and the parameters.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from ..core.specs import DecoderSpec, parse_spec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PAPER_BOK = [(0.01, 0.1), (0.02, 0.2), (0.05, 0.5)]
PAPER_TEMPERATURES = [0.1, 0.25, 0.5, 0.7, 0.9]


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


# Coverage strong enough to matter: the coverage gradient λβK·w reaches 2 and 8 logits on
# the top-8 tokens (w = 1 there), the size of the score gaps among a model's top tokens;
# the paper's settings give λβK ≤ 0.2.
COVERAGE_BOK = "k=8,lam=0.5,weights=topm,top_m=8,solver=exact"
COVERAGE_BETAS = (0.5, 2.0)


def bok_study(k: int = 8) -> Grid:
    """paper-table1 plus Best-of-K with a strong coverage term, its β = 0 and τ_eff controls."""
    paper = paper_table1(k)
    coverage = [f"bok:beta={beta},{COVERAGE_BOK}" for beta in COVERAGE_BETAS]
    coverage.append(f"bok-beta0:beta={COVERAGE_BETAS[0]},{COVERAGE_BOK}")
    return make_grid([s.text for s in paper.decoders] + coverage, list(paper.temperatures))


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


PRESETS = {"paper-table1": paper_table1, "bok-study": bok_study, "demo": demo_grid}
