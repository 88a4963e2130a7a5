"""Decoder specs: strict parsing of untrusted text, and no NaN row at any accepted parameter.

Every decoder name is built at and beyond the bounds of each of its parameters: beyond, a
ValueError names the parameter and the value; at the bounds, the decoder returns finite
rows that sum to 1 on ordinary, steep, tied and masked logits in every input dtype.
"""

import itertools
import json
import math
import os
import re
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import decoptim as d
from decoptim.core import specs
from decoptim.core.bok import MAX_INNER_ITERATIONS, MAX_OUTER_ITERATIONS, MAX_STEPS, MAX_TOP_M
from decoptim.core.checks import MAX_COUNT, MAX_SCALE, MIN_SCALE
from decoptim.core.specs import MAX_SPEC_LENGTH, NAMES, DecoderSpec, parameters, parse_spec
from decoptim.eval.grid import Config

# --- parsing ---------------------------------------------------------------------------------


def test_specs_read_back_and_build():
    spec = parse_spec(" bok : k=8, beta=0.02 ,lam=2e-1,solver=mirror,steps=5 ")
    assert spec == DecoderSpec(
        "bok", (("k", 8), ("beta", 0.02), ("lam", 0.2), ("solver", "mirror"), ("steps", 5))
    )
    assert parse_spec(spec.text) == spec
    assert isinstance(parse_spec("topk:k=3,").build(1.0), d.TopK)  # a trailing comma is fine


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("topk:k=3,k=3", ["'k'", "given twice"]),
        ("topk:k=３", ["'k'", "'３'", "U+FF13"]),
        ("topk:k=1٣", ["'k'", "U+0663"]),
        ("top\u200bk:k=3", ["unknown decoder"]),
        ("topk:k=3\x00", ["'k'", "U+0000"]),
        ("topk:k=1_000", ["k must be an int", "'1_000'"]),
        ("topk:k=0x10", ["k must be an int", "'0x10'"]),
        ("topk:k=1e3", ["k must be an int", "1000.0"]),
        ("topk:k=inf", ["k must be an int", "inf"]),
        ("topk:k=100000000000000000000000000000", ["k <= 2147483647", "k=10000000000"]),
        ("topk:k=-1", ["k >= 1", "k=-1"]),
        ("topp:p=nan", ["p=nan"]),
        ("topp:p=1e999", ["p=inf"]),
        ("bok:k=8,beta=0.02,lam=1e-45", ["lam=1e-45", "1e-08 <= lam"]),
        ("bok:k=8,beta=1e308,lam=0.2", ["beta=1e+308"]),
        ("bok:k=8,beta=0.02,lam=0.2,solver=mirror,step_size=1e308", ["step_size=1e+308"]),
        ("bok:k=8,beta=0.02,lam=0.2,solver=mirror,steps=20000", ["steps <= 50", "steps=20000"]),
        ("bok:k=8,beta=0.02,lam=0.2,outer_iterations=2000", ["outer_iterations=2000"]),
        ("bok:k=8,beta=0.02,lam=0.2,inner_iterations=11", ["inner_iterations=11"]),
        ("bok:k=8,beta=0.02,lam=0.2,top_m=2147483648", ["top_m <= 1024"]),
        ("bok:k=8,beta=true,lam=0.2", ["beta must be a number", "True"]),
        ("entmax:alpha=1e39", ["alpha=1e+39"]),
        ("entmax:alpha=1.000000000001", ["alpha=1.000000000001"]),
        ("topp:q=0.9", ["unexpected keyword 'q'", "its parameters: p"]),
        ("softmax:temperature=0.5", ["'temperature' cannot be set"]),
        ("softmax:validate=false", ["'validate' cannot be set"]),
        ("topk:k", ["expected key=value", "'k'"]),
        ("topk:=3", ["expected key=value"]),
        ("nucleus:p=0.9", ["unknown decoder 'nucleus'"]),
    ],
)
def test_bad_specs_are_rejected_naming_the_field_and_value(text, fragments):
    with pytest.raises(ValueError) as error:
        parse_spec(text)
    for fragment in fragments:
        assert fragment in str(error.value), (text, str(error.value))


