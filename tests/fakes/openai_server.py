"""A loopback fake of OpenAI's Chat Completions endpoint, speaking the real wire format.

The real ``openai`` SDK is pointed at ``FakeOpenAI.base_url``. The fake checks the bearer key and that
``response_format`` is a strict ``json_schema``, answers from a scripted queue of behaviours (success,
429s, refusal, malformed content, truncation, content filter, 5xx, slow answers), and records every
request so tests assert what crossed the wire.

It runs a threaded HTTP server on 127.0.0.1 (ephemeral port) in a background thread, so it starts in
milliseconds and works from sync and async tests alike::

    with FakeOpenAI() as fake:                 # or: async with FakeOpenAI() as fake
        fake.script(Behaviour.ok("buy", 80, "breakout"), Behaviour.rate_limited())
        ...  # AsyncOpenAI(base_url=fake.base_url, api_key=fake.api_key)
        assert fake.request_count == 2

As a process (for subprocess tests): ``python -m tests.fakes.openai_server --port 8765``; the first line
on stdout is ``listening on <base_url>``. ``POST /_fake/script`` (a JSON list of behaviours) replaces
the queue and ``GET /_fake/requests`` returns the recorded request bodies.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

DEFAULT_API_KEY = "sk-fake-openai-test-key"
_SCHEMA_NAME = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")
REQUIRED_DECISION_FIELDS = ("decision", "confidence", "reason")


class BehaviourKind(StrEnum):
    OK = "ok"
    RATE_LIMITED = "rate_limited"
    INSUFFICIENT_QUOTA = "insufficient_quota"
    REFUSAL = "refusal"
    MALFORMED = "malformed"
    LENGTH = "length"
    CONTENT_FILTER = "content_filter"
    SERVER_ERROR = "server_error"
    RAW = "raw"


@dataclass(frozen=True, slots=True)
class Behaviour:
    """One scripted answer. Build it with the class methods; ``delay_seconds`` makes any answer slow."""

    kind: BehaviourKind
    decision: str = "hold"
    confidence: float = 50.0
    reason: str = "fake default answer"
    content: str | None = None
    refusal_text: str = "I'm sorry, but I can't help with that request."
    status: int = 500
    retry_after_ms: int | None = None  # also send retry-after-ms (the SDK ignores retry-after: 0)
    delay_seconds: float = 0.0
    prompt_tokens: int = 812
    completion_tokens: int = 24

    @classmethod
    def ok(
        cls,
        decision: str = "hold",
        confidence: float = 50.0,
        reason: str = "fake default answer",
        *,
        prompt_tokens: int = 812,
        completion_tokens: int = 24,
        delay_seconds: float = 0.0,
    ) -> Behaviour:
        return cls(
            BehaviourKind.OK,
            decision=decision,
            confidence=confidence,
            reason=reason,
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
            delay_seconds=delay_seconds,
        )

    @classmethod
    def slow(cls, seconds: float, decision: str = "buy", confidence: float = 90.0) -> Behaviour:
        """A correct answer that arrives after ``seconds`` (longer than the client's timeout)."""
        return cls.ok(decision, confidence, "slow answer", delay_seconds=seconds)

    @classmethod
    def rate_limited(cls, retry_after_ms: int | None = None) -> Behaviour:
        """HTTP 429 ``rate_limit_exceeded`` with ``retry-after: 0`` (retrying helps).

        openai 3.54 ignores a zero ``retry-after`` and backs off 0.5-1 s instead; pass
        ``retry_after_ms=1`` to make its retries immediate.
        """
        return cls(BehaviourKind.RATE_LIMITED, retry_after_ms=retry_after_ms)

    @classmethod
    def insufficient_quota(cls) -> Behaviour:
        """HTTP 429 ``insufficient_quota`` (out of credit; retrying does not help)."""
        return cls(BehaviourKind.INSUFFICIENT_QUOTA)

    @classmethod
    def refusal(cls, text: str = "I'm sorry, but I can't help with that request.") -> Behaviour:
        return cls(BehaviourKind.REFUSAL, refusal_text=text, completion_tokens=12)

    @classmethod
    def malformed(cls, content: str) -> Behaviour:
        """HTTP 200, ``finish_reason: stop``, with ``content`` sent verbatim (not JSON, wrong schema, ...)."""
        return cls(BehaviourKind.MALFORMED, content=content)

    @classmethod
    def length(cls) -> Behaviour:
        """The answer was cut off at the token limit: truncated JSON and ``finish_reason: length``."""
        return cls(BehaviourKind.LENGTH, completion_tokens=16)

    @classmethod
    def content_filter(cls) -> Behaviour:
        return cls(BehaviourKind.CONTENT_FILTER, completion_tokens=0)

    @classmethod
    def server_error(cls, status: int = 500) -> Behaviour:
        return cls(BehaviourKind.SERVER_ERROR, status=status)

    @classmethod
    def raw(cls, body: str, status: int = 200) -> Behaviour:
        """``body`` sent verbatim as ``application/json`` (e.g. a proxy's page or a non-completion object)."""
        return cls(BehaviourKind.RAW, content=body, status=status)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Behaviour:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown behaviour fields {sorted(unknown)}")
        return cls(**{**data, "kind": BehaviourKind(data["kind"])})


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any  # the decoded JSON body, or the raw text if it was not JSON
    received_at: float = field(default_factory=time.time)


class RequestRejected(Exception):
    """The request breaks the API's rules; carries the HTTP status and the OpenAI error body."""

    def __init__(self, status: int, message: str, *, code: str | None, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = _error_body(message, "invalid_request_error", code=code, param=param)


def _error_body(message: str, error_type: str, *, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": param, "code": code}}


def validate_response_format(response_format: Any) -> None:
    """Raise ``RequestRejected`` unless this is a strict json_schema with every property required."""

    def reject(message: str) -> RequestRejected:
        return RequestRejected(400, message, code="invalid_value", param="response_format")

    if not isinstance(response_format, dict) or response_format.get("type") != "json_schema":
        raise reject("response_format.type must be 'json_schema'")
    spec = response_format.get("json_schema")
    if not isinstance(spec, dict):
        raise reject("response_format.json_schema is required")
    if not isinstance(spec.get("name"), str) or not _SCHEMA_NAME.match(spec["name"]):
        raise reject("response_format.json_schema.name must match ^[a-zA-Z0-9_-]{1,64}$")
    if spec.get("strict") is not True:
        raise reject("response_format.json_schema.strict must be true")
    schema = spec.get("schema")
    if not isinstance(schema, dict) or schema.get("type") != "object":
        raise reject("response_format.json_schema.schema must be an object schema")
    if schema.get("additionalProperties") is not False:
        raise reject("strict schemas must set additionalProperties: false")
    properties = schema.get("properties")
    required = schema.get("required")
    if not isinstance(properties, dict) or not isinstance(required, list):
        raise reject("strict schemas must define properties and required")
    if set(required) != set(properties):
        raise reject("strict schemas must list every property under required")
    missing = [name for name in REQUIRED_DECISION_FIELDS if name not in properties]
    if missing:
        raise reject(f"schema lacks the decision fields {missing}")


def _validate_completion_request(body: Any) -> None:
    if not isinstance(body, dict):
        raise RequestRejected(400, "We could not parse the JSON body of your request.", code=None)
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise RequestRejected(400, "you must provide a model parameter", code=None, param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise RequestRejected(400, "messages must be a non-empty array", code=None, param="messages")
    for message in messages:
        if not isinstance(message, dict) or "role" not in message or "content" not in message:
            raise RequestRejected(400, "each message needs role and content", code=None, param="messages")
    validate_response_format(body.get("response_format"))


class FakeOpenAI:
    """The fake server. Thread-safe; start/stop it directly or use it as a (sync or async) context manager."""

    def __init__(
        self,
        *,
        api_key: str = DEFAULT_API_KEY,
        host: str = "127.0.0.1",
        port: int = 0,
        default: Behaviour | None = None,
    ) -> None:
        self.api_key = api_key
        self.default = default or Behaviour.ok()
        self._host = host
        self._port = port
        self._queue: list[Behaviour] = []
        self._requests: list[RecordedRequest] = []
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._counter = 0

    # -- lifecycle -------------------------------------------------------------------------------
    def start(self) -> FakeOpenAI:
        if self._server is not None:
            return self
        self._stopping.clear()
        server = ThreadingHTTPServer((self._host, self._port), _handler_for(self))
        server.daemon_threads = True
        server.block_on_close = False
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="fake-openai", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is None:
            return
        self._stopping.set()  # wakes slow handlers
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=2)
        self._server = None
        self._thread = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    async def __aenter__(self) -> FakeOpenAI:
        return self.start()

    async def __aexit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- addresses ----------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeOpenAI is not running; call start() or use it as a context manager")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """What the SDK takes as ``base_url`` (includes ``/v1``)."""
        return f"http://{self._host}:{self.port}/v1"

    # -- scripting and inspection -------------------------------------------------------------------
    def script(self, *behaviours: Behaviour) -> None:
        """Append answers; each completion request takes the next one, then ``default`` when empty."""
        with self._lock:
            self._queue.extend(behaviours)

    def replace_script(self, behaviours: list[Behaviour]) -> None:
        with self._lock:
            self._queue = list(behaviours)

    @property
    def pending(self) -> int:
        with self._lock:
            return len(self._queue)

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request to the API (not the ``/_fake`` admin routes), oldest first."""
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._requests)

    @property
    def bodies(self) -> list[Any]:
        return [request.body for request in self.requests]

    @property
    def last_body(self) -> Any:
        requests = self.requests
        if not requests:
            raise AssertionError("the fake OpenAI server received no request")
        return requests[-1].body

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self._requests.clear()

    # -- used by the handler ------------------------------------------------------------------------
    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _next_behaviour(self) -> tuple[Behaviour, int]:
        with self._lock:
            self._counter += 1
            behaviour = self._queue.pop(0) if self._queue else self.default
            return behaviour, self._counter


def _completion(
    fake_id: int,
    model: str,
    behaviour: Behaviour,
    content: str | None,
    finish_reason: str = "stop",
    refusal: str | None = None,
) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-fake-{fake_id}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": "fp_fake",
        "choices": [
            {
                "index": 0,
                "finish_reason": finish_reason,
                "logprobs": None,
                "message": {"role": "assistant", "content": content, "refusal": refusal, "annotations": []},
            }
        ],
        "usage": {
            "prompt_tokens": behaviour.prompt_tokens,
            "completion_tokens": behaviour.completion_tokens,
            "total_tokens": behaviour.prompt_tokens + behaviour.completion_tokens,
        },
    }


def render_answer(behaviour: Behaviour, fake_id: int, model: str) -> tuple[int, dict[str, str], Any]:
    """The HTTP status, extra headers and body (JSON-able, or bytes sent as they are) for one behaviour."""
    kind = behaviour.kind
    if kind is BehaviourKind.RAW:
        return behaviour.status, {}, (behaviour.content or "").encode()
    answer = json.dumps(
        {"decision": behaviour.decision, "confidence": behaviour.confidence, "reason": behaviour.reason}
    )
    if kind is BehaviourKind.OK:
        return 200, {}, _completion(fake_id, model, behaviour, answer)
    if kind is BehaviourKind.MALFORMED:
        return 200, {}, _completion(fake_id, model, behaviour, behaviour.content)
    if kind is BehaviourKind.LENGTH:
        return 200, {}, _completion(fake_id, model, behaviour, answer[:20], finish_reason="length")
    if kind is BehaviourKind.CONTENT_FILTER:
        return 200, {}, _completion(fake_id, model, behaviour, None, finish_reason="content_filter")
    if kind is BehaviourKind.REFUSAL:
        return 200, {}, _completion(fake_id, model, behaviour, None, refusal=behaviour.refusal_text)
    if kind is BehaviourKind.RATE_LIMITED:
        message = f"Rate limit reached for {model} on requests per min (RPM): Limit 3, Used 3, Requested 1."
        headers = {"retry-after": "0"}
        if behaviour.retry_after_ms is not None:
            headers["retry-after-ms"] = str(behaviour.retry_after_ms)
        return 429, headers, _error_body(message, "requests", code="rate_limit_exceeded")
    if kind is BehaviourKind.INSUFFICIENT_QUOTA:
        message = "You exceeded your current quota, please check your plan and billing details."
        return 429, {}, _error_body(message, "insufficient_quota", code="insufficient_quota")
    message = "The server had an error while processing your request. Sorry about that!"
    return behaviour.status, {}, _error_body(message, "server_error", code=None)


def _handler_for(fake: FakeOpenAI) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        server_version = "FakeOpenAI/1.0"
        disable_nagle_algorithm = True  # headers and body go out in two writes; avoid the 40 ms delayed-ACK stall

        def log_message(self, format: str, *args: Any) -> None:
            return

        def _read_body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _send_json(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
            payload = body if isinstance(body, bytes) else json.dumps(body).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.send_header("x-request-id", f"req_fake_{time.monotonic_ns()}")
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(payload)
                self.wfile.flush()
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True  # the client gave up (timeout) before the answer

        def do_GET(self) -> None:
            if self.path == "/_fake/requests":
                self._send_json(200, fake.bodies)
                return
            self._read_body()
            message = f"Unknown request URL: GET {self.path}"
            self._send_json(404, _error_body(message, "invalid_request_error", code="unknown_url"))

        def do_POST(self) -> None:
            raw = self._read_body()
            if self.path == "/_fake/script":
                self._script(raw)
                return
            try:
                body: Any = json.loads(raw)
            except (json.JSONDecodeError, UnicodeDecodeError):
                body = raw.decode("utf-8", errors="replace")
            fake._record(RecordedRequest("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            if self.path != "/v1/chat/completions":
                message = f"Unknown request URL: POST {self.path}"
                self._send_json(404, _error_body(message, "invalid_request_error", code="unknown_url"))
                return
            if self.headers.get("Authorization") != f"Bearer {fake.api_key}":
                message = "Incorrect API key provided. You can find your API key at https://platform.openai.com/account/api-keys."
                self._send_json(401, _error_body(message, "invalid_request_error", code="invalid_api_key"))
                return
            try:
                _validate_completion_request(body)
            except RequestRejected as rejected:
                self._send_json(rejected.status, rejected.body)
                return
            behaviour, fake_id = fake._next_behaviour()
            if behaviour.delay_seconds and fake._stopping.wait(behaviour.delay_seconds):
                self.close_connection = True
                return
            status, headers, answer = render_answer(behaviour, fake_id, body["model"])
            self._send_json(status, answer, headers)

        def _script(self, raw: bytes) -> None:
            try:
                behaviours = [Behaviour.from_dict(item) for item in json.loads(raw)]
            except (ValueError, TypeError, KeyError) as exc:
                self._send_json(400, _error_body(f"bad script: {exc}", "invalid_request_error", code=None))
                return
            fake.replace_script(behaviours)
            self._send_json(200, {"queued": len(behaviours)})

    return Handler


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a fake OpenAI Chat Completions API on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--api-key", default=DEFAULT_API_KEY)
    parser.add_argument("--script", default="[]", help='JSON list of behaviours, e.g. [{"kind": "rate_limited"}]')
    args = parser.parse_args(argv)
    fake = FakeOpenAI(api_key=args.api_key, host=args.host, port=args.port)
    fake.replace_script([Behaviour.from_dict(item) for item in json.loads(args.script)])
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with fake:
        print(f"listening on {fake.base_url}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            done.wait()


if __name__ == "__main__":
    main()
