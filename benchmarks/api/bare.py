"""The framework's own ceiling: a bare FastAPI app that serves fixed JSON bytes from memory.

``benchmarks.api.run`` starts it under the same uvicorn settings as the API (workers, uvloop and httptools, no
access log, no server header) with ``BENCH_BARE_BODY`` naming a file that holds the API's first page of 50 trades,
read once at start-up; ``GET /bare`` answers those bytes as ``application/json``. No middleware, no
authentication, no database: what FastAPI and uvicorn cost per request on this machine, to compare the API's hot
reads against (issue 16: "API hot reads against the framework's own ceiling").
"""

from __future__ import annotations

import os
from pathlib import Path

from fastapi import FastAPI, Response

BODY = Path(os.environ["BENCH_BARE_BODY"]).read_bytes()

app = FastAPI(docs_url=None, redoc_url=None, openapi_url=None)


@app.get("/bare")
async def bare() -> Response:
    return Response(BODY, media_type="application/json")
