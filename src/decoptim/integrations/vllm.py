"""vLLM integration: any decoptim decoder inside vLLM's v1 sampler, chosen per request.

A request opts in through `SamplingParams.extra_args`, with a mapping or the spec string of
`decoptim.core.specs` (the OpenAI-compatible server's `vllm_xargs` takes only flat values):

    SamplingParams(temperature=0.7, n=8,
                   extra_args={"decoptim": {"decoder": "bok", "k": 8, "beta": 0.02, "lam": 0.2}})
    SamplingParams(temperature=0.7, n=8, extra_args={"decoptim": "bok:k=8,beta=0.02,lam=0.2"})

The decoder is built at the request's own `temperature` (the OpenAI API's `temperature`
field). `DecoptimLogitsProcessor` replaces that request's logits row by T·log q, where
q = decoder.probs(logits); vLLM's sampler then divides by T and samples from softmax, i.e.
from exactly q. Everything vLLM would apply after the processors (top-k, top-p, min-p and the
penalties) must stay neutral for such requests, and `validate_params` rejects a request
that sets one, naming the field. Requests without the `decoptim` key pass through untouched.

With `decoptim_group_size` and `decoptim_group_seed` next to the decoder, a request's
samples are drawn coordinated (`vllm_coordinated`): the processor picks each such row's
token by its code and forces it.

The processor is registered under the `vllm.logits_processors` entry point, so an installed
decoptim is active in every engine; `LLM(..., logits_processors=[DecoptimLogitsProcessor])`
and `vllm serve --logits-processors decoptim.integrations.vllm:DecoptimLogitsProcessor` name
it explicitly, and a second instance in the same engine stays inert rather than applying
the decoder twice.

One server serves many users, so nothing a request sends may stop the engine, stall it or
come back corrupted with HTTP 200. `validate_params` (run before a request is scheduled)
rejects, naming the field: specs outside `decoptim.core.specs`' strict grammar or the
decoders' ranges (which also bound each step's work), `extra_args` keys that look meant for
decoptim (`decoptm`, `Decoptim`, ...), and a decoder whose trial solve on fixed logits is
not a distribution. Should a decoder still raise in the engine, its rows sample without it
and the error is logged. A client learns whether decoptim runs on a server with
`probe_request` (a server without it would ignore `extra_args` silently).

A user's own decoders (`decoptim.register_decoder`) are accepted by name once the server
imports them: from an installed package's `decoptim.decoders` entry point, or from the files
or modules in `$DECOPTIM_PLUGINS` (os.pathsep-separated), which the processor imports when
it is constructed and before it validates a request.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import weakref
from collections.abc import Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, ClassVar, NamedTuple

import torch
from vllm import SamplingParams
from vllm.exceptions import VLLMValidationError
from vllm.v1.sample.logits_processor import (
    BatchUpdate,
    LogitsProcessor,
    MoveDirectionality,
    process_dict_updates,
)

from ..core import Decoder
from ..core.checks import shown
from ..core.coordinated import forced_scores
from ..core.specs import PLUGINS_ENV, DecoderSpec, load_plugins, parse_spec
from .vllm_coordinated import (  # noqa: F401  (coordinated_sampling_params: the harness)
    GROUP_KEYS,
    CodeBook,
    coordinated_sampling_params,
    request_membership,
)

if TYPE_CHECKING:
    from vllm.config import VllmConfig

logger = logging.getLogger(__name__)

EXTRA_ARGS_KEY = "decoptim"
# `extra_args={"decoptim_probe": 1}` asks the processor to put all mass on token PROBE_TOKEN
# (id 0 exists in every vocabulary): see `probe_request`.
PROBE_KEY = "decoptim_probe"
PROBE_TOKEN = 0
# Every extra_args key decoptim reads (the coordination keys are read by vllm_coordinated);
# other keys that look like these are rejected as misspellings.
OWN_KEYS = (EXTRA_ARGS_KEY, PROBE_KEY, *GROUP_KEYS)
# vLLM treats a temperature below this as greedy decoding (vllm/v1/sample/sampler.py).
GREEDY_TEMPERATURE = 1e-5
# SamplingParams fields applied after the logits processors, with their neutral values.
NEUTRAL_AFTER_PROCESSORS: dict[str, float] = {
    "top_k": 0,
    "top_p": 1.0,
    "min_p": 0.0,
    "presence_penalty": 0.0,
    "frequency_penalty": 0.0,
    "repetition_penalty": 1.0,
}

# (spec, temperature) of one request; requests that share it share one decoder call. The
# probe's setting has no spec.
RequestSetting = tuple[DecoderSpec | None, float]
PROBE_SETTING: RequestSetting = (None, 1.0)


class SettingRows(NamedTuple):
    """The batch rows that share one request setting (see `DecoptimLogitsProcessor.groups`)."""

    decoder: Decoder | None
    rows: torch.Tensor
    scale: float
    coordinated: list[int]
    positions: torch.Tensor


def decoptim_extra_args(spec: DecoderSpec | str | Mapping[str, object]) -> dict:
    """`extra_args` selecting a decoder: from a spec, its text form, or a parameter mapping."""
    if isinstance(spec, str):
        spec = parse_spec(spec)
    elif not isinstance(spec, DecoderSpec):
        spec = DecoderSpec.from_mapping(spec, name_key="decoder")
    params = spec.as_dict()
    return {EXTRA_ARGS_KEY: {"decoder": params.pop("name"), **params}}


def probe_request() -> dict:
    """Keyword arguments for the OpenAI client's `completions.create` (or the JSON body's
    fields) that show whether decoptim's processor runs on a server.

    The request bans token 0 with `logit_bias` (vLLM applies it before the processors), asks
    the processor to put all mass on token 0 and stops on it. A server running decoptim
    samples token 0, so the choice ends with `stop_reason == 0` (`probe_confirmed`); any
    other server cannot sample it, and the choice ends by length.
    """
    return {
        "max_tokens": 1,
        "logit_bias": {str(PROBE_TOKEN): -100},
        "extra_body": {"stop_token_ids": [PROBE_TOKEN], "vllm_xargs": {PROBE_KEY: 1}},
    }


def probe_confirmed(choice: object) -> bool:
    """Whether a choice answering `probe_request` was sampled by decoptim's processor."""
    stop_reason = (
        choice.get("stop_reason")
        if isinstance(choice, Mapping)
        else getattr(choice, "stop_reason", None)
    )
    return stop_reason == PROBE_TOKEN and not isinstance(stop_reason, bool)


