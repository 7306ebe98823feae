"""SQLite metadata backend: the embedded default (``SQLiteMetadata``).

The store is assembled from one mixin per concern (``blobs.py``, ``manifests.py``,
``history.py``, ``policy.py``, ``pins.py``, ``uploads.py``, ``collection.py``: garbage
collection and the cluster inventory; ``usage.py``: usage per repository) over one shared base,
``database.Database``, which holds the connections, the group-commit writer (``writer.py``)
and the repository ids. Mixins rather than composition: the store's surface is the flat
``MetadataStore`` protocol, and each concern's methods are that surface directly, with no
layer of forwarding methods; a concern sees only the base's plumbing, never another concern.

The guarded tag changes are the backend-neutral core's (``moorage.meta.tag_changes``);
``tag_port.py`` is this backend's SQL for them, which the writer thread drives. The schema
and its migrations are in ``schema.py``; the policy version hint shared by the processes in
``hint.py``.
"""

from __future__ import annotations

from moorage.meta.sqlite.blobs import Blobs
from moorage.meta.sqlite.collection import Collection
from moorage.meta.sqlite.database import connect
from moorage.meta.sqlite.history import History
from moorage.meta.sqlite.manifests import Manifests
from moorage.meta.sqlite.pins import Pins
from moorage.meta.sqlite.policy import Policy
from moorage.meta.sqlite.uploads import Uploads
from moorage.meta.sqlite.usage import Usage

__all__ = ["SQLiteMetadata", "connect"]


class SQLiteMetadata(Blobs, Manifests, History, Policy, Pins, Uploads, Collection, Usage):
    """The metadata store in one SQLite file, shared by the worker processes of one host.

    ``clock`` gives the time of everything the store writes (tag events, policy changes,
    creation times) and decides which upload leases have run out.
    """
