"""What the scheduler applies of the requested run-time settings, and what it refuses.

``apply_requests`` takes the settings in use, the environment's settings and the stored requests
(``bot_config``, JSON by key) and returns the settings to use from the next job on. Every key of
``RUNTIME_KEYS`` is handled the same way, so a key added to the registry is applied with no other change:

- no row (or ``null``): the environment's value;
- a row whose value fails the key's rule (written by an older version, or by hand): rejected, the value
  in use is kept;
- a value that passes its rule but that the caller's ``check`` refuses (rules that need more than the
  settings, e.g. the strategy's declared parameter space, which ``src/config`` cannot import): rejected,
  the value in use is kept;
- a row of a removed key (``removed_keys.REMOVED_RUNTIME_KEYS``): rejected with why the key went and what to do instead.

The keys of a ``KEY_GROUPS`` group (a strategy and its parameters) are applied together, all or none.

Pure: no database, no FastAPI.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from src.config.removed_keys import REMOVED_RUNTIME_KEYS, removed_key_message
from src.config.runtime import (
    KEY_GROUPS,
    RUNTIME_KEYS,
    runtime_default,
    runtime_value_to_json,
    validate_runtime_value,
)
from src.config.settings import Settings
from src.exceptions import InvalidInput


class SettingStatus(StrEnum):
    """How a requested value stands at the scheduler (reported by the API next to the request)."""

    APPLIED = "applied"  # the scheduler uses the requested value
    PENDING = "pending"  # not yet seen by the scheduler (it applies requests before its next job)
    REJECTED = "rejected"  # the scheduler refused the value and kept the previous one
    UNKNOWN = "unknown"  # no heartbeat with applied settings (scheduler never seen, or an older version)


@dataclass(frozen=True, slots=True)
class Rejection:
    value: Any  # the stored JSON that was refused
    reason: str


@dataclass(frozen=True, slots=True)
class AppliedSettings:
    """The settings in use (environment plus applied requests), since when each key has its value, and the
    requests refused."""

    settings: Settings
    environment: Settings  # the process's own defaults (environment, and ``--symbols``)
    since: dict[str, datetime]
    rejected: dict[str, Rejection] = field(default_factory=dict)
    changed: tuple[str, ...] = ()  # keys whose value changed in the last ``apply_requests``

    @classmethod
    def from_environment(cls, settings: Settings, at: datetime) -> AppliedSettings:
        return cls(settings, settings, dict.fromkeys(RUNTIME_KEYS, at))

    def value(self, key: str) -> Any:
        return runtime_default(self.settings, key)

    def to_json(self) -> dict[str, Any]:
        """The heartbeat's ``details.settings``: values in use, when each took effect, refused requests, and
        the scheduler's defaults (what applies without a request)."""
        return {
            "values": {key: runtime_value_to_json(self.value(key)) for key in RUNTIME_KEYS},
            "defaults": {key: runtime_value_to_json(runtime_default(self.environment, key)) for key in RUNTIME_KEYS},
            "since": {key: at.isoformat() for key, at in self.since.items()},
            "rejected": {key: {"value": r.value, "reason": r.reason} for key, r in self.rejected.items()},
        }


def with_value(settings: Settings, key: str, value: Any) -> Settings:
    """``settings`` with the run-time key's field set to ``value`` (already validated)."""
    group, name = RUNTIME_KEYS[key].settings_path
    updated = getattr(settings, group).model_copy(update={name: value})
    return settings.model_copy(update={group: updated})


# What a caller checks beyond the keys' own rules: the problems of a candidate settings (empty = fine).
SettingsCheck = Callable[[Settings], list[str]]

# Every key the scheduler reads from ``bot_config``: the run-time keys, and the removed ones it refuses.
STORED_KEYS: tuple[str, ...] = (*RUNTIME_KEYS, *REMOVED_RUNTIME_KEYS)