def _normalised(key: str) -> str:
    return re.sub(r"[^a-z]", "", key[:40].lower())


def _edit_distance(a: str, b: str) -> int:
    """Levenshtein distance with adjacent transpositions (optimal string alignment)."""
    rows = [list(range(len(b) + 1))]
    for i, x in enumerate(a, 1):
        row = [i]
        for j, y in enumerate(b, 1):
            cost = min(rows[-1][j] + 1, row[j - 1] + 1, rows[-1][j - 1] + (x != y))
            if i > 1 and j > 1 and x == b[j - 2] and a[i - 2] == y:
                cost = min(cost, rows[-2][j - 2] + 1)
            row.append(cost)
        rows.append(row)
    return rows[-1][-1]


def looks_like_ours(key: object) -> bool:
    """A key that is not decoptim's but looks meant for it: `Decoptim`, `decoptm`,
    `decoptim_spec`, `de-coptim`, ... (within two edits of "decoptim", or containing "decopt")."""
    if not isinstance(key, str) or key in OWN_KEYS:
        return False
    norm = _normalised(key)
    return "decopt" in norm or _edit_distance(norm[:12], EXTRA_ARGS_KEY) <= 2


def request_setting(params: SamplingParams) -> RequestSetting | None:
    """The request's (spec, temperature), None without settings; ValueError names a bad field.

    Everything that could fail later in the engine is checked here, once per request: the
    keys, the spec (parsed strictly, see `decoptim.core.specs`), the decoder built at the
    request's temperature, and one trial solve on fixed logits that must give a distribution.
    """
    extra = params.extra_args or {}
    for key in extra:
        if looks_like_ours(key):
            raise ValueError(
                f"extra_args key {shown(key)} is not read by decoptim (a misspelling?); "
                f"decoptim reads {', '.join(map(repr, OWN_KEYS))}"
            )
    if PROBE_KEY in extra:
        value = extra[PROBE_KEY]
        if value != 1 or isinstance(value, bool) or EXTRA_ARGS_KEY in extra:
            raise ValueError(
                f"extra_args[{PROBE_KEY!r}] must be 1 and come without {EXTRA_ARGS_KEY!r}, "
                f"got {PROBE_KEY}={shown(value)}"
                + (f" with {EXTRA_ARGS_KEY!r}" if EXTRA_ARGS_KEY in extra else "")
            )
        return PROBE_SETTING
    if EXTRA_ARGS_KEY not in extra:
        grouped = [key for key in GROUP_KEYS if key in extra]
        if grouped:
            raise ValueError(
                f"extra_args[{grouped[0]!r}] coordinates the samples of a decoder: it needs "
                f"extra_args[{EXTRA_ARGS_KEY!r}] (for example 'softmax' or 'topp:p=0.9')"
            )
        return None
    request_membership(params)  # the coordination keys, if any (ValueError names the field)
    settings = extra[EXTRA_ARGS_KEY]
    where = f"extra_args[{EXTRA_ARGS_KEY!r}]"
    if isinstance(settings, Mapping):
        if "temperature" in settings:
            raise ValueError(
                f"{where}['temperature']={shown(settings['temperature'])}: set the request's "
                "own temperature (SamplingParams.temperature); the decoder is built at it"
            )
        if "decoder" not in settings:
            raise ValueError(f"{where} has no 'decoder' field (for example 'bok' or 'topp')")
    elif not isinstance(settings, str):
        raise ValueError(
            f"{where} must be a mapping or a spec string like 'bok:k=8', got {shown(settings)}"
        )
    for name, neutral in NEUTRAL_AFTER_PROCESSORS.items():
        value = getattr(params, name, neutral)
        if value is not None and float(value) != neutral and not (name == "top_k" and value < 0):
            raise ValueError(
                f"SamplingParams.{name}={value!r} would change the decoptim decoder's "
                f"distribution after it ran; leave it at {neutral!r} and put the decoder in {where}"
            )
    try:
        if isinstance(settings, str):
            spec = parse_spec(settings)
        else:
            spec = DecoderSpec.from_mapping(settings, name_key="decoder")
        temperature = float(params.temperature)
        if spec.uses_temperature() and temperature < GREEDY_TEMPERATURE:
            raise ValueError(
                f"temperature={temperature!r} asks vLLM for greedy decoding; a decoptim "
                f"{spec.name!r} decoder needs temperature > 0 (or use decoder 'greedy')"
            )
        _checked_decoder(spec, temperature if spec.uses_temperature() else 1.0)
    except (ValueError, TypeError) as error:  # TypeError: an unhashable (list) value
        raise ValueError(f"{where}: {error}") from None
    return spec, temperature


