"""Where the model's answers are kept, keyed by the prompt hash.

Only real answers (source ``ai``) are cached; fallback holds never are, so a failure is retried the
next time the same prompt comes up. The backend adds a database implementation over ``ai_decisions``.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Protocol, runtime_checkable

from src.ai.models import AIDecision
from src.domain.decisions import DecisionSource
from src.exceptions import AIServiceError, DataError
from src.utils.logger import get_logger

log = get_logger(__name__)


@runtime_checkable
class DecisionCache(Protocol):
    async def get(self, prompt_hash: str) -> AIDecision | None: ...

    async def put(self, decision: AIDecision) -> None: ...


def _require_cacheable(decision: AIDecision) -> None:
    if decision.source is not DecisionSource.AI:
        raise AIServiceError(
            f"only answers from the model are cached, not source={decision.source.value}",
            prompt_hash=decision.prompt_hash,
        )


class InMemoryDecisionCache:
    """A dict; for tests and for one process that never restarts."""

    def __init__(self) -> None:
        self._entries: dict[str, AIDecision] = {}

    def __len__(self) -> int:
        return len(self._entries)

    async def get(self, prompt_hash: str) -> AIDecision | None:
        return self._entries.get(prompt_hash)

    async def put(self, decision: AIDecision) -> None:
        _require_cacheable(decision)
        self._entries[decision.prompt_hash] = decision


class JsonlDecisionCache:
    """Append-only JSON lines, one decision per line, read into a dict on first use.

    A crash mid-write can leave a torn last line: it is skipped with a warning and cut off the file
    before the next append. A bad line anywhere else is a ``DataError`` naming file and line.
    One writing process per file.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._entries: dict[str, AIDecision] | None = None
        self._torn_line_offset: int | None = None  # byte offset where a torn last line starts
        self._lock = asyncio.Lock()

    async def get(self, prompt_hash: str) -> AIDecision | None:
        async with self._lock:
            return self._loaded().get(prompt_hash)

    async def put(self, decision: AIDecision) -> None:
        _require_cacheable(decision)
        async with self._lock:
            entries = self._loaded()
            if decision.prompt_hash in entries:
                return
            line = json.dumps(decision.to_dict(), sort_keys=True, ensure_ascii=False)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if self._torn_line_offset is not None:
                with self.path.open("r+b") as handle:
                    handle.truncate(self._torn_line_offset)
                self._torn_line_offset = None
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line + "\n")
            entries[decision.prompt_hash] = decision

    async def size(self) -> int:
        async with self._lock:
            return len(self._loaded())

    def _loaded(self) -> dict[str, AIDecision]:
        if self._entries is None:
            self._entries = self._read()
        return self._entries

    def _read(self) -> dict[str, AIDecision]:
        if not self.path.exists():
            return {}
        lines = self.path.read_bytes().split(b"\n")
        if lines and lines[-1] == b"":
            lines.pop()
        entries: dict[str, AIDecision] = {}
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                decision = AIDecision.from_dict(json.loads(line.decode("utf-8")))
            except (UnicodeDecodeError, json.JSONDecodeError, DataError, AttributeError) as exc:
                if number == len(lines):
                    self._torn_line_offset = sum(len(kept) + 1 for kept in lines[:-1])
                    log.warning("ai_cache.torn_last_line_skipped", path=str(self.path), line=number, error=str(exc))
                    continue
                raise DataError(f"{self.path}:{number}: not a cached AI decision ({exc})", path=str(self.path)) from exc
            entries[decision.prompt_hash] = decision
        log.debug("ai_cache.loaded", path=str(self.path), entries=len(entries))
        return entries
