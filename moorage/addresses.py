"""Listen addresses as users write them: ``HOST:PORT``, with IPv6 hosts in brackets."""

from __future__ import annotations

from moorage.documents import Invalid


def split_address(address: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:5000`` for IPv6) as (host, port); ``Invalid`` otherwise."""
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise Invalid(f"expected HOST:PORT, not {address!r}")
    return host.strip("[]"), int(port)
