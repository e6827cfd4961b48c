"""Upbit over HTTP: JWT signing, pacing by ``Remaining-Req``, retries, 429/418, and errors typed from the answer.

- Quotation calls need no keys; exchange calls sign a JWT (``access_key``, fresh ``nonce``, and
  ``query_hash``/``query_hash_alg`` when there are parameters). ``query_hash`` is the hex SHA-512 of
  the url-encoded parameters, with ``[]`` kept literal in array keys (``states[]=wait``); for POST it
  is built from the JSON body's key/value pairs.
- Errors are typed from Upbit's ``error.name`` (see ``_ERRORS_BY_PREFIX``).
- Retries never risk a second order: reads retry on 429/5xx/timeouts/connection errors; an order POST
  retries only when the request provably did not reach the matching engine (429 rejection, connection
  refused). A 5xx, a timeout or a dropped connection after an order POST raises
  ``ExchangeUnavailable`` carrying the ``identifier``; the caller reconciles with
  ``get_order(identifier=...)`` and never re-sends.
"""

from __future__ import annotations

import hashlib
import json
import uuid as uuid_lib
from typing import Any
from urllib.parse import urlencode

import httpx
import jwt

from src.api.rate_limiter import UpbitRateLimiter
from src.exceptions import (
    AuthError,
    Blocked,
    DuplicateOrderIdentifier,
    ExchangeError,
    ExchangeUnavailable,
    InsufficientFunds,
    InvalidOrder,
    InvalidPrice,
    OrderNotFound,
    RateLimited,
    UnderMinTotal,
)
from src.utils.logger import get_logger

log = get_logger(__name__)

# Upbit error names, by prefix, to our error types. Any other 4xx becomes a plain ExchangeError.
_ERRORS_BY_PREFIX: tuple[tuple[str, type[ExchangeError]], ...] = (
    ("insufficient_funds", InsufficientFunds),
    ("under_min_total", UnderMinTotal),
    ("invalid_price", InvalidPrice),
    ("duplicate_identifier", DuplicateOrderIdentifier),  # name chosen by our fake; Upbit's is undocumented
    ("create_ask_error", InvalidOrder),
    ("create_bid_error", InvalidOrder),
    ("invalid_volume", InvalidOrder),
    ("validation_error", InvalidOrder),
    ("order_not_found", OrderNotFound),
    ("not_found", OrderNotFound),
    ("jwt_verification", AuthError),
    ("invalid_query_payload", AuthError),
    ("expired_access_key", AuthError),
    ("nonce_used", AuthError),
    ("no_authorization_i_p", AuthError),
    ("out_of_scope", AuthError),
    ("invalid_access_key", AuthError),
    ("too_many_requests", RateLimited),
)


def upbit_query_string(params: list[tuple[str, str]]) -> str:
    """The string Upbit hashes: ``urlencode`` of the parameters with literal ``[]`` in array keys."""
    return urlencode(params, doseq=True).replace("%5B%5D=", "[]=")


def query_hash(params: list[tuple[str, str]]) -> str:
    return hashlib.sha512(upbit_query_string(params).encode()).hexdigest()


