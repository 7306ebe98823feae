"""Resumable SHA-256/SHA-512 whose state can be saved between requests and processes.

A chunked upload's PATCH requests may land on different worker processes or replicas, and
``hashlib`` objects cannot be serialised. OpenSSL's low-level ``SHA256_*``/``SHA512_*`` API
keeps its whole state in a plain struct, so we drive it through ``ctypes`` and store the
struct's bytes with the upload. The state is tagged with the platform it came from; a state
that cannot be restored (other architecture, no libcrypto) is simply ``None``, and the upload
service then re-hashes the stored bytes instead. Both paths give the same digest.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import hashlib
import struct
import sys
from dataclasses import dataclass
from typing import Any, Protocol


class Hasher(Protocol):
    algorithm: str

    def update(self, data: bytes | bytearray | memoryview) -> None: ...

    def hexdigest(self) -> str: ...

    def state(self) -> bytes | None: ...


@dataclass(frozen=True)
class _Spec:
    ctx_size: int
    digest_size: int
    init: str
    update: str
    final: str


_SPECS = {
    "sha256": _Spec(112, 32, "SHA256_Init", "SHA256_Update", "SHA256_Final"),
    "sha512": _Spec(216, 64, "SHA512_Init", "SHA512_Update", "SHA512_Final"),
}

# Identifies where a saved state can be restored: struct layouts are native-endian.
_PLATFORM_TAG = f"{sys.byteorder}-{struct.calcsize('P')}".encode()


def _load_libcrypto() -> Any:
    name = ctypes.util.find_library("crypto")
    if name is None:
        return None
    try:
        lib = ctypes.CDLL(name)
        for spec in _SPECS.values():
            for fn in (spec.init, spec.update, spec.final):
                getattr(lib, fn)
    except (OSError, AttributeError):
        return None
    for spec in _SPECS.values():
        getattr(lib, spec.update).argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t]
    return lib


_LIB = _load_libcrypto()


class _OpenSSLHasher:
    __slots__ = ("_ctx", "_spec", "algorithm")

    def __init__(self, algorithm: str, state: bytes | None = None) -> None:
        self.algorithm = algorithm
        self._spec = _SPECS[algorithm]
        self._ctx = ctypes.create_string_buffer(self._spec.ctx_size)
        if state is None:
            getattr(_LIB, self._spec.init)(self._ctx)
        else:
            ctypes.memmove(self._ctx, state, self._spec.ctx_size)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        if not isinstance(data, bytes):
            data = bytes(data)
        getattr(_LIB, self._spec.update)(self._ctx, data, len(data))

    def hexdigest(self) -> str:
        ctx = ctypes.create_string_buffer(self._ctx.raw, self._spec.ctx_size)
        out = ctypes.create_string_buffer(self._spec.digest_size)
        getattr(_LIB, self._spec.final)(out, ctx)
        return out.raw.hex()

    def state(self) -> bytes | None:
        return _PLATFORM_TAG + b":" + self.algorithm.encode() + b":" + self._ctx.raw


class _HashlibHasher:
    """Fallback when libcrypto's low-level API is unavailable: correct, but not resumable."""

    __slots__ = ("_h", "algorithm")

    def __init__(self, algorithm: str) -> None:
        self.algorithm = algorithm
        self._h = hashlib.new(algorithm)

    def update(self, data: bytes | bytearray | memoryview) -> None:
        self._h.update(data)

    def hexdigest(self) -> str:
        return self._h.hexdigest()

    def state(self) -> bytes | None:
        return None


def new_hasher(algorithm: str) -> Hasher:
    if algorithm not in _SPECS:
        raise ValueError(f"unsupported algorithm {algorithm}")
    if _LIB is None:
        return _HashlibHasher(algorithm)
    return _OpenSSLHasher(algorithm)


def restore_hasher(algorithm: str, state: bytes | None) -> Hasher | None:
    """Rebuild a hasher from :meth:`Hasher.state`; ``None`` if this process cannot use it."""
    if state is None or _LIB is None:
        return None
    try:
        platform, algo, raw = state.split(b":", 2)
    except ValueError:
        return None
    spec = _SPECS.get(algorithm)
    if (
        spec is None
        or platform != _PLATFORM_TAG
        or algo.decode() != algorithm
        or len(raw) != spec.ctx_size
    ):
        return None
    return _OpenSSLHasher(algorithm, raw)