def test_long_specs_are_rejected_and_quoted_short():
    for text in ("topk:" + ",".join(["k=3"] * 30_000), "topk:k=" + "9" * 100_000):
        with pytest.raises(ValueError, match=f"limit of {MAX_SPEC_LENGTH} characters") as error:
            parse_spec(text)
        assert len(str(error.value)) < 300
        assert f"({len(text)} characters)" in str(error.value)
    longest = "bok:" + ",".join(f"{p}=1" for p in parameters("bok"))
    assert len(longest) < MAX_SPEC_LENGTH  # every parameter spelled out still fits
    # a mapping with a long value is held to the same limit as text
    with pytest.raises(ValueError, match="limit of 512"):
        DecoderSpec.from_mapping({"name": "bok", "solver": "x" * 10_000})


@pytest.mark.parametrize(
    ("mapping", "fragment"),
    [
        ({"name": "topk", "k": [1, 2]}, "parameter 'k' must be a number, a boolean or a string"),
        ({"name": "topk", "k": None}, "parameter 'k'"),
        ({"name": "topk", "k": {"a": 1}}, "parameter 'k'"),
        ({"name": "x" * 10_000}, "(10000 characters)"),
        ({"name": "topk", "bad key": 1}, "bad parameter name 'bad key'"),
        ({"k": 3}, "no string 'name'"),
    ],
)
def test_bad_mappings_are_rejected(mapping, fragment):
    with pytest.raises(ValueError) as error:
        DecoderSpec.from_mapping(mapping)
    assert fragment in str(error.value)
    assert len(str(error.value)) < 300


def test_huge_integers_are_named_not_overflow_errors():
    for value in (10**29, 2**63, 2**1000):
        with pytest.raises(ValueError, match=r"k must satisfy k <= 2147483647"):
            DecoderSpec("topk", (("k", value),)).build(1.0)
        with pytest.raises(ValueError, match=r"lam must satisfy"):
            DecoderSpec("bok", (("k", 8), ("beta", 0.1), ("lam", value))).build(1.0)
    # too long even to print: named by its size
    with pytest.raises(ValueError, match=r"parameter 'k' is out of range, got <int of 16610 bits>"):
        DecoderSpec("topk", (("k", 10**5000),))
    with pytest.raises(ValueError, match=r"k must satisfy k <= 2147483647, got k=<int of 16610"):
        d.TopK(10**5000)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=80) | st.from_regex(r"(topk|bok|topp|entmax):[a-z_=0-9.,e+-]{0,40}"))
def test_any_text_parses_or_raises_a_short_value_error(text):
    try:
        spec = parse_spec(text)
    except ValueError as error:
        assert len(str(error)) < 600
    else:
        assert parse_spec(spec.text) == spec


@settings(max_examples=100, deadline=None)
@given(
    k=st.integers(1, MAX_COUNT),
    beta=st.floats(0.0, MAX_SCALE),
    lam=st.floats(MIN_SCALE, MAX_SCALE),
    solver=st.sampled_from(["exact", "mirror"]),
    steps=st.integers(1, MAX_STEPS),
)
def test_generated_specs_read_back(k, beta, lam, solver, steps):
    text = f"bok:k={k},beta={beta!r},lam={lam!r},solver={solver},steps={steps}"
    spec = parse_spec(text)
    assert spec.text == text and parse_spec(spec.text) == spec


# --- no NaN row at any accepted parameter ---------------------------------------------------


