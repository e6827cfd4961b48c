from __future__ import annotations

from typing import Literal

from pydantic import Field

from backend.app.schemas.common import ApiModel


class HealthOut(ApiModel):
    status: Literal["ok"]


class ReadyOut(ApiModel):
    status: Literal["ready", "not_ready"]
    database: bool = Field(description="The database answered a query")
    migration_current: str | None
    migration_head: str
    detail: str | None


class TokenOut(ApiModel):
    access_token: str
    token_type: Literal["bearer"]
    expires_in: int = Field(description="Seconds until the token expires")
