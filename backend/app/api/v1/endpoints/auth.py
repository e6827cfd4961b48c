"""OAuth2 password flow for the configured admin user: a short-lived JWT bearer token."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, status
from fastapi.security import OAuth2PasswordRequestForm

from backend.app.api.deps import BODY_RESPONSES, SettingsDep
from backend.app.core.security import constant_time_equals, create_access_token, hash_password, verify_password
from backend.app.schemas.common import ErrorResponse
from backend.app.schemas.system import TokenOut
from src.utils.logger import get_logger

log = get_logger(__name__)
router = APIRouter(prefix="/auth", tags=["auth"])

# Verified when the user name is wrong, so a wrong name costs the same time as a wrong password.
_DUMMY_HASH = hash_password("not-the-password")
_TOKEN_RESPONSES: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "Wrong user name or password"},
    429: {"description": "Rate limit exceeded; see Retry-After"},
    503: {"model": ErrorResponse, "description": "Password login is not configured"},
}


@router.post(
    "/token",
    response_model=TokenOut,
    responses=_TOKEN_RESPONSES | BODY_RESPONSES,
    summary="Exchange the admin user name and password for a bearer token",
)
async def issue_token(settings: SettingsDep, form: Annotated[OAuth2PasswordRequestForm, Depends()]) -> TokenOut:
    api = settings.api
    if not (api.jwt_secret and api.admin_password_hash):
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            detail="password login is not configured (set API_JWT_SECRET and API_ADMIN_PASSWORD_HASH)",
        )
    name_ok = constant_time_equals(form.username, api.admin_username)
    stored = api.admin_password_hash.get_secret_value() if name_ok else _DUMMY_HASH
    password_ok = await asyncio.to_thread(verify_password, form.password, stored)
    if not (name_ok and password_ok):
        log.warning("auth.login_failed")
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, detail="wrong user name or password", headers={"WWW-Authenticate": "Bearer"}
        )
    issued = create_access_token(api.admin_username, api.jwt_secret.get_secret_value(), api.jwt_expire_minutes)
    log.info("auth.login", user=api.admin_username)
    return TokenOut(access_token=issued.token, token_type="bearer", expires_in=issued.expires_in)
