from __future__ import annotations

import hashlib
import os

import pytest

from moorage.hashing import new_hasher, restore_hasher


@pytest.mark.parametrize("algorithm", ["sha256", "sha512"])
def test_saved_state_resumes_to_the_same_digest(algorithm: str) -> None:
    parts = [os.urandom(n) for n in (0, 1, 63, 64, 65, 100_000, 7)]
    hasher = new_hasher(algorithm)
    for part in parts:
        state = hasher.state()
        resumed = restore_hasher(algorithm, state)
        assert resumed is not None
        resumed.update(part)
        hasher = resumed
    assert hasher.hexdigest() == hashlib.new(algorithm, b"".join(parts)).hexdigest()


def test_hexdigest_does_not_finalise() -> None:
    hasher = new_hasher("sha256")
    hasher.update(b"abc")
    assert hasher.hexdigest() == hashlib.sha256(b"abc").hexdigest()
    hasher.update(b"def")
    assert hasher.hexdigest() == hashlib.sha256(b"abcdef").hexdigest()


@pytest.mark.parametrize(
    "state",
    [None, b"", b"garbage", b"big-1:sha256:" + bytes(112), b"little-8:sha512:" + bytes(112)],
)
def test_unusable_states_are_refused(state: bytes | None) -> None:
    assert restore_hasher("sha256", state) is None