class UpbitTransport:
    """Signed, paced, retried requests to Upbit's REST API; answers as JSON, refusals as typed errors."""

    def __init__(
        self,
        base_url: str,
        access_key: str | None = None,
        secret_key: str | None = None,
        timeout: float = 10.0,
        *,
        max_attempts: int = 3,
        backoff_seconds: float = 0.25,
        default_block_seconds: float = 60.0,
        jwt_algorithm: str = "HS256",
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if jwt_algorithm not in ("HS256", "HS512"):
            raise ValueError("jwt_algorithm must be HS256 or HS512")
        self._base_url = base_url.rstrip("/")
        self._access_key = access_key or None
        self._secret_key = secret_key or None
        self._max_attempts = max_attempts
        self._jwt_algorithm = jwt_algorithm
        self.rate_limiter = UpbitRateLimiter(
            backoff_seconds=backoff_seconds, default_block_seconds=default_block_seconds
        )
        self._http = httpx.AsyncClient(base_url=self._base_url, timeout=httpx.Timeout(timeout))

    async def close(self) -> None:
        await self._http.aclose()

    async def get(self, path: str, params: list[tuple[str, str]], *, group: str, auth: bool = False) -> Any:
        return await self.request("GET", path, params=params, group=group, auth=auth)

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: list[tuple[str, str]] | None = None,
        body: dict[str, str] | None = None,
        group: str,
        auth: bool,
        identifier: str | None = None,
    ) -> Any:
        is_order = method == "POST"
        for attempt in range(self._max_attempts):
            last = attempt == self._max_attempts - 1
            await self.rate_limiter.acquire(group)
            headers = self._auth_headers(params or list((body or {}).items())) if auth else {}
            try:
                response = await self._send(method, path, params, body, headers)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                # Nothing reached the exchange: safe to retry even for an order.
                if last:
                    raise _unavailable(method, path, exc, identifier) from exc
                await self.rate_limiter.wait_backoff(attempt)
                continue
            except httpx.TransportError as exc:
                if is_order or method == "DELETE" or last:
                    raise _unavailable(method, path, exc, identifier) from exc
                await self.rate_limiter.wait_backoff(attempt)
                continue
            self.rate_limiter.record(response.headers.get("remaining-req"))
            status = response.status_code
            if status == 429:
                if last:
                    raise error_from_response(response, identifier)
                log.warning("upbit.rate_limited", path=path, attempt=attempt + 1)
                await self.rate_limiter.wait_backoff(attempt, _retry_after(response))
                continue
            if status == 418:
                blocked = self.rate_limiter.block(_retry_after(response))
                log.error("upbit.blocked", path=path, seconds=blocked)
                raise error_from_response(response, identifier)
            if status >= 500:
                if is_order or method == "DELETE" or last:
                    raise error_from_response(response, identifier)
                await self.rate_limiter.wait_backoff(attempt)
                continue
            if status >= 400:
                raise error_from_response(response, identifier)
            return _json(response, identifier)
        raise AssertionError("unreachable: the last attempt always returns or raises")

    async def _send(
        self,
        method: str,
        path: str,
        params: list[tuple[str, str]] | None,
        body: dict[str, str] | None,
        headers: dict[str, str],
    ) -> httpx.Response:
        if body is not None:
            headers = {**headers, "Content-Type": "application/json; charset=utf-8"}
            return await self._http.request(method, path, content=json.dumps(body).encode(), headers=headers)
        return await self._http.request(method, path, params=tuple(params) if params else None, headers=headers)

    def _auth_headers(self, params: list[tuple[str, str]]) -> dict[str, str]:
        return auth_headers(self._access_key, self._secret_key, params, algorithm=self._jwt_algorithm)


def auth_headers(
    access_key: str | None,
    secret_key: str | None,
    params: list[tuple[str, str]] | None = None,
    *,
    algorithm: str = "HS256",
) -> dict[str, str]:
    """``Authorization: Bearer <JWT>`` for an exchange call or the private WebSocket's handshake: the
    ``access_key``, a fresh ``nonce``, and ``query_hash``/``query_hash_alg`` when there are parameters."""
    if not (access_key and secret_key):
        raise AuthError("this Upbit call needs keys: set UPBIT_ACCESS_KEY and UPBIT_SECRET_KEY", name="no_keys")
    claims: dict[str, str] = {"access_key": access_key, "nonce": str(uuid_lib.uuid4())}
    if params:
        claims["query_hash"] = query_hash(params)
        claims["query_hash_alg"] = "SHA512"
    token = jwt.encode(claims, secret_key, algorithm=algorithm)
    return {"Authorization": f"Bearer {token}"}


# --- answers and errors ------------------------------------------------------------------------------


def _json(response: httpx.Response, identifier: str | None) -> Any:
    try:
        return response.json()
    except ValueError as exc:
        context = {"identifier": identifier} if identifier else {}
        raise ExchangeUnavailable(
            f"Upbit answered {response.status_code} with a body that is not JSON",
            status=response.status_code,
            **context,
        ) from exc


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _unavailable(method: str, path: str, exc: Exception, identifier: str | None) -> ExchangeUnavailable:
    what = f"{method} {path}"
    if identifier:
        what += f" (order {identifier}: outcome unknown, reconcile by identifier)"
    return ExchangeUnavailable(f"{what} failed: {type(exc).__name__}: {exc}", identifier=identifier)


def error_from_response(response: httpx.Response, identifier: str | None) -> ExchangeError:
    """Upbit's refusal (4xx/5xx) as our typed error, named by Upbit's ``error.name``."""
    status = response.status_code
    name, message = _error_name_and_message(response)
    context: dict[str, Any] = {"identifier": identifier} if identifier else {}
    if status == 418:
        return Blocked(f"Upbit blocked this client (418): {message}", name=name, status=status, **context)
    if status == 429:
        return RateLimited(f"Upbit rate limit (429): {message}", name=name, status=status, **context)
    if status >= 500:
        return ExchangeUnavailable(
            f"Upbit server error {status}: {message}; outcome unknown", name=name, status=status, **context
        )
    error_type = next((cls for prefix, cls in _ERRORS_BY_PREFIX if name and name.startswith(prefix)), None)
    if error_type is None:
        error_type = AuthError if status in (401, 403) else OrderNotFound if status == 404 else ExchangeError
    return error_type(f"Upbit {status} {name}: {message}", name=name, status=status, **context)


def _error_name_and_message(response: httpx.Response) -> tuple[str | None, str]:
    try:
        error = response.json().get("error") or {}
        return error.get("name"), str(error.get("message", ""))
    except (ValueError, AttributeError):
        return None, response.text[:200]
