"""API key format and hashing.

A key reads `sk-sluice-<id><secret>`: an 8-character id (the lookup, shown in listings as the prefix) and a
40-character secret (~238 bits). Only HMAC-SHA256(salt, key) with a random per-key salt is stored: with that much
entropy a fast keyed hash is not brute-forceable, and it keeps authentication at a few microseconds."""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from dataclasses import dataclass

KEY_PREFIX = "sk-sluice-"
ID_LENGTH = 8
SECRET_LENGTH = 40
_ALPHABET = string.ascii_letters + string.digits


@dataclass(frozen=True, slots=True)
class NewKey:
    id: str
    plaintext: str  # shown once, never stored
    salt: str
    secret_hash: str

    @property
    def prefix(self) -> str:
        return KEY_PREFIX + self.id


def _random(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def hash_key(plaintext: str, salt: str) -> str:
    return hmac.new(bytes.fromhex(salt), plaintext.encode(), hashlib.sha256).hexdigest()


def generate_key() -> NewKey:
    key_id = _random(ID_LENGTH)
    plaintext = KEY_PREFIX + key_id + _random(SECRET_LENGTH)
    salt = secrets.token_hex(16)
    return NewKey(key_id, plaintext, salt, hash_key(plaintext, salt))


def key_id_of(plaintext: str) -> str | None:
    """The id part of a well-formed key, else None (malformed keys are rejected without a lookup)."""
    if not plaintext.startswith(KEY_PREFIX) or len(plaintext) != len(KEY_PREFIX) + ID_LENGTH + SECRET_LENGTH:
        return None
    body = plaintext[len(KEY_PREFIX):]
    if not all(c in _ALPHABET for c in body):
        return None
    return body[:ID_LENGTH]


def matches(plaintext: str, salt: str, secret_hash: str) -> bool:
    return hmac.compare_digest(hash_key(plaintext, salt), secret_hash)