def load_env_plugins() -> None:
    """Import the plugins of `$DECOPTIM_PLUGINS` (os.pathsep-separated files or modules that
    register decoders), once per value of the variable: a server started with it accepts
    the plugins' decoder names in `extra_args` / `vllm_xargs`."""
    _load_env_plugins(os.environ.get(PLUGINS_ENV, ""))


@lru_cache(maxsize=8)
def _load_env_plugins(value: str) -> None:
    load_plugins()


@lru_cache(maxsize=256)
def _decoder(spec: DecoderSpec, temperature: float) -> Decoder:
    # validate=False: vLLM's decode step has no host syncs, and engine logits are trusted.
    return spec.build(temperature, validate=False)


def _trial_logits() -> torch.Tensor:
    """Fixed logits for the admission trial: ordinary, steep (with -inf tokens) and tied."""
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(3, 1000, generator=generator) * torch.tensor([[3.0], [40.0], [0.0]])
    rows[1, ::7] = -torch.inf
    rows[2, :5] = 10.0
    return rows


TRIAL_LOGITS = _trial_logits()


@lru_cache(maxsize=256)
def _checked_decoder(spec: DecoderSpec, temperature: float) -> Decoder:
    """`_decoder`, after one solve on `TRIAL_LOGITS` that must give finite rows summing to 1."""
    decoder = _decoder(spec, temperature)
    q = decoder.probs(TRIAL_LOGITS)
    if not bool(torch.isfinite(q).all() & ((q.sum(-1) - 1).abs() < 1e-3).all()):
        raise ValueError(
            f"decoder {shown(spec.text)} at temperature={temperature!r} gives no distribution "
            "on test logits (NaN or unnormalised): its parameters cannot be computed in float32"
        )
    return decoder


