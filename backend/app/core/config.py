"""The API's checks on its own settings (which come from ``src.config.settings`` only)."""

from __future__ import annotations

import ipaddress

from backend.app.core.security import MIN_SECRET_LENGTH, is_password_hash
from src.config.settings import Settings
from src.config.system_groups import ApiConfig
from src.exceptions import ConfigurationError


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def has_credentials(api: ApiConfig) -> bool:
    return bool(api.api_key and api.api_key.get_secret_value()) or bool(
        api.jwt_secret and api.jwt_secret.get_secret_value()
    )


def check_api_settings(settings: Settings) -> list[str]:
    """Raise ``ConfigurationError`` for settings the API must not start with; return warnings for weak ones."""
    api = settings.api
    if not is_loopback(api.host) and not has_credentials(api):
        raise ConfigurationError(
            f"API_HOST={api.host} is not a loopback address: set API_KEY or API_JWT_SECRET "
            "(at least 32 random characters), or bind to 127.0.0.1"
        )
    if api.admin_password_hash and not is_password_hash(api.admin_password_hash.get_secret_value()):
        raise ConfigurationError(
            "API_ADMIN_PASSWORD_HASH: expected the output of `python -m backend.app.core.security hash`"
        )
    warnings = []
    for name, secret in (("API_KEY", api.api_key), ("API_JWT_SECRET", api.jwt_secret)):
        if secret and 0 < len(secret.get_secret_value()) < MIN_SECRET_LENGTH:
            warnings.append(f"{name} is shorter than {MIN_SECRET_LENGTH} characters; use a long random value")
    if not has_credentials(api):
        warnings.append("neither API_KEY nor API_JWT_SECRET is set: every authenticated endpoint answers 401")
    if api.admin_password_hash and not api.jwt_secret:
        warnings.append("API_ADMIN_PASSWORD_HASH is set but API_JWT_SECRET is not: password login is disabled")
    return warnings