def _steps() -> list[tuple[str, ...]]:
    """The run-time keys in registry order, the keys of a group together at its first key."""
    grouped = {key: group for group in KEY_GROUPS for key in group}
    steps: list[tuple[str, ...]] = []
    for key in RUNTIME_KEYS:
        step = grouped.get(key, (key,))
        if step not in steps:
            steps.append(step)
    return steps


def apply_requests(
    current: AppliedSettings, stored: Mapping[str, Any], at: datetime, check: SettingsCheck | None = None
) -> AppliedSettings:
    """The settings to use from the next job on; keys are taken in registry order, a group's keys together.

    ``check`` (the scheduler's: the strategy's parameter space) refuses a candidate with problems that the
    settings in use do not have."""
    environment = current.environment
    settings = current.settings
    since = dict(current.since)
    rejected: dict[str, Rejection] = {
        key: Rejection(stored[key], removed_key_message(key))
        for key in REMOVED_RUNTIME_KEYS
        if stored.get(key) is not None
    }
    changed: list[str] = []
    for step in _steps():
        wanted: dict[str, Any] = {}
        for key in step:
            raw = stored.get(key)
            try:
                wanted[key] = runtime_default(environment, key) if raw is None else validate_runtime_value(key, raw)
            except InvalidInput as exc:
                rejected[key] = Rejection(raw, exc.message)
        if len(wanted) < len(step):  # a key of the group failed its rule: the others wait for it
            for key in wanted.keys() - rejected.keys():
                if wanted[key] != runtime_default(settings, key):
                    failed = ", ".join(k for k in step if k in rejected)
                    rejected[key] = Rejection(_asked(stored, key, wanted[key]), f"{key}: waits for {failed}")
            continue
        moving = [key for key in step if wanted[key] != runtime_default(settings, key)]
        if not moving:
            continue
        candidate = settings
        for key in moving:
            candidate = with_value(candidate, key, wanted[key])
        if problems := _new_problems(check, settings, candidate):
            for key in moving:
                rejected[key] = Rejection(_asked(stored, key, wanted[key]), f"{key}: " + "; ".join(problems))
            continue
        settings = candidate
        for key in moving:
            since[key] = at
            changed.append(key)
    return AppliedSettings(settings, environment, since, rejected, tuple(changed))


def _asked(stored: Mapping[str, Any], key: str, wanted: Any) -> Any:
    """The value as the API shows it: the stored request, or the default the scheduler went back to."""
    raw = stored.get(key)
    return raw if raw is not None else runtime_value_to_json(wanted)


def _new_problems(check: SettingsCheck | None, settings: Settings, candidate: Settings) -> list[str]:
    if check is None:
        return []
    before = check(settings)
    return [problem for problem in check(candidate) if problem not in before]


def requested_value(key: str, stored: Any, default: Any, applied: Mapping[str, Any] | None) -> Any:
    """What is asked of the scheduler: the stored value, else the scheduler's default (as it reported it),
    else the API's environment default."""
    if stored is not None:
        return stored
    return (applied or {}).get("defaults", {}).get(key, default)


def setting_status(key: str, requested: Any, applied: Mapping[str, Any] | None) -> tuple[SettingStatus, str | None]:
    """The status of ``requested`` (``requested_value``) given the heartbeat's ``details.settings``
    (``AppliedSettings.to_json``), and a message when it is not applied."""
    if not applied or key not in applied.get("values", {}):
        return SettingStatus.UNKNOWN, "the scheduler has not reported its settings yet"
    rejection = applied.get("rejected", {}).get(key)
    if rejection is not None and rejection.get("value") == requested:
        reason = rejection["reason"]
        return SettingStatus.REJECTED, f"rejected by the scheduler, which keeps the previous value: {reason}"
    if _same(key, requested, applied["values"][key]):
        return SettingStatus.APPLIED, None
    return SettingStatus.PENDING, "not yet applied: the scheduler takes it before its next job"


def _same(key: str, left: Any, right: Any) -> bool:
    try:
        return bool(validate_runtime_value(key, left) == validate_runtime_value(key, right))
    except InvalidInput:
        return bool(left == right)
