"""Decoder grids: specs from the command line or a TOML file, and named presets.

A spec is `name[:key=value,...]` (see `decoptim.core.specs`, for example `topk:k=50` or
`bok:k=8,beta=0.02,lam=0.2,solver=mirror`); the temperature comes from the grid.

A TOML grid holds `temperatures = [...]` and either `decoders = ["spec", ...]` or
`[[decoder]]` tables with a `name` key and the parameters.

Sampling is one more axis: each decoder × τ is drawn i.i.d. (`"iid"`, the default), as
coordinated groups of K (`"coordinated"`, `decoptim.core.coordinated`), as coordinated groups
drawn by rejection over softmax's buckets (`"coordinated-rejection"`, top-p and typical
only: `Decoder.sample_coordinated(..., by_rejection=True)`), or several of these. In TOML,
`sampling = ["iid", "coordinated"]` at the top applies to every decoder and a `sampling`
key in a `[[decoder]]` table to that decoder; `group_size = K` sets K (default: n, one
group per problem). Greedy is deterministic and is only drawn i.i.d.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, replace
from pathlib import Path

from ..core.specs import DecoderSpec, parse_spec

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PAPER_BOK = [(0.01, 0.1), (0.02, 0.2), (0.05, 0.5)]
PAPER_TEMPERATURES = [0.1, 0.25, 0.5, 0.7, 0.9]


IID, COORDINATED, REJECTION = "iid", "coordinated", "coordinated-rejection"
SAMPLINGS = (IID, COORDINATED, REJECTION)


def is_coordinated(sampling: str) -> bool:
    """Whether a sampling draws coordinated groups (over q's buckets or by rejection)."""
    return sampling != IID


@dataclass(frozen=True)
class Config:
    """One cell of a grid: a decoder at a temperature, drawn i.i.d. or coordinated (over q's
    buckets, or by rejection over softmax's)."""

    id: str
    spec: DecoderSpec
    temperature: float
    group_size: int | None = None  # K of a coordinated config; None: i.i.d.
    by_rejection: bool = False  # a coordinated config drawn by rejection

    @property
    def coordinated(self) -> bool:
        return self.group_size is not None

    @property
    def sampling(self) -> str:
        if not self.coordinated:
            return IID
        return REJECTION if self.by_rejection else COORDINATED

    def manifest_entry(self) -> dict:
        return {
            "id": self.id,
            "decoder": self.spec.as_dict(),
            "temperature": self.temperature,
            "sampling": self.sampling,
            "group_size": self.group_size,
            "repr": repr(self.spec.build(self.temperature)),
        }


@dataclass(frozen=True)
class Grid:
    decoders: tuple[DecoderSpec, ...]
    temperatures: tuple[float, ...]
    sampling: tuple[tuple[str, ...], ...] = ()  # per decoder; empty: every decoder i.i.d.
    group_size: int | None = None  # K of the coordinated configs; None: n

    def __post_init__(self) -> None:
        if not self.decoders:
            raise ValueError("the grid has no decoders")
        if not self.temperatures or any(t <= 0 for t in self.temperatures):
            raise ValueError(f"temperatures must be positive, got {list(self.temperatures)}")
        if self.sampling and len(self.sampling) != len(self.decoders):
            raise ValueError(
                f"sampling gives {len(self.sampling)} entries for {len(self.decoders)} decoders"
            )
        for chosen in self.sampling:
            _check_sampling(chosen)
        if self.group_size is not None:
            _check_group_size(self.group_size)

    def sampling_of(self, index: int) -> tuple[str, ...]:
        return self.sampling[index] if self.sampling else (IID,)

    def has_coordinated(self) -> bool:
        return any(
            any(map(is_coordinated, self.sampling_of(i))) and spec.uses_temperature()
            for i, spec in enumerate(self.decoders)
        )

    def has_rejection(self) -> bool:
        return any(
            REJECTION in self.sampling_of(i) and spec.uses_temperature()
            for i, spec in enumerate(self.decoders)
        )

    def with_coordinated(self, group_size: int | None = None, sampling: str = COORDINATED) -> Grid:
        """The grid with every decoder also drawn coordinated (`sampling`: over q's buckets
        or by rejection), its other cells kept."""
        if not is_coordinated(sampling) or sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be {COORDINATED} or {REJECTION}, got {sampling!r}")
        added = tuple(
            tuple(dict.fromkeys((*self.sampling_of(i), sampling)))
            for i in range(len(self.decoders))
        )
        k = self.group_size if group_size is None else group_size
        return replace(self, sampling=added, group_size=k)

    def configs(self, n: int | None = None) -> list[Config]:
        """Every cell, in the order of each decoder's samplings; greedy appears once.

        Coordinated cells draw groups of K = `group_size` (default `n`, the samples per
        problem), which must divide n; their ids end in `+coord(K=...)`, or
        `+coord(K=...,rejection)` drawn by rejection (a ValueError for a decoder that
        cannot be: it names the decoder).
        """
        cells = []
        for index, spec in enumerate(self.decoders):
            if not spec.uses_temperature():  # deterministic: one i.i.d. cell, whatever sampling
                cells.append(Config(spec.label, spec, 1.0))
                continue
            for sampling in self.sampling_of(index):
                k = self._group_size(n) if is_coordinated(sampling) else None
                rejection = sampling == REJECTION
                suffix = "" if k is None else f"+coord(K={k}{',rejection' if rejection else ''})"
                for tau in self.temperatures:
                    if rejection:
                        spec.build(tau).check_by_rejection(True)
                    cells.append(Config(f"{spec.label}@{tau:g}{suffix}", spec, tau, k, rejection))
        return cells

    def _group_size(self, n: int | None) -> int:
        k = self.group_size if self.group_size is not None else n
        if k is None:
            raise ValueError("coordinated configs need a group size: give group_size or n")
        if n is not None and (k > n or n % k):
            raise ValueError(
                f"n={n} samples per problem must be a multiple of group_size={k} "
                "(n/K groups of K per problem)"
            )
        return k


def _check_sampling(chosen: tuple[str, ...]) -> None:
    unknown = [s for s in chosen if s not in SAMPLINGS]
    if not chosen or unknown or len(set(chosen)) != len(chosen):
        raise ValueError(
            f"sampling must be one or more of {', '.join(SAMPLINGS)} without repeats, "
            f"got sampling={list(chosen)!r}"
        )


def _check_group_size(group_size: object) -> None:
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be an int >= 1, got group_size={group_size!r}")


def make_grid(
    decoders: list[str],
    temperatures: list[float],
    sampling: tuple[str, ...] | list[tuple[str, ...]] = (IID,),
    group_size: int | None = None,
) -> Grid:
    """A grid of decoder specs × temperatures; `sampling` applies to every decoder, or is a
    list with one tuple per decoder."""
    per_decoder = (
        [tuple(s) for s in sampling]
        if isinstance(sampling, list)
        else [tuple(sampling)] * len(decoders)
    )
    return Grid(
        tuple(parse_spec(s) for s in decoders),
        tuple(float(t) for t in temperatures),
        tuple(per_decoder),
        group_size,
    )


def load_grid_file(path: str | Path) -> Grid:
    with open(path, "rb") as handle:
        try:
            config = tomllib.load(handle)
        except tomllib.TOMLDecodeError as error:
            raise ValueError(f"{path}: {error}") from None
    default = _sampling_value(path, config.get("sampling", [IID]))
    specs = list(config.get("decoders", []))
    sampling = [default] * len(specs)
    for table in config.get("decoder", []):
        table = dict(table)
        name = table.pop("name", None)
        if name is None:
            raise ValueError(f"{path}: a [[decoder]] table has no name")
        sampling.append(_sampling_value(path, table.pop("sampling", default)))
        specs.append(name + (":" + ",".join(f"{k}={v}" for k, v in table.items()) if table else ""))
    return make_grid(
        specs, list(config.get("temperatures", [1.0])), sampling, config.get("group_size")
    )


def _sampling_value(path: str | Path, value: object) -> tuple[str, ...]:
    chosen = (value,) if isinstance(value, str) else value
    if not isinstance(chosen, (list, tuple)):
        raise ValueError(f"{path}: sampling must be a string or a list, got sampling={value!r}")
    try:
        _check_sampling(tuple(chosen))
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from None
    return tuple(chosen)


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


def demo_grid(group_size: int | None = None) -> Grid:
    """A handful of decoders at a low and a high temperature (what `decoptim demo` runs);
    softmax is also drawn coordinated, in groups of `group_size` (default: n)."""
    decoders = [
        "softmax",
        "topp:p=0.9",
        "minp:p=0.1",
        "bok:k=8,beta=0.05,lam=0.5",
        "bok-beta0:k=8,beta=0.05,lam=0.5",
        "bok-tau:k=8,beta=0.05,lam=0.5",
    ]
    sampling = [(IID, COORDINATED)] + [(IID,)] * (len(decoders) - 1)
    return make_grid(decoders, [0.7, 1.5], sampling, group_size)


STUDY_TEMPERATURES = [0.5, 0.7, 1.0, 1.3]
PAPER_STUDY_BOK = "k=8,beta=0.02,lam=0.2"  # the paper's middle (β, λ), as in paper_table1
# bok_study's strong coverage at its first β: λβK·w = 2 logits on the top-8 tokens
STUDY_COVERAGE_BOK = f"k=8,beta={COVERAGE_BETAS[0]},lam=0.5"


def coord_study(group_size: int | None = None) -> Grid:
    """Coordinated K-sample decoding against i.i.d. sampling and Best-of-K, at
    τ ∈ {0.5, 0.7, 1.0, 1.3} (the grid of bench/coord_study.toml, config for config).

    Softmax, top-p 0.95, min-p 0.05, BoK at the paper's (β, λ) = (0.02, 0.2) with K = 8 and
    its solver (5 mirror steps, as paper_table1's row) and BoK with bok_study's strong
    top-8 coverage (β = 0.5, λ = 0.5, exact solver) are each drawn i.i.d. and coordinated
    (groups of `group_size`, default n: the run's --group-size). Each BoK's τ_eff
    (`bok-tau`, the same λ) and β = 0 (`bok-beta0`) controls are drawn i.i.d. only.

    Configs come most important first, since a run cut short resumes in this order:
    softmax (i.i.d. at every τ, then coordinated), top-p, min-p, the two BoKs, then the
    controls.
    """
    paper = f"{PAPER_STUDY_BOK},solver=mirror,steps=5"
    coverage = f"{STUDY_COVERAGE_BOK},weights=topm,top_m=8,solver=exact"
    both = ["softmax", "topp:p=0.95", "minp:p=0.05", f"bok:{paper}", f"bok:{coverage}"]
    controls = [
        f"bok-tau:{PAPER_STUDY_BOK}",
        f"bok-beta0:{paper}",
        f"bok-tau:{STUDY_COVERAGE_BOK}",
        f"bok-beta0:{coverage}",
    ]
    sampling = [(IID, COORDINATED)] * len(both) + [(IID,)] * len(controls)
    return make_grid(both + controls, STUDY_TEMPERATURES, sampling, group_size)


PRESETS = {
    "paper-table1": paper_table1,
    "bok-study": bok_study,
    "demo": demo_grid,
    "coord-study": coord_study,
}