def _logits() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    rows = []
    for scale in (1.0, 30.0, 1e4):
        z = torch.randn(3, 64, generator=generator) * scale
        z[0, ::5] = -math.inf  # masked tokens
        z[2, :3] = z[2].max() + 1  # a three-way tie at the top
        rows.append(z)
    z = rows[0]
    flat = torch.where(torch.isfinite(z), 0.0, -math.inf)  # all remaining tokens tied
    return [*rows, flat, z.half(), z.bfloat16(), z.double()]


LOGITS = _logits()

# Each parameter at its bounds (accepted) and just beyond them (rejected).
BOUNDS: dict[str, tuple[list[object], list[object]]] = {
    "k": ([1, MAX_COUNT], [0, MAX_COUNT + 1, 10**29]),
    "p": ([5e-324, 1e-300, 1.0], [0.0, 1.0 + 1e-12, math.inf]),
    "mass": ([5e-324, 1e-300, 1.0], [0.0, 1.5]),
    "epsilon": ([5e-324, 1.0], [0.0, 2.0]),
    "alpha": ([1 + MIN_SCALE, 1.5, 2.0, MAX_SCALE], [1.0, 1 + 1e-12, 1e39, math.inf]),
    "beta": ([0.0, 5e-324, MAX_SCALE], [-1e-9, 1e9, 1e308]),
    "lam": ([MIN_SCALE, MAX_SCALE], [1e-45, 1e9, math.nan]),
    "top_m": ([1, MAX_TOP_M], [0, MAX_TOP_M + 1, MAX_COUNT + 1]),
    "steps": ([1, MAX_STEPS], [0, MAX_STEPS + 1, 20000]),
    "step_size": ([MIN_SCALE, MAX_SCALE], [0.0, 1e308]),
    "outer_iterations": ([1, MAX_OUTER_ITERATIONS], [0, MAX_OUTER_ITERATIONS + 1]),
    "inner_iterations": ([1, MAX_INNER_ITERATIONS], [0, MAX_INNER_ITERATIONS + 1]),
}
TEMPERATURES = ([MIN_SCALE, 1.0, MAX_SCALE], [0.0, 1e-45, 1e9, 1e38])
BASE = {"topk": {"k": 5}, "topp": {"p": 0.9}, "minp": {"p": 0.1}, "typical": {"mass": 0.9}}
BASE |= {"epsilon": {"epsilon": 1e-3}, "eta": {"epsilon": 1e-3}, "entmax": {"alpha": 1.5}}
BASE |= {name: {"k": 8, "beta": 0.02, "lam": 0.2} for name in ("bok", "bok-beta0", "bok-tau")}


# On a GPU the same checks also run the Triton kernels (their w = p routes at the bounds).
DEVICES = ["cpu"] + ["cuda"] * torch.cuda.is_available()


def assert_distribution(spec: DecoderSpec, temperature: float) -> None:
    decoder = spec.build(temperature)
    for z in (z.to(device) for device in DEVICES for z in LOGITS):
        q = decoder.probs(z)
        assert torch.isfinite(q).all(), (spec.text, temperature, z.dtype)
        total = q.double().sum(-1)
        assert torch.allclose(total, torch.ones_like(total), atol=1e-4), (spec.text, total)


def variants() -> list[tuple[str, str]]:
    """(name, parameter) for every parameter of every decoder name, plus temperature."""
    out = [(name, "temperature") for name in NAMES if name != "greedy"]
    return out + [(name, p) for name in NAMES for p in parameters(name) if p in BOUNDS]


