"""Device and service broker credentials in Mosquitto's own hash format.

Mosquitto 2 reads `$7$<iterations>$<salt b64>$<PBKDF2-SHA512 b64>` from its password file, so the
database stores exactly that and never the password. Passwords are 32 random URL-safe characters
(~190 bits), which is why Mosquitto's customary iteration count is enough here.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets

ITERATIONS = 101
SALT_BYTES = 12


def new_password() -> str:
    return secrets.token_urlsafe(24)


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = ITERATIONS) -> str:
    salt = salt if salt is not None else secrets.token_bytes(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, stored: str) -> bool:
    try:
        _, kind, iterations, salt_b64, digest_b64 = stored.split("$")
    except ValueError:
        return False
    if kind != "7":
        return False
    salt = base64.b64decode(salt_b64)
    expected = hash_password(password, salt=salt, iterations=int(iterations))
    return hmac.compare_digest(expected.split("$")[-1], digest_b64)