class DecoptimLogitsProcessor(LogitsProcessor):
    """Per-request decoptim decoders in vLLM's v1 sampler (see the module docstring)."""

    # id(vllm_config) -> the instance that acts for that engine.
    _owners: ClassVar[weakref.WeakValueDictionary[int, DecoptimLogitsProcessor]] = (
        weakref.WeakValueDictionary()
    )
    _owners_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, vllm_config: VllmConfig, device: torch.device, is_pin_memory: bool):
        load_env_plugins()  # $DECOPTIM_PLUGINS: a bad plugin stops the engine here, named
        self.device = device
        self.vllm_config = vllm_config  # kept alive, so that its id is not reused meanwhile
        self.settings: dict[int, RequestSetting] = {}
        self.codes = CodeBook(device)  # the coordinated rows' codes
        self._groups: list[SettingRows] | None = []
        # Loaded both from the entry point and from logits_processors=[...], the engine
        # builds two instances over one config; only the first may act.
        with self._owners_lock:
            self.active = self._owners.setdefault(id(vllm_config), self) is self

    @classmethod
    def validate_params(cls, sampling_params: SamplingParams) -> None:
        """Reject bad settings when the request arrives (HTTP 400 when serving)."""
        try:
            # The API server's process validates without constructing a processor.
            load_env_plugins()
            request_setting(sampling_params)
        except (ValueError, FileNotFoundError) as error:
            raise VLLMValidationError(str(error)) from None

    def is_argmax_invariant(self) -> bool:
        # Run before vLLM's temperature, on every request, greedy ones included.
        return False

    def update_state(self, batch_update: BatchUpdate | None) -> None:
        if batch_update is None or not self.active:
            return
        # The requests' settings, kept as vLLM's own sparse processors keep theirs.
        process_dict_updates(
            self.settings, batch_update, lambda params, _prompt, _outputs: self._admitted(params)
        )
        # The coordinated rows' codes (on the device) follow the same updates.
        for index in batch_update.removed:
            self.codes.remove(index)
        for index, params, _, outputs in batch_update.added:
            self.codes.remove(index)
            spec = self.settings.get(index, (None,))[0]
            membership = request_membership(params) if spec is not None else None
            if membership is not None:
                self.codes.add(index, membership, outputs)
        for source, target, direction in batch_update.moved:
            self.codes.move(source, target, direction == MoveDirectionality.SWAP)
        self._groups = None

    @staticmethod
    def _admitted(params: SamplingParams) -> RequestSetting | None:
        # validate_params accepted this request; should reading it fail here all the same,
        # the engine (shared by every request) must not: the request samples without decoptim.
        try:
            return request_setting(params)
        except Exception:
            logger.exception("decoptim: ignoring the settings of a request that failed to load")
            return None

    def groups(self) -> list[SettingRows]:
        """Per distinct request setting: its decoder (None for the probe's rows), its batch
        rows, vLLM's temperature scale, and which of those rows draw coordinated (their
        batch indices, and their positions among the setting's rows)."""
        if self._groups is None:
            rows: dict[RequestSetting, list[int]] = {}
            for index, setting in sorted(self.settings.items()):
                rows.setdefault(setting, []).append(index)
            self._groups = []
            for (spec, temperature), indices in rows.items():
                positions = [p for p, i in enumerate(indices) if i in self.codes.slots]
                coordinated = [indices[p] for p in positions]
                self._groups.append(
                    SettingRows(
                        None
                        if spec is None
                        else _decoder(spec, temperature if spec.uses_temperature() else 1.0),
                        torch.tensor(indices, dtype=torch.long, device=self.device),
                        temperature if temperature >= GREEDY_TEMPERATURE else 1.0,
                        coordinated,
                        torch.tensor(positions, dtype=torch.long, device=self.device),
                    )
                )
        return self._groups

    def apply(self, logits: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return logits
        for decoder, rows, scale, coordinated, positions in self.groups():
            if decoder is None:
                logits.index_fill_(0, rows, -torch.inf)
                logits[rows, PROBE_TOKEN] = 0.0
                continue
            try:
                q = decoder.probs(logits.index_select(0, rows))
                scores = torch.log(q).mul_(scale)
                if coordinated:
                    # The rows' tokens come from their codes: all mass on each one, which
                    # vLLM's sampler then takes whatever its temperature.
                    chosen = q.index_select(0, positions)
                    tokens = self.codes.draw(coordinated, chosen)
                    scores.index_copy_(0, positions, forced_scores(tokens, chosen))
            except Exception:
                # Never expected (every setting was built and trial-solved at admission), but
                # an exception here would stop the engine and fail every request on it.
                logger.exception("decoptim: %r failed; its rows sample without it", decoder)
                continue
            logits.index_copy_(0, rows, scores.to(logits.dtype))
        return logits
