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

More names come from `register_decoder(name, factory)`: `factory(temperature=τ, **params)`
returns the decoder, and its signature lists the parameters a spec may set. The built-in
names above are registered the same way. Installed packages add names through the
entry-point group `decoptim.decoders` (see `register_decoder`); a user's own file or module
is imported with `load_plugin` (the CLI's `--plugin`, or `DECOPTIM_PLUGINS`).

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

import hashlib
import importlib
import importlib.metadata
import importlib.util
import inspect
import os
import re
import sys
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from .bok import BestOfK
from .checks import shown
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
# The longest spec (text form) accepted: the longest real one, every BoK parameter spelled
# out, is about 200 characters.
MAX_SPEC_LENGTH = 512
# Given by the caller (the temperature) or an option of `build` (validate), never by a spec.
NOT_PARAMETERS = ("temperature", "validate")
# Installed packages add decoders here: each entry point's name is the decoder's name and it
# loads to the factory (see `register_decoder`).
ENTRY_POINT_GROUP = "decoptim.decoders"
# os.pathsep-separated plugin files or modules that the CLI and the vLLM processor import.
PLUGINS_ENV = "DECOPTIM_PLUGINS"
# A decoder name: printable ASCII without the characters that delimit a spec (`:`, `,`, `=`)
# or its label and config id (`(`, `)`, `@`, `+`), and no spaces.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class Registered:
    """One decoder name: its factory, the parameters a spec may set, and where it came from."""

    name: str
    factory: Callable[..., Decoder]
    parameters: tuple[str, ...]
    uses_temperature: bool
    options: tuple[str, ...]  # the build options (validate) the factory takes itself
    origin: str


_REGISTRY: dict[str, Registered] = {}
_LOCK = threading.RLock()
_entry_points_loaded = False
_entry_point_errors: dict[str, str] = {}


def _signature_of(name: str, factory: Callable[..., Decoder]) -> inspect.Signature:
    try:
        return inspect.signature(factory)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"register_decoder({name!r}): cannot read the signature of factory {factory!r} "
            f"({error})"
        ) from None


def register_decoder(
    name: str,
    factory: Callable[..., Decoder],
    *,
    uses_temperature: bool = True,
    replace: bool = False,
) -> Callable[..., Decoder]:
    """Make decoder `name` available to specs everywhere (`parse_spec`, `decoptim eval
    --decoders`, TOML grids, vLLM requests).

    `factory(temperature=τ, **params)` returns the `Decoder` (without `temperature` when
    `uses_temperature=False`, as for `greedy`); its signature names the parameters a spec may
    set (`temperature` and `validate` are never spec parameters; a factory that takes
    `validate` gets the caller's, else the built decoder's `validate` attribute is set).
    Names are printable ASCII: a letter or `_`, then letters, digits, `_`, `.` or `-`, at
    most 64 characters. Registering a taken name raises ValueError unless `replace=True`.
    Returns `factory`, so that this also works as `register_decoder("x", f)` in a module
    that a plugin loads.
    """
    if not isinstance(name, str) or _NAME.fullmatch(name) is None:
        raise ValueError(
            f"register_decoder: bad decoder name {shown(name)}; a name is a letter or '_', "
            "then letters, digits, '_', '.' or '-' (at most 64 characters)"
        )
    if not callable(factory):
        raise TypeError(
            f"register_decoder({name!r}): factory must be callable, got "
            f"{type(factory).__name__} {shown(factory)}"
        )
    if not isinstance(uses_temperature, bool):
        raise TypeError(
            f"register_decoder({name!r}): uses_temperature must be a bool, got "
            f"{shown(uses_temperature)}"
        )
    signature = _signature_of(name, factory)
    kinds = {p.name: p.kind for p in signature.parameters.values()}
    named = [
        p
        for p, kind in kinds.items()
        if kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD)
        and kind != inspect.Parameter.POSITIONAL_ONLY
    ]
    takes_any = inspect.Parameter.VAR_KEYWORD in kinds.values()
    if uses_temperature and "temperature" not in named and not takes_any:
        raise TypeError(
            f"register_decoder({name!r}): factory {getattr(factory, '__name__', factory)!r} "
            "takes no 'temperature' parameter; give it one (it is called as "
            "factory(temperature=t, **params)) or pass uses_temperature=False"
        )
    entry = Registered(
        name=name,
        factory=factory,
        parameters=tuple(p for p in named if p not in ("self", *NOT_PARAMETERS)),
        uses_temperature=uses_temperature,
        options=tuple(p for p in named if p == "validate") or (("validate",) if takes_any else ()),
        origin=getattr(factory, "__module__", None) or "?",
    )
    with _LOCK:
        if name in _REGISTRY and not replace:
            raise ValueError(
                f"register_decoder: decoder {name!r} is already registered (from "
                f"{_REGISTRY[name].origin}); pass replace=True to replace it"
            )
        _REGISTRY[name] = entry
    return factory


