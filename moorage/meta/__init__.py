"""The metadata store: the single source of truth for repositories, tags, manifests, the tag
policy, pins and uploads. ``protocols`` says what a store does, one protocol per concern;
``tag_changes`` holds the rules of guarded tag changes once; ``sqlite`` and ``postgres`` are
the backends (docs/ARCHITECTURE.md, "The metadata store")."""
