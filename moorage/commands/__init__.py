"""Sub-commands of the ``moorage`` CLI that talk to a running registry."""