@pytest.mark.parametrize(("name", "param"), variants())
def test_every_parameter_at_and_beyond_its_bounds(name, param):
    base = BASE.get(name, {})
    if param in ("step_size", "steps"):
        base = {**base, "solver": "mirror"}
    if param == "top_m":
        base = {**base, "weights": "topm"}
    if param == "temperature":
        good, bad = TEMPERATURES
        if name == "bok-tau":  # its softmax runs at τ/(1 + 1/λ) = τ/6, which must be in range
            good = [6 * good[0] * (1 + 1e-9), *good[1:]]
        for value in good:
            assert_distribution(DecoderSpec(name, tuple(base.items())), value)
        for value in bad:
            with pytest.raises(ValueError, match=re.escape(f"temperature={value!r}")):
                DecoderSpec(name, tuple(base.items())).build(value)
        return
    good, bad = BOUNDS[param]
    if (name, param) == ("bok-tau", "lam"):  # τ/(1 + 1/λ) at τ = 1 is in range from λ ≈ 1e-8
        good = [2 * MIN_SCALE, *good[1:]]
    for value in good:
        assert_distribution(DecoderSpec(name, tuple({**base, param: value}.items())), 1.0)
    for value in bad:
        text = f"{name}:" + ",".join(f"{k}={v}" for k, v in {**base, param: value}.items())
        with pytest.raises(ValueError) as error:
            parse_spec(text)
        assert f"{param}=" in str(error.value) or f"{param} must" in str(error.value), str(
            error.value
        )


def test_greedy_takes_no_parameters_and_gives_a_distribution():
    assert_distribution(DecoderSpec("greedy"), 1.0)
    with pytest.raises(ValueError, match="unexpected keyword 'k'"):
        parse_spec("greedy:k=1")


def bok_corners() -> list[dict]:
    """Extreme τ, λ and β (K alternating between its bounds) for each solver and weights."""
    rests = [
        dict(weights="prob"),
        dict(weights="topm", top_m=1),
        dict(weights="rank", top_m=MAX_TOP_M),
        dict(weights="prob", solver="mirror", step_size=MAX_SCALE),
        dict(weights="topm", top_m=3, solver="mirror", steps=MAX_STEPS),
        dict(weights="prob", scores="raw", reference="raw"),
    ]
    scales = itertools.product([MIN_SCALE, MAX_SCALE], [MIN_SCALE, MAX_SCALE], [0.0, MAX_SCALE])
    return [
        dict(temperature=t, lam=lam, beta=beta, k=(1, MAX_COUNT)[i % 2], **rest)
        for i, ((t, lam, beta), rest) in enumerate(itertools.product(scales, rests))
    ]


@pytest.mark.parametrize("corner", bok_corners(), ids=lambda c: ",".join(map(str, c.values())))
def test_best_of_k_at_the_corners_of_its_ranges(corner):
    params = dict(corner)
    temperature = params.pop("temperature")
    assert_distribution(DecoderSpec("bok", tuple(params.items())), temperature)
    # its β = 0 and matched-temperature controls: the latter only while τ/(1 + 1/λ) (with
    # the tempering of s and p) stays in range, else it says so naming τ and λ
    assert_distribution(DecoderSpec("bok-beta0", tuple(params.items())), temperature)
    tau_eff = d.BestOfK(temperature=temperature, **params).effective_temperature()
    if MIN_SCALE <= tau_eff <= MAX_SCALE:
        assert_distribution(DecoderSpec("bok-tau", tuple(params.items())), temperature)
    else:
        expected = f"temperature={temperature!r} and lam={params['lam']!r}"
        with pytest.raises(ValueError, match=re.escape(expected)):
            DecoderSpec("bok-tau", tuple(params.items())).build(temperature)


# --- registered decoders: register_decoder, entry points, plugins ----------------------------

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "my_decoder.py"


@pytest.fixture
def fresh_registry(monkeypatch):
    """The decoder registry, the plugin cache and the entry-point state as they were, after."""
    monkeypatch.setattr(specs, "_REGISTRY", dict(specs._REGISTRY))
    monkeypatch.setattr(specs, "_PLUGINS", {})
    monkeypatch.setattr(specs, "_entry_point_errors", {})
    monkeypatch.setattr(specs, "_entry_points_loaded", specs._entry_points_loaded)
    return specs._REGISTRY


def _capped(temperature=1.0, cap=3, validate=True):
    return d.TopK(cap, temperature=temperature, validate=validate)


