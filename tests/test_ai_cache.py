"""Decision caches: JSON lines on disk (torn-line safe) and in memory."""

from __future__ import annotations

import json
from dataclasses import replace
from decimal import Decimal
from pathlib import Path

import pytest

from src.ai.cache import DecisionCache, InMemoryDecisionCache, JsonlDecisionCache
from src.ai.service import AIDecision
from src.domain.decisions import Decision, DecisionSource
from src.exceptions import AIServiceError, DataError


def answer(prompt_hash: str, decision: Decision = Decision.BUY) -> AIDecision:
    return AIDecision(
        decision=decision,
        confidence=Decimal("71.50"),
        reason="breakout with volume",
        source=DecisionSource.AI,
        model="gpt-4o-mini",
        prompt_hash=prompt_hash,
        prompt='{"model":"gpt-4o-mini"}',
        raw_response='{"id":"chatcmpl-1"}',
        prompt_tokens=800,
        completion_tokens=20,
        cost_usd=Decimal("0.000132"),
    )


async def test_jsonl_round_trip_across_instances(tmp_path: Path) -> None:
    # Given a decision written by one cache instance
    path = tmp_path / "nested" / "cache.jsonl"
    original = answer("a" * 64)
    await JsonlDecisionCache(path).put(original)

    # When a new instance reads the file
    loaded = await JsonlDecisionCache(path).get("a" * 64)

    # Then every field survives, Decimals and the timestamp included
    assert loaded == original
    assert loaded is not None
    assert isinstance(loaded.confidence, Decimal)
    assert await JsonlDecisionCache(path).get("b" * 64) is None


async def test_torn_last_line_is_skipped_and_cut_off_before_the_next_append(tmp_path: Path) -> None:
    # Given a file whose last write was cut off mid-line
    path = tmp_path / "cache.jsonl"
    full = json.dumps(answer("a" * 64).to_dict())
    path.write_text(full + "\n" + full[: len(full) // 2], encoding="utf-8")

    # When it is loaded and a new answer is appended
    cache = JsonlDecisionCache(path)
    assert await cache.get("a" * 64) is not None
    await cache.put(answer("c" * 64))

    # Then the fragment is gone and a fresh reader sees both good lines
    fresh = JsonlDecisionCache(path)
    assert await fresh.get("a" * 64) is not None
    assert await fresh.get("c" * 64) is not None
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line)["prompt_hash"] for line in lines] == ["a" * 64, "c" * 64]


async def test_torn_multibyte_character_is_handled(tmp_path: Path) -> None:
    # Given a Korean reason and a last write cut inside a multi-byte character
    path = tmp_path / "cache.jsonl"
    korean = replace(answer("a" * 64), reason="거래량 증가와 돌파")
    full = (json.dumps(korean.to_dict(), ensure_ascii=False) + "\n").encode("utf-8")
    cut = full.index("돌".encode()) + 1
    path.write_bytes(full + full[:cut])

    # When loaded and appended to
    cache = JsonlDecisionCache(path)
    assert (await cache.get("a" * 64)).reason == "거래량 증가와 돌파"  # type: ignore[union-attr]
    await cache.put(answer("c" * 64))

    # Then the file holds exactly the two good lines
    content = path.read_bytes()
    assert content.startswith(full)
    assert [json.loads(line)["prompt_hash"] for line in content.decode("utf-8").splitlines()] == ["a" * 64, "c" * 64]
    assert await JsonlDecisionCache(path).size() == 2


async def test_corrupt_line_in_the_middle_is_an_error_naming_the_line(tmp_path: Path) -> None:
    path = tmp_path / "cache.jsonl"
    good = json.dumps(answer("a" * 64).to_dict())
    path.write_text(f"{good}\nnot json\n{good}\n", encoding="utf-8")

    with pytest.raises(DataError, match=r"cache\.jsonl:2"):
        await JsonlDecisionCache(path).get("a" * 64)


async def test_missing_file_is_an_empty_cache(tmp_path: Path) -> None:
    cache = JsonlDecisionCache(tmp_path / "absent.jsonl")
    assert await cache.get("a" * 64) is None
    assert await cache.size() == 0
    assert not (tmp_path / "absent.jsonl").exists()


async def test_same_hash_is_written_once(tmp_path: Path) -> None:
    path = tmp_path / "cache.jsonl"
    cache = JsonlDecisionCache(path)
    await cache.put(answer("a" * 64))
    await cache.put(answer("a" * 64, Decision.SELL))
    assert len(path.read_text(encoding="utf-8").splitlines()) == 1
    assert (await cache.get("a" * 64)).decision is Decision.BUY  # type: ignore[union-attr]


@pytest.mark.parametrize("cache_kind", ["memory", "jsonl"])
@pytest.mark.parametrize("source", [DecisionSource.FALLBACK, DecisionSource.DISABLED, DecisionSource.CACHE])
async def test_only_model_answers_are_cached(tmp_path: Path, cache_kind: str, source: DecisionSource) -> None:
    cache: DecisionCache = (
        InMemoryDecisionCache() if cache_kind == "memory" else JsonlDecisionCache(tmp_path / "c.jsonl")
    )
    with pytest.raises(AIServiceError, match="only answers from the model"):
        await cache.put(replace(answer("a" * 64), source=source))


async def test_in_memory_cache_satisfies_the_protocol() -> None:
    cache = InMemoryDecisionCache()
    assert isinstance(cache, DecisionCache)
    assert isinstance(JsonlDecisionCache("unused.jsonl"), DecisionCache)
    stored = answer("a" * 64)
    await cache.put(stored)
    assert await cache.get("a" * 64) is stored
    assert len(cache) == 1
