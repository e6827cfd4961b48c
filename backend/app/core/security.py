"""Password hashing (stdlib scrypt), JWT bearer tokens (PyJWT, HS256) and constant-time key checks.

Make ``API_ADMIN_PASSWORD_HASH`` with ``python -m backend.app.core.security hash`` (reads the password
without echo, or from stdin when piped).
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import secrets
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import jwt

SCRYPT_N = 2**14
SCRYPT_R = 8
SCRYPT_P = 1
_PREFIX = "scrypt"
JWT_ALGORITHM = "HS256"
MIN_SECRET_LENGTH = 32


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt$hash``: self-describing, so the cost can be raised later without breaking old hashes."""
    if not password:
        raise ValueError("password must not be empty")
    salt = secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"{_PREFIX}${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    try:
        prefix, n, r, p, salt, expected = stored.split("$")
        if prefix != _PREFIX:
            return False
        expected_bytes = _unb64(expected)
        digest = hashlib.scrypt(
            password.encode(),
            salt=_unb64(salt),
            n=int(n),
            r=int(r),
            p=int(p),
            dklen=len(expected_bytes),
            maxmem=256 * 1024 * 1024,
        )
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(digest, expected_bytes)


def is_password_hash(stored: str) -> bool:
    parts = stored.split("$")
    return len(parts) == 6 and parts[0] == _PREFIX and all(parts[1:])


def constant_time_equals(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


@dataclass(frozen=True, slots=True)
class IssuedToken:
    token: str
    expires_in: int


def create_access_token(subject: str, secret: str, expire_minutes: int, now: datetime | None = None) -> IssuedToken:
    issued = now or datetime.now(UTC)
    expires = issued + timedelta(minutes=expire_minutes)
    payload = {"sub": subject, "iat": issued, "exp": expires, "jti": secrets.token_hex(8)}
    return IssuedToken(jwt.encode(payload, secret, algorithm=JWT_ALGORITHM), expire_minutes * 60)


class InvalidToken(Exception):
    """The bearer token is malformed, has a bad signature, or has expired (the message says which)."""


def decode_access_token(token: str, secret: str) -> str:
    """The token's subject; raises ``InvalidToken``. Only HS256 is accepted (no ``alg: none`` downgrade)."""
    try:
        payload = jwt.decode(token, secret, algorithms=[JWT_ALGORITHM], options={"require": ["exp", "sub"]})
    except jwt.ExpiredSignatureError as exc:
        raise InvalidToken("token expired") from exc
    except jwt.InvalidTokenError as exc:
        raise InvalidToken("invalid token") from exc
    subject = payload.get("sub")
    if not isinstance(subject, str) or not subject:
        raise InvalidToken("invalid token")
    return subject


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Password: ")
        if first != getpass.getpass("Again: "):
            raise SystemExit("passwords differ")
        return first
    return sys.stdin.readline().rstrip("\n")


def main(argv: list[str]) -> int:
    if argv != ["hash"]:
        print("usage: python -m backend.app.core.security hash   (prints a value for API_ADMIN_PASSWORD_HASH)")
        return 2
    password = _read_password()
    if len(password) < 12:
        print("refusing a password shorter than 12 characters", file=sys.stderr)
        return 1
    print(hash_password(password))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
