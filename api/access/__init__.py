"""Who is calling and what they may see: passwords (argon2), tokens, roles, scopes and the audit log.

A resident outside the caller's scope does not exist for them (404, never 403): the API does not
even confirm that such a resident is registered. A role or a key that may not do something at all
gets 403.

One module per job: `errors` (AccessError), `passwords`, `tokens`, `principals` (token → caller),
`scopes` (what a platform's key may read), `login_limits` (failed-login rate limits), `sessions`
(login), `users` (people's logins), `audit_log`. Platforms' keys are made in api/platforms.py.

This package is the public face: callers write `from api.access import Principal, audit` or
`access.login(...)`, as before the split, and the names below are that face. The modules import
each other directly, never through this file.
"""

from api.access.audit_log import audit, record
from api.access.errors import AccessError
from api.access.login_limits import (
    ACCOUNT_SLOWDOWN_AFTER,
    ADDRESS_MAX_FAILURES,
    LOGIN_MAX_FAILURES,
    LOGIN_WINDOW,
    LOGIN_WINDOW_S,
    SLOWED_MAX_FAILURES,
    release_attempt,
    reserve_attempt,
)
from api.access.passwords import hash_password, verify_password
from api.access.principals import Principal, authenticate
from api.access.scopes import PLATFORM_SCOPES, check_scopes, required_scopes
from api.access.sessions import SESSION_LIFETIME, login
from api.access.tokens import new_token, token_hash
from api.access.users import ROLES, add_user

__all__ = [
    "ACCOUNT_SLOWDOWN_AFTER",
    "ADDRESS_MAX_FAILURES",
    "LOGIN_MAX_FAILURES",
    "LOGIN_WINDOW",
    "LOGIN_WINDOW_S",
    "PLATFORM_SCOPES",
    "ROLES",
    "SESSION_LIFETIME",
    "SLOWED_MAX_FAILURES",
    "AccessError",
    "Principal",
    "add_user",
    "audit",
    "authenticate",
    "check_scopes",
    "hash_password",
    "login",
    "new_token",
    "record",
    "release_attempt",
    "required_scopes",
    "reserve_attempt",
    "token_hash",
    "verify_password",
]
