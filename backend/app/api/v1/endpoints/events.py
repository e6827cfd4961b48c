"""``/api/v1/ws/events``: the scheduler's events, live, over a WebSocket (docs/API.md, "Live events").

Authentication is the API's own (``deps.identify``): the ``X-API-Key`` or ``Authorization: Bearer`` header,
or, for browsers that cannot set headers, a first message ``{"type": "auth", "api_key"|"token": ...}`` within
``AUTH_SECONDS``; never the secret in the URL. With ``API_PUBLIC_READ=true`` a client without a header is
served at once. Wrong or missing credentials close the socket with 1008 and the reason.

Resume with ``?after=<id>`` (or ``"after"`` in the auth message): every event with a larger id, oldest first,
then the live ones. Each message is one event ``{"id", "type", "at", "mode", "symbol", "data"}``; an idle stream
gets ``{"type": "ping"}``. A client too slow to keep up is closed with 1013 and ``after=<its last id>``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Any

from fastapi import APIRouter, HTTPException, WebSocket, WebSocketDisconnect
from fastapi.security.utils import get_authorization_scheme_param
from starlette.websockets import WebSocketState

from backend.app.api.deps import Principal, identify
from backend.app.services.event_stream import CLOSE_TRY_AGAIN_LATER, EventBroadcaster, Subscription
from src.config.settings import Settings
from src.utils.logger import get_logger

log = get_logger(__name__)

router = APIRouter(tags=["events"])

AUTH_SECONDS = 5.0
CLOSE_POLICY_VIOLATION = 1008
SEND_SECONDS = 10.0  # a client whose socket takes longer than this to accept one message is dropped
CLOSE_SECONDS = 2.0  # a close frame to a client that stopped reading is given up after this
PING = json.dumps({"type": "ping"})


class Refused(Exception):
    """Close with 1008 and this reason."""


def _after_of(value: Any) -> int | None:
    if value is None:
        return None
    try:
        after = int(value)
    except (TypeError, ValueError):
        raise Refused("after must be a non-negative integer (an event id)") from None
    if isinstance(value, bool) or after < 0 or str(value).strip() != str(after):
        raise Refused("after must be a non-negative integer (an event id)")
    return after


def _from_headers(websocket: WebSocket, settings: Settings) -> Principal | None:
    api_key = websocket.headers.get("x-api-key")
    scheme, token = get_authorization_scheme_param(websocket.headers.get("authorization"))
    bearer = token if scheme.lower() == "bearer" and token else None
    try:
        return identify(settings, api_key, bearer)
    except HTTPException as exc:
        raise Refused(str(exc.detail)) from None


async def _from_first_message(websocket: WebSocket, settings: Settings) -> tuple[Principal, int | None]:
    try:
        async with asyncio.timeout(AUTH_SECONDS):
            message = await websocket.receive()
    except TimeoutError:
        raise Refused(
            f"authentication required: send X-API-Key or Authorization: Bearer, or a first message "
            f'{{"type": "auth", "api_key" | "token": ...}} within {AUTH_SECONDS:g} s'
        ) from None
    if message["type"] == "websocket.disconnect":
        raise WebSocketDisconnect(message.get("code", 1000))
    try:
        body = json.loads(message.get("text") or "")
    except ValueError:
        body = None
    if not isinstance(body, dict) or body.get("type") != "auth":
        raise Refused('the first message must be {"type": "auth", "api_key" | "token": ...}')
    api_key, token = body.get("api_key"), body.get("token")
    if not isinstance(api_key, str | None) or not isinstance(token, str | None):
        raise Refused("api_key and token must be strings")
    try:
        principal = identify(settings, api_key, token)
    except HTTPException as exc:
        raise Refused(str(exc.detail)) from None
    if principal is None:
        raise Refused("authentication required: the auth message has neither api_key nor token")
    return principal, _after_of(body.get("after"))


async def _authenticate(websocket: WebSocket, settings: Settings) -> tuple[Principal | None, int | None]:
    """Who is calling, and the ``after`` of an auth message (``None``: none given)."""
    principal = _from_headers(websocket, settings)
    if principal is not None or settings.api.public_read:
        return principal, None
    return await _from_first_message(websocket, settings)


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    if websocket.client_state is WebSocketState.DISCONNECTED:
        return
    with contextlib.suppress(Exception):
        async with asyncio.timeout(CLOSE_SECONDS):
            await websocket.close(code, reason[:120])  # a close reason is at most 123 bytes


async def _send(websocket: WebSocket, subscription: Subscription) -> None:
    """Each event's text, encoded once for all clients. A send that waits ``SEND_SECONDS`` (the client stopped
    reading) is ended by the broadcaster's watchdog, which closes the subscription (``Subscription``)."""
    loop = asyncio.get_running_loop()
    async for event in subscription.stream():
        subscription.sending_since = loop.time()
        await websocket.send_text(PING if event is None else event.text)
        subscription.sending_since = None


async def _receive(websocket: WebSocket) -> None:
    """Read until the client leaves; what it sends after authenticating is ignored."""
    while True:
        message = await websocket.receive()
        if message["type"] == "websocket.disconnect":
            return


@router.websocket("/ws/events")
async def events(websocket: WebSocket) -> None:
    settings: Settings = websocket.app.state.settings
    broadcaster: EventBroadcaster = websocket.app.state.events
    await websocket.accept()
    try:
        after = _after_of(websocket.query_params.get("after"))
        principal, message_after = await _authenticate(websocket, settings)
    except Refused as exc:
        await _close(websocket, CLOSE_POLICY_VIOLATION, str(exc))
        return
    except WebSocketDisconnect:
        return
    subscription = broadcaster.subscribe(message_after if message_after is not None else after, SEND_SECONDS)
    metrics = websocket.app.state.metrics
    metrics.event_clients.inc()
    sender = asyncio.create_task(_send(websocket, subscription))
    receiver = asyncio.create_task(_receive(websocket))
    dropped = asyncio.create_task(subscription.dropped.wait())
    code, reason = 1000, "closed"
    try:
        done, _pending = await asyncio.wait({sender, receiver, dropped}, return_when=asyncio.FIRST_COMPLETED)
        if subscription.closed is not None:
            code, reason = subscription.closed.code, subscription.closed.reason
            log.info("events.client_dropped", reason=reason, who=principal.name if principal else "anonymous")
            if code == CLOSE_TRY_AGAIN_LATER:
                metrics.event_clients_dropped.inc()
        elif sender in done and (error := sender.exception()) is not None:
            if isinstance(error, WebSocketDisconnect | OSError):
                log.info("events.client_gone", error=f"{type(error).__name__}: {error}")
            else:
                log.error("events.stream_failed", error=f"{type(error).__name__}: {error}")
            code, reason = 1011, "stream failed; reconnect with after=<last id>"
    finally:
        metrics.event_clients.dec()
        broadcaster.unsubscribe(subscription)
        for task in (sender, receiver, dropped):
            task.cancel()
        for task in (sender, receiver, dropped):
            with contextlib.suppress(BaseException):
                await task
    if receiver not in done:
        await _close(websocket, code, reason)