def _load_entry_points() -> None:
    """Register the decoders of the `decoptim.decoders` entry points, once per process.

    A failure is kept (naming the entry point) and raised when its name is looked up."""
    global _entry_points_loaded
    with _LOCK:
        if _entry_points_loaded:
            return
        _entry_points_loaded = True
        for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            where = f"entry point {point.name!r} = {point.value!r} (group {ENTRY_POINT_GROUP!r})"
            try:
                factory = point.load()
                takes = _signature_of(point.name, factory).parameters if callable(factory) else {}
                uses = "temperature" in takes or any(
                    p.kind == inspect.Parameter.VAR_KEYWORD for p in takes.values()
                )
                register_decoder(point.name, factory, uses_temperature=uses)
            except Exception as error:  # a plugin may raise anything
                _entry_point_errors[point.name] = (
                    f"{where} failed to load: {type(error).__name__}: {error}"
                )


def _lookup(name: object) -> Registered | None:
    """The registered decoder `name`; an unknown name first loads the entry points."""
    if not isinstance(name, str):
        return None
    found = _REGISTRY.get(name)
    if found is None and not _entry_points_loaded:
        _load_entry_points()
        found = _REGISTRY.get(name)
    if found is None and name in _entry_point_errors:
        raise ValueError(_entry_point_errors[name])
    return found


def registered(name: str) -> Registered:
    """The registry entry of decoder `name` (ValueError listing the known names)."""
    found = _lookup(name)
    if found is None:
        raise ValueError(f"unknown decoder {shown(name)}; known: {', '.join(names())}")
    return found


def names() -> tuple[str, ...]:
    """Every registered decoder name, built-ins first, in registration order."""
    return tuple(_REGISTRY)


class _Names(Sequence):
    """`NAMES`: a live, read-only view of the registered decoder names."""

    def __getitem__(self, index):  # type: ignore[override]
        return names()[index]

    def __len__(self) -> int:
        return len(_REGISTRY)

    def __iter__(self) -> Iterator[str]:
        return iter(names())

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name in _REGISTRY

    def __repr__(self) -> str:
        return repr(names())


NAMES = _Names()


def parameters(name: str) -> tuple[str, ...]:
    """The parameters a spec of decoder `name` may set."""
    return registered(name).parameters


# --- plugins: a user's file or module that registers decoders ------------------------------

_PLUGINS: dict[str, dict] = {}  # what load_plugin was given (resolved) -> its record


