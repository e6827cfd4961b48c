"""The SDK side of the WebSocket comparison: runs ONLY in ``.venv-sdk`` (the SDK needs websockets<16).

Subscribes to KRW-BTC tickers with the SDK's own stream manager (defaults: max_retries=5, retry_delay=1.0) and
prints one JSON line per message, and one when the stream raises. Arguments: REST_URL WS_BASE_URL.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time

from upbit import AsyncUpbit


async def main(rest_url: str, ws_url: str) -> None:
    client = AsyncUpbit(base_url=rest_url, websocket_base_url=ws_url, access_key="unused", secret_key="unused")
    try:
        async with client.ws_stream.ticker(["KRW-BTC"]) as stream:
            async for event in stream:
                price = getattr(event, "trade_price", None)
                print(json.dumps({"event": "message", "t": time.time(), "price": price}), flush=True)
    except Exception as exc:
        print(json.dumps({"event": "raised", "t": time.time(), "error": type(exc).__name__}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