def test_builtins_are_in_the_registry_in_their_order():
    assert tuple(NAMES)[:13] == (
        "greedy",
        "softmax",
        "topk",
        "topp",
        "minp",
        "typical",
        "epsilon",
        "eta",
        "sparsemax",
        "entmax",
        "bok",
        "bok-beta0",
        "bok-tau",
    )
    assert "topk" in NAMES and "nucleus" not in NAMES and 3 not in NAMES and [] not in NAMES
    assert parameters("topk") == ("k",) and parameters("greedy") == ()
    assert (
        not DecoderSpec("greedy").uses_temperature() and DecoderSpec("softmax").uses_temperature()
    )


def test_a_registered_decoder_works_like_a_builtin(fresh_registry):
    assert d.register_decoder("capped", _capped) is _capped
    assert "capped" in NAMES and parameters("capped") == ("cap",)
    spec = parse_spec("capped:cap=2")
    assert spec.label == "capped(cap=2)" and spec.as_dict() == {"name": "capped", "cap": 2}
    assert parse_spec(spec.text) == spec and DecoderSpec.from_mapping(spec.as_dict()) == spec
    decoder = parse_spec(spec.text).build(0.5)
    assert isinstance(decoder, d.TopK) and repr(decoder) == repr(spec.build(0.5))
    assert spec.build(0.5, validate=False).validate is False
    q = decoder.probs(torch.randn(3, 50))
    assert ((q > 0).sum(-1) == 2).all()
    with pytest.raises(ValueError, match=r"decoder 'capped': unexpected keyword 'k'; its param"):
        parse_spec("capped:k=2")
    with pytest.raises(ValueError, match=r"'capped:cap=0'.*k >= 1, got k=0"):
        parse_spec("capped:cap=0")
    with pytest.raises(ValueError, match=r"known: greedy, .*, bok-tau, capped"):
        parse_spec("nucleus:p=0.9")


def test_register_refuses_taken_names_bad_names_and_bad_factories(fresh_registry):
    with pytest.raises(ValueError, match=r"decoder 'topk' is already registered.*replace=True"):
        d.register_decoder("topk", _capped)
    d.register_decoder("capped", _capped)
    with pytest.raises(ValueError, match=r"'capped' is already registered"):
        d.register_decoder("capped", _capped)
    d.register_decoder("capped", lambda temperature=1.0: d.Softmax(temperature), replace=True)
    assert parameters("capped") == () and isinstance(parse_spec("capped").build(1.0), d.Softmax)
    for bad in ("", "a:b", "a b", "a,b", "a=b", "top(k)", "x@1", "3k", "ｋ", "x" * 65, None, 3):
        with pytest.raises(ValueError, match="bad decoder name"):
            d.register_decoder(bad, _capped)
    with pytest.raises(TypeError, match=r"register_decoder\('x'\): factory must be callable, got"):
        d.register_decoder("x", 3)
    with pytest.raises(TypeError, match=r"takes no 'temperature' parameter"):
        d.register_decoder("x", lambda k=1: d.Greedy())
    d.register_decoder("plain", lambda: d.Greedy(), uses_temperature=False)
    assert not parse_spec("plain").uses_temperature()
    d.register_decoder("wrong", lambda temperature=1.0: "not a decoder")
    with pytest.raises(ValueError, match=r"'wrong'.*returned str 'not a decoder', not a decoptim"):
        parse_spec("wrong")


def _fake_entry_points(monkeypatch, points):
    from importlib.metadata import EntryPoint

    made = [EntryPoint(name, value, specs.ENTRY_POINT_GROUP) for name, value in points]
    calls = []

    def entry_points(**selection):
        calls.append(selection)
        return [p for p in made if selection.get("group") == p.group]

    monkeypatch.setattr(specs.importlib.metadata, "entry_points", entry_points)
    monkeypatch.setattr(specs, "_entry_points_loaded", False)
    return calls


