"""Collection names: the user's (letters, digits, '-', '_', '.') outside, Milvus-safe physical names inside.

Milvus allows only letters, digits and '_' in a collection name. A name that already fits the older rule (a letter,
then letters, digits or '_') keeps its physical name `sluice_<name>`, so collections written before keep working;
any other name is stored as `sluicex_<hex of its UTF-8 bytes>`. The two prefixes never collide, and both map back.
"""

from __future__ import annotations

import re

NAME_RULE = "1 to 64 letters, digits, '-', '_' or '.', starting with a letter or digit"
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_LEGACY = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,62}$")
PLAIN_PREFIX = "sluice_"
ENCODED_PREFIX = "sluicex_"


class InvalidCollectionName(ValueError):
    pass


def is_valid_name(name: str) -> bool:
    return bool(NAME_PATTERN.fullmatch(name or ""))  # fullmatch: `$` alone lets a trailing newline in


def check_name(name: str) -> str:
    if not is_valid_name(name):
        raise InvalidCollectionName(f"invalid collection name {name!r}: use {NAME_RULE}")
    return name


def physical_name(name: str) -> str:
    check_name(name)
    if _LEGACY.fullmatch(name):
        return PLAIN_PREFIX + name
    return ENCODED_PREFIX + name.encode().hex()


def user_name(physical: str) -> str | None:
    """The user's name for a physical collection, or None for a collection that is not one of ours."""
    if physical.startswith(ENCODED_PREFIX):
        try:
            name = bytes.fromhex(physical[len(ENCODED_PREFIX):]).decode()
        except ValueError:
            return None
    elif physical.startswith(PLAIN_PREFIX):
        name = physical[len(PLAIN_PREFIX):]
    else:
        return None
    return name if is_valid_name(name) and physical_name(name) == physical else None
