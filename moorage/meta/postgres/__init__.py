"""PostgreSQL metadata backend: one database shared by every stateless replica
(``PostgresMetadata``).

Same semantics as the SQLite backend (``tests/meta`` runs against both); what differs is how
atomicity is kept when many processes on many hosts write at once: advisory locks taken with
``BEGIN`` (``tag_port.py`` says which), retries of transactions that deadlock, one round trip
per read, lookups coalesced (``database.py``).

The store is assembled from one mixin per concern (``blobs.py``, ``manifests.py``,
``history.py``, ``policy.py``, ``pins.py``, ``uploads.py``, ``collection.py``: garbage
collection and the cluster inventory; ``usage.py``: usage per repository) over one shared
base, ``database.Database`` (the pool, transactions, locks, retries, coalescing). Mixins rather
than composition: the store's surface is the flat ``MetadataStore`` protocol, and each
concern's methods are that surface directly, with no layer of forwarding methods; a concern
sees only the base's plumbing, never another concern.

The guarded tag changes are the backend-neutral core's (``moorage.meta.tag_changes``);
``tag_port.py`` holds this backend's SQL and locks for them. ``schema.py`` holds the
versioned migrations (``moorage migrate``), ``pool.py`` the connection pool.
"""

from __future__ import annotations

from moorage.meta.postgres.blobs import Blobs
from moorage.meta.postgres.collection import Collection
from moorage.meta.postgres.database import lock_key
from moorage.meta.postgres.history import History
from moorage.meta.postgres.manifests import Manifests
from moorage.meta.postgres.pins import Pins
from moorage.meta.postgres.policy import Policy
from moorage.meta.postgres.uploads import Uploads
from moorage.meta.postgres.usage import Usage

__all__ = ["PostgresMetadata", "lock_key"]


class PostgresMetadata(Blobs, Manifests, History, Policy, Pins, Uploads, Collection, Usage):
    """The metadata store in a PostgreSQL database, shared by every replica.

    ``clock`` gives the time of everything the store writes (tag events, policy changes,
    creation times) and decides which upload leases have run out.
    """
