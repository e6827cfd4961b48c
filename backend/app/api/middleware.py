"""The API's edge, as one pure-ASGI layer (cheap per request): request metrics by route template,
a body size limit (413, by Content-Length and while a body streams in),
a per-client rate limit (429 + Retry-After), security headers, and a plain 500 for anything unexpected
(the error type is logged; no internals, headers or secrets reach the client or the log).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.app.api.hot_reads import PATHS as HOT_PATHS
from backend.app.api.hot_reads import HotReads
from backend.app.api.rate_limit import RateLimiter
from backend.app.core.security import InvalidToken, constant_time_equals, decode_access_token
from backend.app.services.metrics import ApiMetrics
from src.config.system_groups import ApiConfig
from src.utils.logger import get_logger

log = get_logger(__name__)

UNLIMITED_PATHS = frozenset({"/health", "/ready", "/metrics"})
DOCS_PATHS = frozenset({"/docs", "/redoc", "/docs/oauth2-redirect"})
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cache-control", b"no-store"),
]
_CSP = (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'")
# The console's own files only: no inline script, no other origin (its WebSocket is same-origin, 'self').
DASHBOARD_PREFIX = "/dashboard"
_DASHBOARD_CSP = (
    b"content-security-policy",
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; font-src 'self'; "
    b"connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
)


class RouteTemplates:
    """Maps a request path to its route template (``/api/v1/trades/{trade_id}``), so metric labels stay few.

    Built from the app's OpenAPI paths and its top-level routes; anything else is ``<unmatched>``.
    """

    UNMATCHED = "<unmatched>"

    def __init__(self, app: Any) -> None:
        templates = set(app.openapi().get("paths", {}))
        templates.update(path for route in app.routes if isinstance(path := getattr(route, "path", None), str))
        self._static = {template for template in templates if "{" not in template}
        self._patterns = [
            (re.compile("^" + re.sub(r"\\{[^/]+?\\}", "[^/]+", re.escape(template)) + "$"), template)
            for template in sorted(templates - self._static)
        ]

    def resolve(self, path: str) -> str:
        if path in self._static:
            return path
        for pattern, template in self._patterns:
            if pattern.match(path):
                return template
        return self.UNMATCHED


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            return value.decode("latin-1")
    return None


class EdgeMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        api: ApiConfig,
        metrics: ApiMetrics,
        limiter: RateLimiter,
        hot_reads: HotReads | None = None,
    ) -> None:
        self.app = app
        self.hot_reads = hot_reads
        self.metrics = metrics
        self.max_body = api.max_body_bytes
        self.limiter = limiter
        self._api_key = api.api_key.get_secret_value() if api.api_key else ""
        self._jwt_secret = api.jwt_secret.get_secret_value() if api.jwt_secret else ""
        self._templates: RouteTemplates | None = None
        self._too_large = {"detail": f"request body larger than {self.max_body} bytes"}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        response_started = False
        path: str = scope["path"]
        extra_headers = list(_SECURITY_HEADERS)
        if path.startswith(DASHBOARD_PREFIX):
            extra_headers.append(_DASHBOARD_CSP)
        elif path not in DOCS_PATHS:
            extra_headers.append(_CSP)

        too_large = False
        received = 0

        async def send_with_headers(message: Message) -> None:
            nonlocal status, response_started
            if too_large:  # the 413 went out; whatever the app answers after its body was cut is dropped
                return
            if message["type"] == "http.response.start":
                status = message["status"]
                response_started = True
                message["headers"] = [*message.get("headers", []), *extra_headers]
            await send(message)

        async def limited_receive() -> Message:
            nonlocal received, too_large
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body and not too_large:
                    if not response_started:
                        await _send_json(send_with_headers, 413, self._too_large)
                    too_large = True
                    return {"type": "http.disconnect"}
            return message

        try:
            rejection = await self._reject(scope, path)
            if rejection is not None:
                await _send_json(send_with_headers, *rejection)
            elif (
                self.hot_reads is None
                or path not in HOT_PATHS
                or not await self.hot_reads.serve(scope, limited_receive, send_with_headers)
            ):
                await self.app(scope, limited_receive, send_with_headers)
        except Exception as exc:
            if not too_large:
                log.error(
                    "api.unhandled_error", error=type(exc).__name__, method=scope["method"], route=self._route(scope)
                )
                if not response_started:
                    await _send_json(send_with_headers, 500, {"detail": "internal server error"})
        finally:
            self.metrics.observe(scope["method"], self._route(scope), status, time.perf_counter() - started)

    async def _reject(self, scope: Scope, path: str) -> tuple[int, dict[str, Any], list[tuple[bytes, bytes]]] | None:
        length = _header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            return 413, self._too_large, []
        if path in UNLIMITED_PATHS:
            return None
        wait = await self.limiter.acquire(self._client(scope))
        if wait > 0:
            retry_after = str(max(1, math.ceil(wait))).encode()
            return 429, {"detail": "rate limit exceeded; retry later"}, [(b"retry-after", retry_after)]
        return None

    def _client(self, scope: Scope) -> str:
        """The rate-limit identity: the API key or token user when valid, otherwise the client address."""
        key = _header(scope, b"x-api-key")
        if key and self._api_key and constant_time_equals(key, self._api_key):
            return "api-key"
        authorization = _header(scope, b"authorization")
        if authorization and self._jwt_secret and authorization[:7].lower() == "bearer ":
            try:
                return "user:" + decode_access_token(authorization[7:], self._jwt_secret)
            except InvalidToken:
                pass
        client = scope.get("client")
        address = client[0] if client else "unknown"
        return "ip:" + hashlib.blake2s(address.encode(), digest_size=8).hexdigest()

    def _route(self, scope: Scope) -> str:
        if self._templates is None:
            self._templates = RouteTemplates(scope["app"])
        return self._templates.resolve(scope["path"])


async def _send_json(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    payload = json.dumps(body).encode()
    response_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
        *(headers or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": response_headers})
    await send({"type": "http.response.body", "body": payload})