def load_plugin(plugin: str | os.PathLike) -> dict:
    """Import a user's decoders: a Python file (`my_decoders.py`, a path) or a module name
    (`my_pkg.decoders`), whose import calls `register_decoder`. Each plugin is imported once
    per process; the record (`plugin`, `path`, `sha256` of the file) is what a run manifest
    keeps. FileNotFoundError for a missing file, ValueError naming the plugin if it fails."""
    text = os.fspath(plugin)
    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"a plugin is a .py file or a module name, got {shown(text)}")
    is_file = text.endswith(".py") or os.sep in text or "/" in text or Path(text).is_file()
    key = str(Path(text).resolve()) if is_file else text
    with _LOCK:
        if key in _PLUGINS:
            return _PLUGINS[key]
        if is_file:
            path = Path(text)
            if not path.is_file():
                raise FileNotFoundError(f"plugin {text!r}: no such file ({path.resolve()})")
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            stem = re.sub(r"\W", "_", path.stem)
            module_name = f"decoptim_plugin_{stem}_{digest[:12]}"
            try:
                spec = importlib.util.spec_from_file_location(module_name, path)
                module = importlib.util.module_from_spec(spec)
                sys.modules[module_name] = module
                spec.loader.exec_module(module)
            except Exception as error:
                sys.modules.pop(module_name, None)
                raise ValueError(
                    f"plugin {text!r} failed to import: {type(error).__name__}: {error}"
                ) from error
        else:
            try:
                module = importlib.import_module(text)
            except Exception as error:
                raise ValueError(
                    f"plugin {text!r} failed to import: {type(error).__name__}: {error}"
                ) from error
            path = Path(module.__file__) if getattr(module, "__file__", None) else None
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path else None
        record = {"plugin": text, "path": str(path.resolve()) if path else None, "sha256": digest}
        _PLUGINS[key] = record
        return record


def load_plugins(plugins: Sequence[str | os.PathLike] = (), env: bool = True) -> list[dict]:
    """`load_plugin` for each of `PLUGINS_ENV` (when `env`), then each of `plugins`."""
    given = [p for p in os.environ.get(PLUGINS_ENV, "").split(os.pathsep) if p.strip()]
    return [load_plugin(p) for p in [*(given if env else []), *plugins]]


# --- the built-in decoders, through the same registry ---------------------------------------


def _bok_beta0(**kwargs: object) -> Decoder:
    return BestOfK(**kwargs).beta_zero_control()


def _bok_tau(**kwargs: object) -> Decoder:
    return BestOfK(**kwargs).matched_temperature_control()


for _factory in (_bok_beta0, _bok_tau):
    _factory.__signature__ = inspect.signature(BestOfK)
register_decoder("greedy", Greedy, uses_temperature=False)
for _name, _builder in BUILDERS.items():
    register_decoder(_name, _builder)  # Entmax checks α against its computable range
register_decoder("bok", BestOfK)
register_decoder("bok-beta0", _bok_beta0)
register_decoder("bok-tau", _bok_tau)
del _factory, _name, _builder

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_INT = re.compile(r"[+-]?[0-9]+")
_FLOAT = re.compile(
    r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[+-]?(?:inf|infinity|nan)",
    re.IGNORECASE,
)
_PRINTABLE_ASCII = re.compile(r"[\x20-\x7e]*")


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
        entry = registered(self.name)  # ValueError for an unknown name, listing the known
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
            if key not in entry.parameters:
                raise ValueError(
                    f"decoder {self.name!r}: unexpected keyword {key!r}; its parameters: "
                    + (", ".join(entry.parameters) or "none")
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
        return registered(self.name).uses_temperature

    def build(self, temperature: float, **options: object) -> Decoder:
        """The decoder at `temperature`; `options` (e.g. validate=False) go to its constructor.

        Raises ValueError naming the spec, the parameter and the value for a bad value.
        """
        entry = registered(self.name)
        kwargs = dict(self.params)
        kwargs |= {k: v for k, v in options.items() if k in entry.options or k != "validate"}
        if entry.uses_temperature:
            kwargs["temperature"] = temperature
        try:
            decoder = entry.factory(**kwargs)
        except (TypeError, ValueError) as error:
            raise ValueError(f"decoder spec {shown(self.text)}: {error}") from None
        if not isinstance(decoder, Decoder):
            raise ValueError(
                f"decoder spec {shown(self.text)}: the factory of {self.name!r} ({entry.origin}) "
                f"returned {type(decoder).__name__} {shown(decoder)}, not a decoptim Decoder"
            )
        if "validate" in options and "validate" not in entry.options:
            decoder.validate = options["validate"]
        return decoder

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
    if _PRINTABLE_ASCII.fullmatch(name) is None or _lookup(name.strip()) is None:
        raise ValueError(
            f"unknown decoder {shown(name.strip())} in spec {shown(text)}; known: "
            + ", ".join(names())
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
