"""`--backend openai` against a scripted stand-in server: retries, backoff, the final error,
concurrency, the probe's refusal, and the requests it sends. (tests/integrations/
test_openai_backend.py runs it against a real vLLM server.)"""

import json
import os
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from decoptim.core.coordinated import group_seeds
from decoptim.core.specs import parse_spec
from decoptim.eval.openai_backend import LOGPROB_NOTES, OpenAIBackend, ServerError, logprob_kind
from decoptim.eval.tasks import ArithTask, JsonlTask

if os.environ.get("CI"):
    import vllm  # noqa: F401  (the probe lives in decoptim.integrations.vllm)
else:
    pytest.importorskip("vllm")


class Script:
    """What the stand-in answers: `failures` (status, body, headers; a bytes body is sent as
    it is) are used up first by generation requests; the probe answers as decoptim (or not,
    `decoptim=False`)."""

    def __init__(self, failures=(), decoptim=True, probe_logprob=-3.0, delay=0.0):
        self.failures = list(failures)
        self.decoptim = decoptim
        self.probe_logprob = probe_logprob
        self.delay = delay
        self.requests: list[tuple[str, dict]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.lock = threading.Lock()

    def answer(self, path: str, body: dict) -> tuple[int, dict, dict]:
        with self.lock:
            self.requests.append((path, body))
            if "decoptim_probe" in body.get("vllm_xargs", {}):
                return 200, self.probe_reply(), {}
            if self.failures:
                return self.failures.pop(0)
        n, seed = body["n"], body["seed"]
        chat = path.endswith("/chat/completions")
        choices = []
        for i in range(n):
            text = f"{body.get('prompt') or body['messages'][-1]['content']}|{seed + i}"
            logprobs = (
                {"content": [{"token": "a", "logprob": -1.0}, {"token": "b", "logprob": -2.0}]}
                if chat
                else {"token_logprobs": [-1.0, -2.0], "tokens": ["a", "b"]}
            )
            choice = {"index": i, "logprobs": logprobs}
            choice |= (
                {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
            )
            choices.append(choice)
        return 200, {"choices": list(reversed(choices))}, {}  # any order: sorted by index

    def probe_reply(self) -> dict:
        choice = {
            "index": 0,
            "text": "",
            "finish_reason": "stop" if self.decoptim else "length",
            "stop_reason": 0 if self.decoptim else None,
            "logprobs": {
                "token_logprobs": [self.probe_logprob],
                "top_logprobs": [{"<eos>": self.probe_logprob, "x": -0.1}],
            },
        }
        return {"choices": [choice], "system_fingerprint": "stand-in"}


@pytest.fixture
def server():
    """(start(script) -> base_url); the server stops at the end of the test."""
    servers = []

    def start(script: Script) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with script.lock:
                    script.in_flight += 1
                    script.most_in_flight = max(script.most_in_flight, script.in_flight)
                try:
                    time.sleep(script.delay)
                    status, reply, headers = script.answer(self.path, body)
                finally:
                    with script.lock:
                        script.in_flight -= 1
                data = reply if isinstance(reply, bytes) else json.dumps(reply).encode()
                try:
                    self.send_response(status)
                    for key, value in {"Content-Type": "application/json", **headers}.items():
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (a timeout test)

            def log_message(self, *args):
                pass

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
        servers.append(httpd)
        return f"http://127.0.0.1:{httpd.server_address[1]}/v1"

    yield start
    for httpd in servers:
        httpd.shutdown()
        httpd.server_close()


def backend(url: str, **options) -> OpenAIBackend:
    messages: list[str] = []
    options = {"retry_backoff": 0.01, "log": messages.append, **options}
    made = OpenAIBackend(url, "stand-in", **options)
    made.messages = messages
    return made


def error(status: int, message: str, headers: dict | None = None):
    return status, {"error": {"message": message, "code": status}}, headers or {}


def test_retries_429_and_5xx_with_backoff_then_succeeds(server):
    script = Script([error(429, "slow down", {"Retry-After": "0"}), error(503, "restarting")])
    made = backend(server(script), retries=3)
    out = made.generate(["Q"], parse_spec("softmax"), 1.0, 2, 8, 40, ArithTask())
    assert [s.text for s in out[0]] == ["Q|40", "Q|41"]
    assert out[0][0].tokens == 2 and out[0][0].logprob_sum == -3.0  # raw log-probabilities
    assert len([r for r in script.requests if "prompt" in r[1] and r[1]["prompt"] == "Q"]) == 3
    assert "HTTP 429: slow down; retry 1/3" in made.messages[0]
    assert "HTTP 503: restarting; retry 2/3" in made.messages[1]
    # a 503 means the server may have restarted: the probe ran again after the chunk
    assert sum("decoptim_probe" in body.get("vllm_xargs", {}) for _, body in script.requests) == 2


def test_retries_are_bounded_and_the_final_error_names_the_url(server):
    url = server(Script([error(500, "engine dead")] * 10))
    made = backend(url, retries=2)
    with pytest.raises(ServerError) as raised:
        made.generate(["Q"], parse_spec("softmax"), 1.0, 2, 8, 0, ArithTask())
    message = str(raised.value)
    assert f"{url}/completions: no answer after 3 attempt(s)" in message
    assert "--retries 2" in message and "HTTP 500: engine dead" in message


def test_a_client_error_is_not_retried(server):
    script = Script([error(400, "extra_args['decoptim']: k must satisfy k >= 1, got k=0")])
    made = backend(server(script), retries=5)
    with pytest.raises(ServerError, match=r"HTTP 400: extra_args\['decoptim'\]: k must"):
        made.generate(["Q"], parse_spec("softmax"), 1.0, 2, 8, 0, ArithTask())
    assert made.messages == []


def test_a_timeout_is_retried_then_named(server):
    made = backend(server(Script(delay=0.0)), retries=1, request_timeout=0.3)
    made.check()
    slow = Script(delay=1.0)
    made.base_url = server(slow)  # the same backend, now facing a server that hangs
    start = time.monotonic()
    with pytest.raises(ServerError, match=r"no reply within --request-timeout 0.3 s"):
        made.generate(["Q"], parse_spec("softmax"), 1.0, 1, 8, 0, ArithTask())
    assert time.monotonic() - start < 5
    assert "retry 1/1" in made.messages[0]


def test_an_unreachable_server_is_an_error_naming_the_url():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(ServerError) as raised:
        backend(url, retries=1)
    message = str(raised.value)
    assert f"decoptim's probe failed: {url}/completions: no answer after 2 attempt(s)" in message
    assert "ConnectionRefusedError" in message


def test_a_server_without_decoptim_is_refused(server):
    url = server(Script(decoptim=False))
    with pytest.raises(ServerError, match=f"{url} does not run decoptim's vLLM processor"):
        backend(url)


def test_a_server_that_comes_back_without_decoptim_is_refused_before_writing(server):
    script = Script([error(502, "bad gateway")])
    made = backend(server(script))
    script.decoptim = False  # it restarts without decoptim
    with pytest.raises(ServerError, match="does not run decoptim's vLLM processor"):
        made.generate(["Q"], parse_spec("softmax"), 1.0, 2, 8, 0, ArithTask())


class StopScript(Script):
    """Prompt "A" is refused (400) after `delay_a` s; prompt "B" gets a 503 at once (then
    waits its backoff to be sent again); the others are answered. `sent_after_refusal`
    counts the requests that arrive once A's refusal is on its way."""

    def __init__(self, delay_a: float):
        super().__init__()
        self.delay_a = delay_a
        self.refused = False
        self.sent_after_refusal = 0

    def answer(self, path: str, body: dict) -> tuple[int, dict, dict]:
        with self.lock:
            if self.refused:
                self.sent_after_refusal += 1
        prompt = body.get("prompt")
        if prompt == "A":
            time.sleep(self.delay_a)
            with self.lock:
                self.requests.append((path, body))
                self.refused = True
            return error(400, "bad setting")
        with self.lock:
            first_b = prompt == "B" and all(b.get("prompt") != "B" for _, b in self.requests)
            if first_b:
                self.requests.append((path, body))
        return error(503, "busy") if first_b else super().answer(path, body)


def test_no_request_is_sent_after_one_fails_for_good(server):
    # B waits 10-20 s to be sent again when A's 400 stops the run: B's worker wakes, and
    # neither it nor the other worker sends anything more (C and D are not sent either)
    script = StopScript(delay_a=1.0)
    made = backend(server(script), concurrency=2, retries=3, retry_backoff=20.0)
    start = time.monotonic()
    with pytest.raises(ServerError, match="HTTP 400: bad setting"):
        made.generate(["A", "B", "C", "D"], parse_spec("softmax"), 1.0, 1, 8, 0, ArithTask())
    assert time.monotonic() - start < 9  # B's worker did not sit out its backoff
    assert script.sent_after_refusal == 0
    assert [b.get("prompt") for _, b in script.requests if "decoptim" in b["vllm_xargs"]] == [
        "B",
        "A",
    ]
    assert len(made.messages) == 1 and "HTTP 503: busy; retry 1/3" in made.messages[0]


@pytest.mark.parametrize(
    "payload,problem",
    [
        (b'{"choices": "\xff"}', r"a reply that is not utf-8 \(invalid start byte at byte 13\)"),
        (b"\x80\x81", r"a reply that is not utf-8 \(invalid start byte at byte 0\)"),
        (b'{"choices": [', r"a reply that is not JSON: b'\{\"choices\": \['"),
        (b"[" * 100_000, "a reply that is not JSON"),
        (b"[1, 2]", r"a reply that is not a JSON object: b'\[1, 2\]'"),
    ],
)
def test_a_malformed_reply_is_retried_then_named(server, payload, problem):
    script = Script([(200, payload, {})] * 2)  # the second retry is answered
    made = backend(server(script), retries=2)
    out = made.generate(["Q"], parse_spec("softmax"), 1.0, 1, 8, 5, ArithTask())
    assert [s.text for s in out[0]] == ["Q|5"]
    assert len(made.messages) == 2 and "retry 2/2" in made.messages[1]
    assert re.search(problem, made.messages[0]), made.messages[0]

    url = server(Script([(200, payload, {})] * 3))
    made = backend(url, retries=2)
    with pytest.raises(ServerError) as raised:
        made.generate(["Q"], parse_spec("softmax"), 1.0, 1, 8, 5, ArithTask())
    message = str(raised.value)
    assert message.startswith(f"{url}/completions: no answer after 3 attempt(s)")
    assert re.search(f"last error: {problem}", message) and "\n" not in message, message


def test_concurrency_is_bounded(server):
    script = Script(delay=0.15)
    made = backend(server(script), concurrency=3)
    prompts = [f"P{i}" for i in range(10)]
    out = made.generate(prompts, parse_spec("softmax"), 1.0, 1, 8, 0, ArithTask())
    assert [samples[0].text for samples in out] == [f"P{i}|{i}" for i in range(10)]
    assert script.most_in_flight == 3


def test_requests_carry_the_decoder_seeds_and_groups(server):
    script = Script(probe_logprob=0.0)  # processed log-probabilities: not recorded
    made = backend(server(script), concurrency=1)  # requests arrive in the order sent
    spec = parse_spec("topk:k=5")
    out = made.generate(["A", "B"], spec, 0.7, 4, 8, 100, ArithTask(), True, 2)
    sent = [body for path, body in script.requests if "decoptim" in body.get("vllm_xargs", {})]
    ids = [0, 1, 2, 3]  # prompt j's groups are j·n/K + r: as generate(coordinated=True)
    seeds = group_seeds(100, torch.tensor(ids)).tolist()
    assert [(b["prompt"], b["n"], b["seed"]) for b in sent] == [
        ("A", 2, seeds[0]),
        ("A", 2, seeds[1]),
        ("B", 2, seeds[2]),
        ("B", 2, seeds[3]),
    ]
    assert sent[0]["vllm_xargs"] == {
        "decoptim": "topk:k=5",
        "decoptim_group_size": 2,
        "decoptim_group_seed": seeds[0],
    }
    assert sent[0]["temperature"] == 0.7 and sent[0]["max_tokens"] == 8
    assert [s.text for s in out[1]] == [
        f"B|{seeds[2]}",
        f"B|{seeds[2] + 1}",
        f"B|{seeds[3]}",
        f"B|{seeds[3] + 1}",
    ]  # group-major
    assert out[0][0].logprob_sum is None and out[0][0].tokens == 2
    assert made.describe()["logprobs"] == LOGPROB_NOTES["processed"]

    script.requests.clear()
    chat = JsonlTask(grader="exact")
    out = made.generate(["Capital of Peru?"], spec, 1.0, 3, 8, 7, chat)
    path, body = script.requests[-1]
    assert path == "/v1/chat/completions" and body["seed"] == 7 and body["n"] == 3
    assert body["messages"] == [
        {"role": "system", "content": chat.system},
        {"role": "user", "content": "Capital of Peru?"},
    ]
    assert body["vllm_xargs"] == {"decoptim": "topk:k=5"} and body["logprobs"] is True
    assert [s.text for s in out[0]] == [
        "Capital of Peru?|7",
        "Capital of Peru?|8",
        "Capital of Peru?|9",
    ]


def test_logprob_kind_reads_the_probe():
    def probe(value, top):
        return {"logprobs": {"token_logprobs": [value], "top_logprobs": [top]}}

    assert logprob_kind(probe(-11.8, {"<eos>": -11.8, "Hello": -0.4})) == "raw"
    assert logprob_kind(probe(0.0, {"<eos>": 0.0, "x": -9999.0})) == "processed"
    assert logprob_kind(probe(-2.0, {"<eos>": -2.0, "Hello": 17.5})) == "logits"
    assert logprob_kind({"logprobs": None}) == "none"


@pytest.mark.parametrize(
    "options,message",
    [
        ({"concurrency": 0}, "--concurrency must be an int >= 1, got --concurrency 0"),
        ({"retries": -1}, "--retries must be an int >= 0, got --retries -1"),
        ({"request_timeout": 0}, "--request-timeout must be a positive number"),
    ],
)
def test_bad_options_name_the_flag(options, message):
    with pytest.raises(ValueError, match=message):
        OpenAIBackend("http://127.0.0.1:1/v1", "m", check=False, **options)
    with pytest.raises(ValueError, match="--base-url must be an http"):
        OpenAIBackend("localhost:8000", "m", check=False)