def test_entry_points_are_loaded_once_on_the_first_unknown_name(fresh_registry, monkeypatch):
    calls = _fake_entry_points(
        monkeypatch,
        [
            ("capped", "tests.core.test_specs:_capped"),
            ("broken", "no_such_module_for_decoptim:factory"),
        ],
    )
    assert isinstance(parse_spec("topk:k=3").build(1.0), d.TopK) and calls == []  # known names
    spec = parse_spec("capped:cap=4")
    assert calls == [{"group": "decoptim.decoders"}] and parameters("capped") == ("cap",)
    assert "TopKSupport(k=4)" in repr(spec.build(1.0))
    with pytest.raises(ValueError, match=r"entry point 'broken' = 'no_such_module_for_decop"):
        parse_spec("broken")
    with pytest.raises(ValueError, match=r"unknown decoder 'other'.*capped"):
        parse_spec("other")
    assert len(calls) == 1  # read once


def test_an_entry_point_without_temperature_is_registered_as_deterministic(
    fresh_registry, monkeypatch
):
    _fake_entry_points(monkeypatch, [("argmax", "decoptim.core.decoders:Greedy")])
    assert not parse_spec("argmax").uses_temperature()


def test_plugins_load_once_and_are_recorded(fresh_registry, tmp_path, monkeypatch):
    record = d.load_plugin(str(EXAMPLE))
    assert record["path"] == str(EXAMPLE) and len(record["sha256"]) == 64
    assert d.load_plugin(str(EXAMPLE)) is record  # not imported twice (no "already registered")
    spec = parse_spec("mine:k=2,width=1.5")
    assert "Band(width=1.5)" in repr(spec.build(0.7)) and parse_spec(spec.text) == spec
    with pytest.raises(FileNotFoundError, match=r"plugin '.*nowhere.py': no such file"):
        d.load_plugin(str(tmp_path / "nowhere.py"))
    bad = tmp_path / "bad_plugin.py"
    bad.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(ValueError, match=r"plugin '.*bad_plugin.py' failed to import: Runtime"):
        d.load_plugin(str(bad))
    with pytest.raises(ValueError, match=r"plugin 'no_such_module_for_decoptim' failed to import"):
        d.load_plugin("no_such_module_for_decoptim")
    monkeypatch.setenv(specs.PLUGINS_ENV, os.pathsep.join([str(EXAMPLE), "json"]))
    records = specs.load_plugins()
    assert records[0] is record and records[1]["plugin"] == "json"


def test_membership_iteration_and_length_see_the_entry_points(fresh_registry, monkeypatch):
    calls = _fake_entry_points(monkeypatch, [("capped", "tests.core.test_specs:_capped")])
    assert "topk" in NAMES and calls == []  # a known name needs no entry points
    assert "capped" in NAMES and len(calls) == 1
    assert NAMES[-1] == "capped" and len(NAMES) == len(tuple(NAMES)) and "capped" in list(NAMES)
    assert "nucleus" not in NAMES and len(calls) == 1  # read once
    # iteration alone reads them too
    calls = _fake_entry_points(monkeypatch, [("argmax", "decoptim.core.decoders:Greedy")])
    assert "argmax" in tuple(NAMES) and len(calls) == 1
    # a broken entry point is no member, and says why when looked up
    calls = _fake_entry_points(monkeypatch, [("broken", "no_such_module_for_decoptim:f")])
    assert "broken" not in NAMES and "broken" not in specs.names() and len(calls) == 1
    with pytest.raises(ValueError, match=r"entry point 'broken'.*failed to load"):
        specs.registered("broken")


