"""The API tests run against the real app in-process (``tests.support.app``): ``env`` over
every storage driver, ``fs_env`` on the filesystem, ``make_env`` for other settings,
``secured`` behind basic auth."""

from __future__ import annotations

from tests.support.app import client, env, fs_env, make_env, secured

__all__ = ["client", "env", "fs_env", "make_env", "secured"]
