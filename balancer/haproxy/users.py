"""The site's users file: ``name:hash`` a line, the crypt(3) hashes HAProxy's ``userlist`` understands."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from balancer.config.basics import ClusterConfigError

# crypt(3) hashes HAProxy's userlist understands: SHA-256, SHA-512, yescrypt, bcrypt.
_HASH_PATTERN = re.compile(r"^\$(5|6|y|2[aby])\$\S+$")
_USER_PATTERN = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")


@dataclass(frozen=True)
class User:
    """One HTTP basic auth user with a crypt(3) password hash."""

    name: str
    password_hash: str


def read_users_file(path: Path) -> list[User]:
    """Parse a users file: ``name:hash`` a line (``openssl passwd -6``), ``#`` comments allowed."""
    users = []
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, password_hash = line.partition(":")
        if not sep or not _USER_PATTERN.match(name) or not _HASH_PATTERN.match(password_hash):
            raise ClusterConfigError(
                f"users_file {path} line {number}: expected 'name:hash' with a crypt hash "
                "($5$, $6$, $y$ or $2b$; e.g. from 'openssl passwd -6')"
            )
        users.append(User(name, password_hash))
    if not users:
        raise ClusterConfigError(f"users_file {path}: no users")
    return users
