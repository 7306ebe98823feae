"""HTTP basic auth against an htpasswd file of bcrypt hashes, with optional anonymous pull.

bcrypt is slow by design, so a verified ``Authorization`` header is remembered (by its SHA-256)
for a minute; the file is re-read when it changes on disk.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import os
import time
from pathlib import Path
from typing import Literal

import bcrypt

from moorage.documents import DocumentError
from moorage.errors import ErrorCode, RegistryError

Action = Literal["pull", "push", "delete", "admin"]

REALM = "moorage"
_CACHE_SECONDS = 60.0
_CACHE_MAX = 4096
_EMPTY_CREDENTIALS = "Basic " + base64.b64encode(b":").decode()


def load_htpasswd(path: Path) -> dict[str, bytes]:
    """The users and bcrypt hashes of an htpasswd file; ``DocumentError`` names the line at
    fault, ``OSError`` when it cannot be read."""
    source = f"htpasswd file {path}"
    users: dict[str, bytes] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        user, sep, hashed = line.partition(":")
        if not sep or not user:
            raise DocumentError(source, f"line {number}", "expected user:hash")
        if not hashed.startswith(("$2y$", "$2b$", "$2a$")):
            raise DocumentError(
                source, f"line {number}", "only bcrypt hashes are supported (htpasswd -B)"
            )
        users[user] = hashed.encode()
    return users


class Authenticator:
    def __init__(
        self, htpasswd: Path | None, anonymous_pull: bool, admins: frozenset[str] = frozenset()
    ) -> None:
        self.htpasswd = htpasswd
        self.anonymous_pull = anonymous_pull
        self.admins = admins
        self._users: dict[str, bytes] = {}
        self._mtime: float | None = None
        self._verified: dict[bytes, tuple[str, float]] = {}
        if htpasswd is not None:
            self._reload()

    @property
    def enabled(self) -> bool:
        return self.htpasswd is not None

    def _reload(self) -> None:
        assert self.htpasswd is not None
        mtime = os.stat(self.htpasswd).st_mtime
        if mtime != self._mtime:
            self._users = load_htpasswd(self.htpasswd)
            self._mtime = mtime
            self._verified.clear()

    @staticmethod
    def challenge(message: str = "authentication required") -> RegistryError:
        return RegistryError(
            ErrorCode.UNAUTHORIZED,
            message,
            headers={"WWW-Authenticate": f'Basic realm="{REALM}", charset="UTF-8"'},
        )

    async def authenticate(
        self, header: str | None, action: Action, *, probe: bool = False
    ) -> str | None:
        """The user name, None for an allowed anonymous request; UNAUTHORIZED otherwise.

        ``probe`` marks ``GET /v2/``: clients decide from its answer whether to send
        credentials at all, so it challenges every request that brings none, even when
        anonymous pulls are allowed. Clients without credentials then send empty basic
        credentials (``Basic Og==``), which count as anonymous.
        """
        if self.htpasswd is None:
            return None
        if header is None and probe:
            raise self.challenge()
        if header is None or header.strip() == _EMPTY_CREDENTIALS:
            if action == "pull" and self.anonymous_pull:
                return None
            raise self.challenge()
        key = hashlib.sha256(header.encode()).digest()
        now = time.monotonic()
        cached = self._verified.get(key)
        if cached is not None and cached[1] > now:
            user = cached[0]
        else:
            user = await self._verify(header)
            if len(self._verified) >= _CACHE_MAX:
                self._verified.clear()
            self._verified[key] = (user, now + _CACHE_SECONDS)
        if action == "admin" and user not in self.admins:
            raise RegistryError(
                ErrorCode.DENIED, f"user {user!r} is not an administrator (auth.admins)"
            )
        return user

    async def _verify(self, header: str) -> str:
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "basic":
            raise self.challenge("only basic authentication is supported")
        try:
            decoded = base64.b64decode(value.strip(), validate=True).decode()
        except (binascii.Error, UnicodeDecodeError):
            raise self.challenge("malformed basic credentials") from None
        user, sep, password = decoded.partition(":")
        if not sep:
            raise self.challenge("malformed basic credentials")
        await asyncio.to_thread(self._reload)
        hashed = self._users.get(user)
        ok = hashed is not None and await asyncio.to_thread(
            bcrypt.checkpw, password.encode(), hashed
        )
        if not ok:
            raise self.challenge("invalid username or password")
        return user
