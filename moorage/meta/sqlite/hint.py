"""A hint, shared by the processes of one SQLite database, that the stored policy changed.

Each admission review (the validating webhook) and policy request asks for the policy's
version, and reading it from the database is a query on the event loop; tag writes check it
inside their transaction instead. The hint is an 8-byte file next to the database, mapped
into each process: a policy change writes its new version there inside its transaction, before the
commit. A process trusts the version it cached only while the hint equals it. Any other value
(a change in flight, one that rolled back, a torn read) sends it to the database, and it
caches what it read only when the hint agrees. So a committed change is seen by the next read
of every process, and a wrong hint can only cost a query, never hide a change.
"""

from __future__ import annotations

import mmap
import os
import struct
from pathlib import Path

_FORMAT = "<q"
_SIZE = struct.calcsize(_FORMAT)


class VersionHint:
    def __init__(self, path: Path) -> None:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            if os.fstat(fd).st_size < _SIZE:
                os.ftruncate(fd, _SIZE)  # zero-filled; idempotent if processes race
            self._map = mmap.mmap(fd, _SIZE)
        finally:
            os.close(fd)

    def read(self) -> int:
        value: int = struct.unpack_from(_FORMAT, self._map)[0]
        return value

    def publish(self, version: int) -> None:
        struct.pack_into(_FORMAT, self._map, 0, version)

    def close(self) -> None:
        self._map.close()
