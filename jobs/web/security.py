"""Passwords (argon2), API tokens (sha256 of 32 random bytes, shown once), roles and their rights, CSRF tokens.

Rights of each role (issue 14): ``ops`` runs, previews, pauses/resumes campaigns and activates models; ``crm``
reads runs' target lists (download) and explains customers; ``analyst`` reads A/B reports; ``admin`` manages
users and tokens and reads the audit log. Every signed-in user, whatever the role, reads the non-personal
overview: campaigns, run manifests (counts only), the model registry and the jobs history.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from recommender.errors import UserError

ROLES = ("ops", "crm", "analyst", "admin")

# right -> roles holding it; "view" is every role
RIGHTS: dict[str, frozenset[str]] = {
    "view": frozenset(ROLES),
    "run": frozenset({"ops"}),  # preview, run now for a fire time
    "pause": frozenset({"ops"}),
    "activate": frozenset({"ops"}),
    "targets": frozenset({"crm"}),  # target / control list downloads
    "customers": frozenset({"crm"}),  # explain, customer lookup
    "reports": frozenset({"analyst"}),
    "admin": frozenset({"admin"}),  # users, tokens, audit log
}

TOKEN_PREFIX = "mktg_"
USERNAME = re.compile(r"^[A-Za-z0-9_.@-]{1,64}$")

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    if len(password) < 8:
        raise UserError("password: at least 8 characters")
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


# Verified against when the user does not exist, so a wrong user name takes as long as a wrong password.
DUMMY_HASH = _hasher.hash("not a password of anyone")


def parse_roles(text: str) -> tuple[str, ...]:
    """``"ops,crm"`` -> ("ops", "crm"); an unknown role is a one-line error naming the known ones."""
    roles = tuple(dict.fromkeys(r.strip() for r in text.split(",") if r.strip()))
    unknown = [r for r in roles if r not in ROLES]
    if not roles or unknown:
        raise UserError(f"roles: {', '.join(unknown) or '(none)'} not known; choose from {', '.join(ROLES)}")
    return roles


def new_token() -> tuple[str, str]:
    """A new API token: (secret shown once, sha256 hex stored)."""
    secret = TOKEN_PREFIX + secrets.token_urlsafe(32)
    return secret, token_hash(secret)


def token_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Principal:
    """Who is asking: a user signed in to the console or a system with one of the user's API tokens."""

    username: str
    roles: tuple[str, ...]
    via: str  # "session" | "token"

    def can(self, right: str) -> bool:
        return bool(RIGHTS[right].intersection(self.roles))


def new_csrf_token() -> str:
    return secrets.token_urlsafe(32)


def csrf_matches(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and hmac.compare_digest(str(expected), str(given))
