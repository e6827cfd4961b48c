"""A loopback fake of Sentry's ingestion endpoint: ``POST /api/<project>/envelope/``.

sentry-sdk is pointed at ``FakeSentry.dsn``. The fake checks the ``sentry_key`` of the auth header (or the
DSN in the envelope header), undoes gzip/deflate, parses the envelope (a JSON header line, then items: a
JSON item header and a payload of ``length`` bytes or up to the next newline) and keeps every envelope, so
tests assert exactly what would have reached Sentry.

As a process: ``python -m tests.fakes.sentry_server --port 8767``; the first line on stdout is
``listening on <dsn>``.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import json
import re
import signal
import threading
import zlib
from dataclasses import dataclass, field
from typing import Any

from tests.fakes.loopback_http import HttpRequest, HttpResponse, LoopbackHttpServer

DEFAULT_PUBLIC_KEY = "fakepublickey0123456789abcdef0123"
_ENVELOPE_PATH = re.compile(r"^/api/(\d+)/envelope/?$")
_SENTRY_KEY = re.compile(r"sentry_key=([0-9a-zA-Z]+)")


@dataclass(frozen=True, slots=True)
class EnvelopeItem:
    headers: dict[str, Any]
    payload: bytes

    @property
    def type(self) -> str:
        return str(self.headers.get("type", ""))

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass(frozen=True, slots=True)
class Envelope:
    project: str
    headers: dict[str, Any]
    items: list[EnvelopeItem] = field(default_factory=list)
    raw_request_headers: dict[str, str] = field(default_factory=dict)


def _decompress(body: bytes, encoding: str) -> bytes:
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding in ("", "identity"):
        return body
    raise ValueError(f"unsupported content-encoding {encoding!r}")


def parse_envelope(data: bytes) -> tuple[dict[str, Any], list[EnvelopeItem]]:
    header_line, _, rest = data.partition(b"\n")
    headers = json.loads(header_line)
    items: list[EnvelopeItem] = []
    while rest.strip():
        item_header_line, _, rest = rest.partition(b"\n")
        item_headers = json.loads(item_header_line)
        length = item_headers.get("length")
        if length is None:
            payload, _, rest = rest.partition(b"\n")
        else:
            payload, rest = rest[:length], rest[length:].removeprefix(b"\n")
        items.append(EnvelopeItem(item_headers, payload))
    return headers, items


class FakeSentry:
    def __init__(
        self, public_key: str = DEFAULT_PUBLIC_KEY, project: str = "42", host: str = "127.0.0.1", port: int = 0
    ):
        self.public_key = public_key
        self.project = project
        self._lock = threading.Lock()
        self._envelopes: list[Envelope] = []
        self.rejected = 0
        self._server = LoopbackHttpServer(self._handle, port=port, host=host)

    @property
    def dsn(self) -> str:
        return f"{self._server.base_url.replace('://', f'://{self.public_key}@')}/{self.project}"

    def start(self) -> FakeSentry:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def __enter__(self) -> FakeSentry:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def envelopes(self) -> list[Envelope]:
        with self._lock:
            return list(self._envelopes)

    def events(self) -> list[dict[str, Any]]:
        """The payload of every ``event`` item received (errors and messages)."""
        return [item.json() for envelope in self.envelopes for item in envelope.items if item.type == "event"]

    def _handle(self, request: HttpRequest) -> HttpResponse:
        match = _ENVELOPE_PATH.match(request.path)
        if request.method != "POST" or match is None:
            return HttpResponse(status=404, body=b'{"detail":"not found"}')
        try:
            data = _decompress(request.body, request.headers.get("content-encoding", "").lower())
            headers, items = parse_envelope(data)
        except (ValueError, OSError) as exc:
            return HttpResponse(status=400, body=json.dumps({"detail": f"bad envelope: {exc}"}).encode())
        key = _SENTRY_KEY.search(request.headers.get("x-sentry-auth", "") + request.raw_query)
        dsn_key = str(headers.get("dsn", "")).partition("://")[2].partition("@")[0]
        if (key.group(1) if key else dsn_key) != self.public_key or match.group(1) != self.project:
            with self._lock:
                self.rejected += 1
            return HttpResponse(status=401, body=b'{"detail":"invalid api key"}')
        envelope = Envelope(match.group(1), headers, items, dict(request.headers))
        with self._lock:
            self._envelopes.append(envelope)
        event_id = headers.get("event_id", "")
        return HttpResponse(body=json.dumps({"id": event_id}).encode(), headers={"content-type": "application/json"})


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a fake Sentry envelope endpoint on loopback.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    args = parser.parse_args(argv)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    with FakeSentry(host=args.host, port=args.port) as fake:
        print(f"listening on {fake.dsn}", flush=True)
        with contextlib.suppress(KeyboardInterrupt):
            done.wait()


if __name__ == "__main__":
    main()