def test_a_factory_that_takes_validate_gets_it_else_the_decoder_has_it_set(fresh_registry):
    assert specs.registered("topk").takes_validate and specs.registered("bok-tau").takes_validate
    d.register_decoder("plain", lambda temperature=1.0: d.Softmax(temperature))
    assert not specs.registered("plain").takes_validate
    assert parse_spec("plain").build(1.0, validate=False).validate is False
    assert parse_spec("topk:k=2").build(1.0, validate=False).validate is False


# Parameters that build each built-in name (the others take none or have defaults).
ROUND_TRIP = BASE | {"bok": {"k": 8, "beta": 0.02, "lam": 0.2, "solver": "mirror", "steps": 3}}


@pytest.mark.parametrize("name", list(NAMES))
def test_every_name_round_trips_through_text_mapping_and_manifest(name):
    spec = DecoderSpec(name, tuple(ROUND_TRIP.get(name, {}).items()))
    assert parse_spec(spec.text) == spec
    assert DecoderSpec.from_mapping(spec.as_dict()) == spec
    entry = json.loads(json.dumps(Config("x", spec, 0.7).manifest_entry()))
    assert DecoderSpec.from_mapping(entry["decoder"]) == spec
    # the manifest's repr is the decoder's, readable: an expression naming its parts
    decoder = spec.build(0.7)
    assert (
        entry["repr"]
        == repr(decoder)
        == repr(DecoderSpec.from_mapping(entry["decoder"]).build(0.7))
    )
    assert " at 0x" not in entry["repr"] and entry["repr"].startswith(type(decoder).__name__ + "(")
    if isinstance(decoder, d.SimplexDecoder):
        for part in (decoder.support, decoder.regularizer):
            assert re.fullmatch(r"[A-Za-z]+\(([a-z_]+=[0-9.e+-]+)?\)", repr(part)), repr(part)
            assert f"={part!r}" in entry["repr"]


def test_specs_name_the_controls_of_best_of_k():
    bok = parse_spec("bok:k=8,beta=0.5,lam=0.5,solver=exact")
    assert specs.registered("bok-beta0").control == specs.Control("bok", "β=0", free=("beta",))
    assert bok.resolved()["scores"] == "tempered" and bok.resolved()["k"] == 8
    kinds = {
        text: parse_spec(text).control_kind(bok)
        for text in (
            "bok-beta0:k=8,beta=0.5,lam=0.5,solver=exact",
            "bok-beta0:k=8,beta=0.1,lam=0.5",  # β is free; exact is the default solver
            "bok-beta0:k=8,beta=0.5,lam=0.5,solver=mirror",
            "bok-beta0:k=4,beta=0.5,lam=0.5",
            "bok-tau:k=4,beta=0.01,lam=0.5,solver=mirror",  # τ_eff: λ and the tempering only
            "bok-tau:k=8,beta=0.5,lam=0.2",
            "bok-tau:k=8,beta=0.5,lam=0.5,scores=raw",
            "bok-tau:k=8,beta=0.5,lam=0.5,reference=tempered",
            "bok:k=8,beta=0.5,lam=0.5",
            "softmax",
        )
    }
    assert kinds == {
        "bok-beta0:k=8,beta=0.5,lam=0.5,solver=exact": "β=0",
        "bok-beta0:k=8,beta=0.1,lam=0.5": "β=0",
        "bok-beta0:k=8,beta=0.5,lam=0.5,solver=mirror": None,
        "bok-beta0:k=4,beta=0.5,lam=0.5": None,
        "bok-tau:k=4,beta=0.01,lam=0.5,solver=mirror": "τ_eff",
        "bok-tau:k=8,beta=0.5,lam=0.2": None,
        "bok-tau:k=8,beta=0.5,lam=0.5,scores=raw": None,
        "bok-tau:k=8,beta=0.5,lam=0.5,reference=tempered": "τ_eff",
        "bok:k=8,beta=0.5,lam=0.5": None,
        "softmax": None,
    }
    assert parse_spec("bok-tau:k=8,beta=0.5,lam=0.5").control_kind(parse_spec("softmax")) is None
