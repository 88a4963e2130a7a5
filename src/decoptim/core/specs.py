"""Decoders by name: `DecoderSpec` builds any decoder from a name and plain parameters.

This is what engines and configuration files hand across process boundaries: a spec is
hashable, serialisable (`as_dict`) and built into a `Decoder` for a given temperature.
The text form is `name[:key=value,...]`, for example `topk:k=50` or
`bok:k=8,beta=0.02,lam=0.2,solver=mirror`. Names:

    greedy  softmax  topk(k)  topp(p)  minp(p)  typical(mass)  epsilon(epsilon)  eta(epsilon)
    sparsemax  entmax(alpha)  bok(k, beta, lam, weights, top_m, solver, steps, step_size,
    scores, reference, outer_iterations, inner_iterations)  bok-beta0(...)  bok-tau(...)

`bok-beta0` is BoK's β = 0 control and `bok-tau` plain sampling at BoK's matched effective
temperature; both take the same parameters as the `bok` they control, and are registered
as its controls (`Control`: `DecoderSpec.control_kind` says which `bok` spec one controls).

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

from . import decoders
from .bok import BestOfK
from .checks import shown
from .decoders import Decoder

# BestOfK and its two controls (see `Control`), each taking BestOfK's parameters.
BOK_NAMES = ("bok", "bok-beta0", "bok-tau")
# The longest spec (text form) accepted: the longest real one, every BoK parameter spelled
# out, is about 200 characters.
MAX_SPEC_LENGTH = 512
# Given by the caller (the temperature) or an option of `build` (validate), never by a spec;
# a `support` argument (Best-of-K's) is a Python object, composed in Python, not a value.
NOT_PARAMETERS = ("temperature", "validate", "support")
# Installed packages add decoders here: each entry point's name is the decoder's name and it
# loads to the factory (see `register_decoder`).
ENTRY_POINT_GROUP = "decoptim.decoders"
# os.pathsep-separated plugin files or modules that the CLI and the vLLM processor import.
PLUGINS_ENV = "DECOPTIM_PLUGINS"
# A decoder name: printable ASCII without the characters that delimit a spec (`:`, `,`, `=`)
# or its label and config id (`(`, `)`, `@`, `+`), and no spaces.
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


@dataclass(frozen=True)
class Control:
    """What a control decoder stands for: the `kind` of control ("β=0", "τ_eff", ...) of
    decoder `of`. A spec of the control is the control of a spec of `of` when the two agree
    on the parameters `same`, or on every parameter but `free` when `same` is None, each
    with its factory's default where a spec leaves it out (see `DecoderSpec.control_kind`).
    """

    of: str
    kind: str
    same: tuple[str, ...] | None = None
    free: tuple[str, ...] = ()


@dataclass(frozen=True)
class Registered:
    """One decoder name: its factory, the parameters a spec may set (and the defaults of
    those that have one), where it came from, and what it is a control of."""

    name: str
    factory: Callable[..., Decoder]
    parameters: tuple[str, ...]
    defaults: tuple[tuple[str, object], ...]
    uses_temperature: bool
    takes_validate: bool  # the factory takes `validate` itself (else it is set on the decoder)
    origin: str
    control: Control | None = None


_REGISTRY: dict[str, Registered] = {}
_LOCK = threading.RLock()
_entry_points_loaded = False
_entry_point_errors: dict[str, str] = {}


def register_decoder(
    name: str,
    factory: Callable[..., Decoder],
    *,
    uses_temperature: bool = True,
    replace: bool = False,
    control: Control | None = None,
) -> Callable[..., Decoder]:
    """Make decoder `name` available to specs everywhere (`parse_spec`, `decoptim eval
    --decoders`, TOML grids, vLLM requests).

    `factory(temperature=τ, **params)` returns the `Decoder` (without `temperature` when
    `uses_temperature=False`, as for `greedy`); its signature names the parameters a spec may
    set (`temperature` and `validate` are never spec parameters; a factory that takes
    `validate` gets the caller's, else the built decoder's `validate` attribute is set).
    Names are printable ASCII: a letter or `_`, then letters, digits, `_`, `.` or `-`, at
    most 64 characters. Registering a taken name raises ValueError unless `replace=True`.
    `control` says what the decoder is a control of (`decoptim compare` pairs them).
    Returns `factory`, so that this also works as `register_decoder("x", f)` in a module
    that a plugin loads.
    """
    if not isinstance(uses_temperature, bool):
        raise TypeError(
            f"register_decoder({name!r}): uses_temperature must be a bool, got "
            f"{shown(uses_temperature)}"
        )
    return _register(name, factory, uses_temperature, replace, control)


def _register(
    name: str,
    factory: Callable[..., Decoder],
    uses_temperature: bool | None,
    replace: bool = False,
    control: Control | None = None,
) -> Callable[..., Decoder]:
    """`register_decoder`; `uses_temperature=None`: whether the factory takes a temperature
    (an entry point's, which cannot say)."""
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
    if control is not None and not isinstance(control, Control):
        raise TypeError(
            f"register_decoder({name!r}): control must be a Control, got {shown(control)}"
        )
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError) as error:
        raise TypeError(
            f"register_decoder({name!r}): cannot read the signature of factory {factory!r} "
            f"({error})"
        ) from None
    named = {
        p.name: p
        for p in signature.parameters.values()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }
    takes_any = any(p.kind == inspect.Parameter.VAR_KEYWORD for p in signature.parameters.values())
    takes_temperature = "temperature" in named or takes_any
    if uses_temperature is None:
        uses_temperature = takes_temperature
    elif uses_temperature and not takes_temperature:
        raise TypeError(
            f"register_decoder({name!r}): factory {getattr(factory, '__name__', factory)!r} "
            "takes no 'temperature' parameter; give it one (it is called as "
            "factory(temperature=t, **params)) or pass uses_temperature=False"
        )
    parameters = tuple(p for p in named if p not in ("self", *NOT_PARAMETERS))
    entry = Registered(
        name=name,
        factory=factory,
        parameters=parameters,
        defaults=tuple(
            (p, named[p].default) for p in parameters if named[p].default is not named[p].empty
        ),
        uses_temperature=uses_temperature,
        takes_validate="validate" in named or takes_any,
        origin=getattr(factory, "__module__", None) or "?",
        control=control,
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
    """Register the decoders of the `decoptim.decoders` entry points, once per process (the
    first time a name is not found, or all names are asked for).

    A failure is kept (naming the entry point) and raised when its name is looked up. Other
    threads wait on the lock until the entry points are read; the reading thread itself (a
    plugin that looks names up as it loads) sees the names registered so far."""
    global _entry_points_loaded
    with _LOCK:
        if _entry_points_loaded:
            return
        _entry_points_loaded = True
        for point in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            where = f"entry point {point.name!r} = {point.value!r} (group {ENTRY_POINT_GROUP!r})"
            try:
                _register(point.name, point.load(), uses_temperature=None)
            except Exception as error:  # a plugin may raise anything
                _entry_point_errors[point.name] = (
                    f"{where} failed to load: {type(error).__name__}: {error}"
                )


def _find(name: object) -> Registered | None:
    """The registered decoder `name`, or None; an unknown name first loads the entry points."""
    if not isinstance(name, str):
        return None
    found = _REGISTRY.get(name)
    if found is None:
        _load_entry_points()
        found = _REGISTRY.get(name)
    return found


def _lookup(name: object) -> Registered | None:
    """`_find`, raising ValueError for an entry point of that name that failed to load."""
    found = _find(name)
    if found is None and isinstance(name, str) and name in _entry_point_errors:
        raise ValueError(_entry_point_errors[name])
    return found


def registered(name: str) -> Registered:
    """The registry entry of decoder `name` (ValueError listing the known names)."""
    found = _lookup(name)
    if found is None:
        raise ValueError(f"unknown decoder {shown(name)}; known: {', '.join(names())}")
    return found


def names() -> tuple[str, ...]:
    """Every registered decoder name (the entry points' included), built-ins first, in
    registration order."""
    _load_entry_points()
    with _LOCK:
        return tuple(_REGISTRY)


class _Names(Sequence):
    """`NAMES`: a live, read-only view of the registered decoder names (the entry points'
    included: membership, iteration and length read them first)."""

    def __getitem__(self, index):  # type: ignore[override]
        return names()[index]

    def __len__(self) -> int:
        return len(names())

    def __iter__(self) -> Iterator[str]:
        return iter(names())

    def __contains__(self, name: object) -> bool:
        return _find(name) is not None

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
register_decoder("greedy", decoders.Greedy, uses_temperature=False)
register_decoder("softmax", decoders.Softmax)
register_decoder("topk", decoders.TopK)
register_decoder("topp", decoders.TopP)
register_decoder("minp", decoders.MinP)
register_decoder("typical", decoders.Typical)
register_decoder("epsilon", decoders.Epsilon)
register_decoder("eta", decoders.Eta)
register_decoder("sparsemax", decoders.Sparsemax)
register_decoder("entmax", decoders.Entmax)  # Entmax checks α against its computable range
# β = 0: the same BoK without its coverage term; τ_eff: softmax at the temperature of BoK's
# β = 0 optimum, which depends on λ and the tempering of the scores and the reference only.
for _name, _factory, _control in zip(
    BOK_NAMES,
    (BestOfK, _bok_beta0, _bok_tau),
    (
        None,
        Control("bok", "β=0", free=("beta",)),
        Control("bok", "τ_eff", same=("lam", "scores", "reference")),
    ),
    strict=True,
):
    register_decoder(_name, _factory, control=_control)
del _factory, _name, _control

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
        kwargs |= {k: v for k, v in options.items() if k != "validate" or entry.takes_validate}
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
        if "validate" in options and not entry.takes_validate:
            decoder.validate = options["validate"]
        return decoder

    def as_dict(self) -> dict:
        return {"name": self.name, **dict(self.params)}

    def resolved(self) -> dict[str, object]:
        """Every parameter that the spec sets or its factory defaults, by name."""
        return {**dict(registered(self.name).defaults), **dict(self.params)}

    def control_kind(self, treated: DecoderSpec) -> str | None:
        """The kind of control (`Control.kind`, e.g. "β=0") of `treated` that this spec is,
        or None: its name is registered as a control of `treated`'s name and the two agree
        on the parameters the control keeps (defaults filled in)."""
        control = registered(self.name).control
        if control is None or control.of != treated.name:
            return None
        mine, theirs = self.resolved(), treated.resolved()
        keys = control.same if control.same is not None else {*mine, *theirs} - {*control.free}
        return control.kind if all(mine.get(k) == theirs.get(k) for k in keys) else None


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
