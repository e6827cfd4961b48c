"""The API's hottest reads in their common form, answered without FastAPI's routing and dependency machinery.

A dashboard or monitor polls the first page of trades, the next pages by cursor and the bot status far more than
anything else; on those, FastAPI's routing, dependency solving and parameter validation cost more CPU than the
database (``benchmarks/README.md``, "Backend API"). ``HotReads`` runs inside ``EdgeMiddleware`` (so metrics, the
body limit, the rate limit and the security headers apply as to any request) and answers

- ``GET /api/v1/trades`` with no parameter but ``limit`` (a plain number 1..500), ``cursor`` (a well-formed
  ``next_cursor``) and the ``symbol``, ``side``, ``status`` and ``mode`` filters (the dashboard's), each at most
  once and not percent-encoded, and
- ``GET /api/v1/bot/status`` with no query string,

when the caller is authenticated by a valid ``X-API-Key`` or bearer token (or sends neither and reads are
public). The body is made by the very functions the FastAPI endpoints use (``trade_page_body``,
``BotStatusReader.body``), so both paths answer byte for byte the same. Anything else, including every request
that would be refused (bad credentials, bad parameters), goes on to FastAPI, which answers as it always did.
Both reads go through the read cache (``services.read_cache``: dropped by every event, ``API_READ_CACHE_SECONDS``
at most), pages of trades keyed by their filters and paging.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import partial
from typing import Any

import orjson
from fastapi.security.utils import get_authorization_scheme_param
from starlette.datastructures import State
from starlette.types import Receive, Scope, Send

from backend.app.api.deps import busy_response, page_connection_of, read_connection_of
from backend.app.api.v1.endpoints._params import MAX_LIMIT, SYMBOL_PATTERN
from backend.app.core.security import InvalidToken, constant_time_equals, decode_access_token
from backend.app.db.driver import Readable
from backend.app.db.queries import trades as trade_queries
from backend.app.db.queries.paging import Cursor, Paging
from backend.app.schemas.trades import TRADE_FIELDS
from src.config.system_groups import ApiConfig
from src.domain.modes import TradingMode
from src.domain.orders import Side, TradeStatus
from src.exceptions import InvalidInput

TRADES_PATH = "/api/v1/trades"
STATUS_PATH = "/api/v1/bot/status"
PATHS = frozenset({TRADES_PATH, STATUS_PATH})

_JSON_HEADERS = b"application/json"
_LIMIT = re.compile(rb"[1-9][0-9]{0,2}")
_CURSOR = re.compile(rb"[A-Za-z0-9_-]{1,200}")  # base64url without padding: what ``Cursor.encode`` gives
_SYMBOL = re.compile(SYMBOL_PATTERN.encode())


async def trade_page_body(connection: Readable, filters: trade_queries.TradeFilter, paging: Paging) -> bytes:
    """A page of trades as ``TradePage``'s JSON, serialised straight from the rows: validating 50 rows into
    ``TradePage`` first was a large share of the request's CPU (``response_model`` documents the shape). The
    bytes are the ones ``TRADE_PAGE_JSON`` gives (a test holds them equal), made by orjson in a quarter of the
    time. Raises ``InvalidInput`` for a cursor or range the query refuses."""
    page = await trade_queries.trade_page(connection, filters, paging, TRADE_FIELDS)
    return orjson.dumps(
        {
            "limit": page.limit,
            "next_cursor": page.next_cursor,
            "total": page.total,
            "page": page.page,
            "page_size": page.page_size,
            "items": [dict(zip(TRADE_FIELDS, row, strict=True)) for row in page.rows],
        },
        option=orjson.OPT_UTC_Z,
    )


_ENUM_FILTERS: dict[bytes, frozenset[bytes]] = {
    b"side": frozenset(member.value.encode() for member in Side),
    b"status": frozenset(member.value.encode() for member in TradeStatus),
    b"mode": frozenset(member.value.encode() for member in TradingMode),
}


def _trade_request(query: bytes) -> tuple[trade_queries.TradeFilter, Paging] | None:
    """``limit``, ``cursor`` and the ``symbol``, ``side``, ``status`` and ``mode`` filters exactly as the endpoint
    would take them, or ``None`` for anything else (other parameters, encoded or unusual values, repeats)."""
    limit = 50
    cursor: str | None = None
    equals: dict[str, str] = {}
    seen: set[bytes] = set()
    if query:
        for part in query.split(b"&"):
            name, sign, value = part.partition(b"=")
            if not sign or name in seen:
                return None
            seen.add(name)
            if name == b"limit" and _LIMIT.fullmatch(value) and int(value) <= MAX_LIMIT:
                limit = int(value)
            elif name == b"cursor" and _CURSOR.fullmatch(value):
                cursor = value.decode()
                try:
                    Cursor.decode(cursor)  # a bad cursor is FastAPI's 422
                except InvalidInput:
                    return None
            elif name == b"symbol" and _SYMBOL.fullmatch(value):
                equals["symbol"] = value.decode()
            elif value in _ENUM_FILTERS.get(name, ()):
                equals[name.decode()] = value.decode()
            else:
                return None
    filters = trade_queries.TradeFilter(
        symbol=equals.get("symbol"),
        side=Side(equals["side"]) if "side" in equals else None,
        status=TradeStatus(equals["status"]) if "status" in equals else None,
        mode=TradingMode(equals["mode"]) if "mode" in equals else None,
    )
    return filters, Paging(limit=limit, cursor=cursor)


class HotReads:
    def __init__(self, state: State, api: ApiConfig) -> None:
        self._state = state
        self._api_key = api.api_key.get_secret_value() if api.api_key else ""
        self._jwt_secret = api.jwt_secret.get_secret_value() if api.jwt_secret else ""
        self._public_read = api.public_read
        self._connect: Callable[[], Any] = partial(read_connection_of, state)
        self._page_connect: Callable[[], Any] = partial(page_connection_of, state)

    def allowed(self, headers: list[tuple[bytes, bytes]]) -> bool:
        """Whether ``deps.require_reader`` would let this caller in: a valid API key (checked first, as there),
        else a valid bearer token, else no credentials and public reads. ``False`` sends the request to FastAPI,
        which refuses it with the reason."""
        api_key = authorization = None
        for name, value in headers:
            if name == b"x-api-key" and api_key is None:
                api_key = value.decode("latin-1")
            elif name == b"authorization" and authorization is None:
                authorization = value.decode("latin-1")
        if api_key:
            return bool(self._api_key) and constant_time_equals(api_key, self._api_key)
        scheme, token = get_authorization_scheme_param(authorization)
        if authorization and scheme.lower() == "bearer":
            if not self._jwt_secret:
                return False
            try:
                decode_access_token(token, self._jwt_secret)
            except InvalidToken:
                return False
            return True
        return self._public_read

    async def _trade_page(self, filters: trade_queries.TradeFilter, paging: Paging) -> bytes:
        async with self._page_connect() as connection:
            return await trade_page_body(connection, filters, paging)

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> bool:
        """Answer the request if it is one of the hot reads in its common form; ``False`` when FastAPI must."""
        if scope["method"] != "GET" or not self.allowed(scope["headers"]):
            return False
        query: bytes = scope["query_string"]
        try:
            if scope["path"] == TRADES_PATH:
                request = _trade_request(query)
                if request is None:
                    return False
                filters, paging = request
                key = ("trades", filters, paging)
                body = await self._state.read_cache.get(key, partial(self._trade_page, filters, paging))
            else:
                if query:
                    return False
                body = await self._state.bot_status.body(self._connect)
        except Exception as exc:
            response = busy_response(exc)  # the app's own answer to a busy database (main.py); others raise
            await response(scope, receive, send)
            return True
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-length", str(len(body)).encode()), (b"content-type", _JSON_HEADERS)],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return True
