"""The ``[auth]`` settings: who may use the registry API."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class AuthSettings:
    #: htpasswd file with bcrypt entries; enables HTTP basic auth when set.
    htpasswd: Path | None = None
    #: With auth enabled, let anonymous clients pull.
    anonymous_pull: bool = False
    #: With auth enabled, the users who may change the tag policy.
    admins: tuple[str, ...] = ()
